//! One task, from a delivered entry to its answer: validated (else dead-lettered), checked
//! for a replay (signed tasks) and for an earlier completion (answered from its record), then
//! run under a lease — an agent turn, or a workflow run submitted and acknowledged at once —
//! and answered on its reply stream in the batch that acks its entry.

use std::time::Duration;
use troupe_runtime::retry::Transient as _;

use troupe_agents::conversations::Ask;
use troupe_agents::thread::TurnStatus;
use troupe_runtime::metrics::metrics;
use troupe_runtime::store::{StreamEntry, Trim, Write};
use troupe_workflow::journal::{task_run_id, Reply};
use troupe_workflow::{Submit, TaskRun};

use super::wire::{self, done_key, ErrorBody, ErrorKind, Status, TaskResult};
use super::{labels, DeadLetter, Shared, Target, Task};

/// Store key of the lease held while a task runs.
fn running_key(group: &str, id: &str) -> String {
    format!("ingress:running:{group}:{id}")
}

/// Store key recording the first entry of a signed task id until the task expires: a
/// second entry with the same id is a replay.
fn nonce_key(group: &str, id: &str) -> String {
    format!("ingress:nonce:{group}:{id}")
}

impl Shared {
    /// Writes the dead letter and acks the entry in one batch.
    pub(super) async fn dead_letter(
        &self,
        entry: &StreamEntry,
        task: Option<&Task>,
        kind: ErrorKind,
        reason: String,
        deliveries: u64,
    ) {
        let s = &self.settings;
        let (target, name) = task.map_or(("none", ""), labels);
        metrics().task(target, name, "dead_lettered");
        tracing::warn!(entry = %entry.id, %kind, %reason, deliveries, "ingress dead-letters an entry");
        let letter = DeadLetter::new(entry, s.max_entry_bytes, kind, reason, deliveries);
        let json = match serde_json::to_vec(&letter) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode a dead letter");
                return;
            }
        };
        let writes = vec![
            Write::XAdd {
                stream: s.dead.clone(),
                fields: vec![(wire::DEAD_FIELD.as_bytes().to_vec(), json)],
                trim: Some(Trim::MaxLen(s.max_len)),
            },
            Write::XAck {
                stream: s.stream.clone(),
                group: s.group.clone(),
                ids: vec![entry.id.clone()],
            },
        ];
        if let Err(err) = self.store.apply(writes).await {
            // Still pending: delivered again later, dead-lettered then.
            tracing::warn!(error = %err, "ingress could not write a dead letter; left pending");
        }
    }

    /// Whether `entry` is the first entry of its signed task id (or a redelivery of it), as
    /// recorded under the id's nonce key until the task expires. `None`: the store failed
    /// (the entry is left pending).
    async fn first_entry(&self, entry: &str, task: &Task, expires_in: Duration) -> Option<bool> {
        let key = nonce_key(&task.group, &task.id);
        let ttl = expires_in + Duration::from_secs(1);
        match self.store.set_nx(&key, entry.as_bytes(), Some(ttl)).await {
            Ok(true) => Some(true),
            Ok(false) => match self.store.get(&key).await {
                Ok(first) => Some(first.as_deref() == Some(entry.as_bytes())),
                Err(err) => {
                    tracing::warn!(error = %err, "ingress cannot read a task's nonce; left pending");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot record a task's nonce; left pending");
                None
            }
        }
    }

    /// Runs one task (or answers it from its stored result), then writes its result and acks
    /// its entry in one batch. A signed task (`expires_in` set) is first checked for replay.
    pub(super) async fn handle(
        &self,
        entry: StreamEntry,
        task: Task,
        expires_in: Option<Duration>,
        deliveries: u64,
    ) {
        if let Some(expires_in) = expires_in {
            match self.first_entry(&entry.id, &task, expires_in).await {
                Some(true) => {}
                Some(false) => {
                    let reason = format!(
                        "unauthenticated: replayed: task id {} of group {:?} was already \
                         published in another entry",
                        wire::quote(&task.id),
                        task.group
                    );
                    self.dead_letter(
                        &entry,
                        Some(&task),
                        ErrorKind::Unauthenticated,
                        reason,
                        deliveries,
                    )
                    .await;
                    return;
                }
                None => return,
            }
        }
        let entry = entry.id;
        let done = done_key(&task.group, &task.id);
        let lease = running_key(&task.group, &task.id);
        let agent = match &task.target {
            Target::Agent(agent) => agent.clone(),
            Target::Workflow(workflow) => {
                // A workflow task needs neither the `done` read nor the running lease: its
                // run is created once per task id, and a delivery of a task whose run has
                // ended finds it ended and is answered from its record.
                let answer = self.run_workflow(&entry, &task, workflow).await;
                self.answer(&entry, &task, answer, done, lease).await;
                return;
            }
        };
        let stored = match self.store.get(&done).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot read the task's record; left pending");
                return;
            }
        };
        if let Some(result) = stored {
            tracing::debug!("task already completed; answering from its stored result");
            self.finish(&entry, &task, result, None, Vec::new()).await;
            return;
        }
        // One owner per attempt: a second delivery of a running task (a duplicate, a reclaim,
        // a restarted consumer) never shares the first attempt's lease.
        let owner = format!("{}:{:016x}", self.consumer, rand::random::<u64>());
        match self
            .store
            .acquire_lease(&lease, &owner, self.settings.claim_idle)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("task is running elsewhere; left pending");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot take the task's lease; left pending");
                return;
            }
        }
        let outcome = tokio::select! {
            result = self.ask_agent(&task, &agent) => result,
            () = self.keep_claimed(&entry, &lease, &owner) => None,
        };
        if !self
            .answer(&entry, &task, outcome, done, lease.clone())
            .await
        {
            let _ = self.store.release_lease(&lease, &owner).await;
        }
    }

    /// Writes `answer` (see [`finish`](Self::finish); `done` and `lease` are the task's keys)
    /// and counts it. Returns whether the task is answered or acknowledged; `false`: left
    /// pending.
    async fn answer(
        &self,
        entry: &str,
        task: &Task,
        answer: Option<Answer>,
        done: String,
        lease: String,
    ) -> bool {
        let (target, name) = labels(task);
        let (result, with) = match answer {
            Some(Answer::Result(result, with)) => (*result, with),
            Some(Answer::Acked) => {
                metrics().task(target, name, "accepted");
                return true;
            }
            None => return false,
        };
        let outcome = match result.status {
            Status::Ok => "ok",
            Status::Error | Status::Accepted => "error",
        };
        metrics().task(target, name, outcome);
        match serde_json::to_vec(&result) {
            Ok(json) => {
                self.finish(entry, task, json, Some((done, lease)), with)
                    .await
            }
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode a result");
                false
            }
        }
    }

    /// While a task runs: renews its lease and resets its entry's idle time every third of
    /// `claim_idle`, so no other consumer reclaims it however long it runs. Returns (ending
    /// the task, left pending) only if the lease was lost to another owner.
    async fn keep_claimed(&self, entry: &str, lease: &str, owner: &str) {
        let s = &self.settings;
        let every = (s.claim_idle / 3).max(Duration::from_millis(10));
        let ids = [entry.to_owned()];
        loop {
            tokio::time::sleep(every).await;
            match self.store.renew_lease(lease, owner, s.claim_idle).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("task lease taken over by another owner; stopping here");
                    return;
                }
                Err(err) => tracing::debug!(error = %err, "could not renew the task lease"),
            }
            if let Err(err) = self
                .store
                .xclaim_touch(&s.stream, &s.group, &self.consumer, &ids)
                .await
            {
                tracing::debug!(error = %err, "could not refresh the entry's claim");
            }
        }
    }

    /// The name other Redis clients know the store key `key` by.
    pub(super) fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.store.key_prefix())
    }

    /// The writes that add `json` to the task's reply stream: the entry (the stream capped at
    /// `max_len`), then the stream's expiry renewed to `reply_retention` (at most once a
    /// second: [`Write::Renew`]), so a reply stream nobody writes to any more goes away.
    fn reply(&self, task: &Task, json: Vec<u8>) -> Vec<Write> {
        let s = &self.settings;
        vec![
            Write::XAdd {
                stream: task.reply_to.clone(),
                fields: vec![(wire::RESULT_FIELD.as_bytes().to_vec(), json)],
                trim: Some(Trim::MaxLen(s.max_len)),
            },
            Write::Renew {
                key: task.reply_to.clone(),
                ttl: s.reply_retention,
            },
        ]
    }

    /// Writes the notice that a streamed task runs to its reply stream.
    async fn accepted(&self, task: &Task, notice: TaskResult) {
        let json = match serde_json::to_vec(&notice) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode an acceptance");
                return;
            }
        };
        if let Err(err) = self.store.apply(self.reply(task, json)).await {
            tracing::warn!(error = %err, "ingress could not write a task's acceptance");
        }
    }

    /// Writes `result` to the task's reply stream and acks; for a new result also records it
    /// under its `done` key and drops its running lease, all in one batch (the lease is
    /// needless once the result is recorded: a later delivery finds the record first).
    /// `with` (what the turn left to this batch) goes first. Returns whether the batch was
    /// written.
    async fn finish(
        &self,
        entry: &str,
        task: &Task,
        result: Vec<u8>,
        record: Option<(String, String)>,
        with: Vec<Write>,
    ) -> bool {
        let s = &self.settings;
        let mut writes = with;
        writes.extend(self.reply(task, result.clone()));
        if let Some((done, lease)) = record {
            writes.push(Write::Set {
                key: done,
                value: result,
                ttl: Some(s.reply_retention),
            });
            writes.push(Write::Del { key: lease });
        }
        writes.push(Write::XAck {
            stream: s.stream.clone(),
            group: s.group.clone(),
            ids: vec![entry.to_owned()],
        });
        match self.store.apply(writes).await {
            Ok(()) => {
                tracing::debug!(reply_to = %task.reply_to, "task answered");
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "ingress could not write a result; left pending");
                false
            }
        }
    }

    /// Asks `agent` the task's question. `None`: a transient failure; the entry is left
    /// pending.
    async fn ask_agent(&self, task: &Task, agent: &str) -> Option<Answer> {
        let (started, mut start) = tokio::sync::mpsc::unbounded_channel();
        let ask = Ask {
            group: task.group.clone(),
            user: task.user.clone(),
            agent: agent.to_owned(),
            thread: task.thread.clone(),
            input: task.input.clone(),
            stream: task.stream,
            started: task.stream.then_some(started),
        };
        // The acceptance is written before the result: the turn waits for nothing, but
        // the result is written only once both are done.
        let announce = async {
            if let Some(s) = start.recv().await {
                let stream = self.redis_key(&s.stream);
                let notice =
                    TaskResult::accepted(&task.id, &task.group, Some(s.thread), None, Some(stream));
                self.accepted(task, notice).await;
            }
        };
        let (asked, ()) = tokio::join!(self.conversations.ask_deferred(ask), announce);
        let mut with = Vec::new();
        match asked {
            Ok((outcome, writes)) => {
                with = writes;
                tracing::Span::current().record("thread", outcome.thread.as_str());
                let (status, output, error) = match outcome.status {
                    TurnStatus::Completed => (Status::Ok, Some(outcome.answer), None),
                    TurnStatus::AwaitingApproval { approval, .. } => (
                        Status::Error,
                        None,
                        Some(ErrorBody {
                            kind: ErrorKind::AwaitingApproval,
                            message: format!("the turn waits for the approval {approval}"),
                        }),
                    ),
                    TurnStatus::StepLimit => (
                        Status::Error,
                        None,
                        Some(ErrorBody {
                            kind: ErrorKind::StepLimit,
                            message: "the agent hit its max_steps".to_owned(),
                        }),
                    ),
                };
                Some(TaskResult {
                    status,
                    output,
                    thread: Some(outcome.thread),
                    error,
                    usage: Some(outcome.usage),
                    delta_stream: outcome.delta_stream.map(|s| self.redis_key(&s)),
                    ..TaskResult::ok(&task.id, &task.group)
                })
            }
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "task failed transiently; left pending");
                None
            }
            Err(err) => Some(TaskResult::error(
                &task.id,
                &task.group,
                err.kind(),
                err.to_string(),
            )),
        }
        .map(|result| Answer::Result(Box::new(result), with))
    }

    /// Submits the task's run — once per task id, whatever happened to earlier deliveries —
    /// and acknowledges the entry with an `accepted` result naming the run, in the batch that
    /// makes the run adoptable: the task holds no slot while its run goes on. The run's end
    /// writes the final result (and the task's `done` record), on whichever daemon ends it. A
    /// run that had ended already is answered from its record.
    async fn run_workflow(&self, entry: &str, task: &Task, workflow: &str) -> Option<Answer> {
        let router = self.router.as_ref()?;
        let s = &self.settings;
        let run = task_run_id(&task.group, &task.id);
        tracing::Span::current().record("run", run.as_str());
        let notice = TaskResult::accepted(&task.id, &task.group, None, Some(run.clone()), None);
        let json = match serde_json::to_vec(&notice) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode an acceptance");
                return None;
            }
        };
        let mut ack = self.reply(task, json);
        ack.push(Write::XAck {
            stream: s.stream.clone(),
            group: s.group.clone(),
            ids: vec![entry.to_owned()],
        });
        let submit = Submit {
            workflow: workflow.to_owned(),
            group: task.group.clone(),
            user: task.user.clone(),
            input: task.input.clone(),
        };
        let reply = Reply {
            task: task.id.clone(),
            stream: task.reply_to.clone(),
            max_len: s.max_len,
            retention_ms: u64::try_from(s.reply_retention.as_millis()).unwrap_or(u64::MAX),
        };
        match router.submit_task(submit, reply, ack).await {
            Ok(TaskRun::Submitted(_)) => {
                tracing::debug!(reply_to = %task.reply_to, "workflow task accepted");
                Some(Answer::Acked)
            }
            Ok(TaskRun::Ended(record)) => Some(Answer::Result(
                Box::new(TaskResult::of_run(
                    &task.id,
                    &task.group,
                    &record.id,
                    record.status.as_str(),
                    record.output,
                    record.error,
                )),
                Vec::new(),
            )),
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "workflow submit failed; left pending");
                None
            }
            Err(err) => Some(Answer::Result(
                Box::new(TaskResult::error(
                    &task.id,
                    &task.group,
                    ErrorKind::Workflow,
                    err.to_string(),
                )),
                Vec::new(),
            )),
        }
    }
}

/// How a task was answered.
enum Answer {
    /// With this result, to write and ack, after the writes of the turn that answered (a new
    /// thread's first turn leaves them to this batch).
    Result(Box<TaskResult>, Vec<Write>),
    /// Acknowledged already (a workflow task: its run answers when it ends).
    Acked,
}
