//! The calls of steps: one agent call (under the step's limits, in its own thread, in a
//! work pool when the step names one) with its attempts, and a knowledge search.

// The imports of `Exec` (the parent module), shared by its method files.
use super::*;

/// The pause between attempts of a call made by the run itself: 400 ms after the first
/// failure, doubling to at most 6.4 s, without jitter (a run's retries are its own).
const CALL_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(400),
    factor: 2.0,
    max: Duration::from_millis(6_400),
    jitter: Jitter::None,
};

impl Exec {
    /// Searches the run's group's knowledge base with `query`: the passages found, numbered,
    /// then their sources (or a line saying nothing matched).
    pub(super) async fn knowledge(
        &self,
        key: &str,
        namespace: Option<&str>,
        top_k: Option<usize>,
        query: &str,
    ) -> Result<String, WorkflowError> {
        let group = self.record().group;
        let caller = troupe_agents::rag::Caller::new(&group, "workflow", key);
        let mut request = troupe_agents::rag::SearchRequest::text(query);
        request.namespace = namespace.map(str::to_owned);
        request.top_k = top_k;
        let failed = |source| WorkflowError::Knowledge {
            step: key.to_owned(),
            source,
        };
        let hits = self
            .interruptible(self.env.rag.search(&caller, request))
            .await?
            .map_err(failed)?;
        tracing::info!(hits = hits.len(), "knowledge searched");
        Ok(if hits.is_empty() {
            troupe_agents::rag::NO_PASSAGE.to_owned()
        } else {
            troupe_agents::rag::format_hits(&hits)
        })
    }

    /// Asks `agent` with `input` in the call's own thread, with the step's retries, timeout,
    /// pool and limits; journaled under `key`. A step with a pool hands the call to the pool,
    /// whose retry policy then applies (the step's `retries`, when set, are its attempts).
    pub(super) fn call<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        agent: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            self.memo_with(key, async {
                let policy = RetryPolicy {
                    max_attempts: if step.pool.is_some() {
                        1
                    } else {
                        step.retries.unwrap_or(0).saturating_add(1)
                    },
                    backoff: CALL_BACKOFF,
                    max_total: None,
                };
                retry_with(
                    &policy,
                    |_| async {
                        let result = self.attempt(step, key, agent, input).await;
                        if result.is_err() {
                            // Failures while the run is being stopped are the stop, not the
                            // step's (and a stop is not retried).
                            self.check()?;
                        }
                        result
                    },
                    |err, attempt, next| {
                        let failed = match next {
                            Next::Retry(wait) => Some((format!("attempt {attempt}: {err}"), wait)),
                            Next::Stop(_) => None,
                        };
                        async move {
                            if let Some((detail, wait)) = failed {
                                self.journal
                                    .append(
                                        &Entry::new(key, EntryKind::AttemptFailed).detail(detail),
                                    )
                                    .await?;
                                self.interruptible(tokio::time::sleep(wait)).await?;
                            }
                            Ok(())
                        }
                    },
                )
                .await
            })
            .await
        }
        .boxed()
    }

    /// One attempt of [`call`](Self::call): takes the step's limits, then asks the agent in
    /// the call's thread, directly (the answer comes with the writes that store the call's
    /// thread and usage, for the journal's batch) or through the step's pool (whose item
    /// wrote them).
    async fn attempt(
        &self,
        step: &StepSettings,
        key: &str,
        agent: &str,
        input: &str,
    ) -> Result<(String, Vec<Write>), WorkflowError> {
        let record = self.record();
        if let Some(limiters) = &self.env.limiters {
            for limit in &step.limits {
                let scope = Scope {
                    group: &record.group,
                    user: Some(&record.user),
                };
                let agent_error = |source: LimitError| WorkflowError::Agent {
                    step: key.to_owned(),
                    source: source.into(),
                };
                let limit_key = limiters.key_for(limit, scope).map_err(agent_error)?;
                self.interruptible(limiters.acquire(limit, &limit_key, 1, None))
                    .await?
                    .map_err(agent_error)?;
            }
        }
        let thread = call_id(&record.id, record.restarts, key);
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(thread.clone());
        let call = Call {
            workflow: record.workflow.clone(),
            run: record.id.clone(),
            step: key.to_owned(),
            group: record.group.clone(),
            user: record.user.clone(),
            agent: agent.to_owned(),
            thread,
            input: input.to_owned(),
            timeout_ms: step
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            retention_ms: Some(
                u64::try_from(self.env.options.retention.as_millis()).unwrap_or(u64::MAX),
            ),
        };
        if let Some(name) = &step.pool {
            let pool = self
                .env
                .pools
                .get(name)
                .ok_or_else(|| WorkflowError::NotFound {
                    what: "pool",
                    id: name.clone(),
                })?;
            return Ok((Box::pin(self.pooled(pool, step, call)).await?, Vec::new()));
        }
        self.interruptible(call.perform(&self.env.talk))
            .await?
            .map_err(|failure| failed(key, failure))
    }

    /// Runs `call` as a work item of `pool` and awaits its end. The item's id is the call's
    /// thread: a call made again (its run was adopted after a crash) finds the item of the
    /// first attempt, running or ended, instead of asking the agent again.
    pub(super) async fn pooled(
        &self,
        pool: &Pool,
        step: &StepSettings,
        call: Call,
    ) -> Result<String, WorkflowError> {
        let key = call.step.clone();
        let id: WorkId = call.thread.clone();
        let pool_error = |source: PoolError| WorkflowError::Pool {
            step: key.clone(),
            source,
        };
        let payload = serde_json::to_value(&call).map_err(|err| WorkflowError::Invalid {
            what: "workflow call",
            message: err.to_string(),
        })?;
        let (tx, mut rx) = oneshot::channel();
        self.completions
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let mut spec = WorkSpec::new(WORKFLOW_CALL, payload)
            .id(id.clone())
            .notify(self.completions.recipient.clone());
        if let Some(retries) = step.retries {
            spec = spec.max_attempts(retries + 1);
        }
        let outcome = async {
            match pool.enqueue(spec).await {
                Ok(_) | Err(PoolError::Duplicate { .. }) => {}
                Err(err) => return Err(pool_error(err)),
            }
            loop {
                // The record first: the item may have ended already (taken over, or ended by
                // another daemon's pool, which does not notify this run).
                let record = pool.record(&id).await.map_err(pool_error)?;
                if let Some(outcome) = record.and_then(|r| r.outcome()) {
                    return Ok(outcome);
                }
                tokio::select! {
                    notified = &mut rx => if let Ok(outcome) = notified {
                        return Ok(outcome);
                    },
                    () = tokio::time::sleep(self.env.options.pool_poll) => {}
                }
            }
        };
        let outcome = self.interruptible(outcome).await;
        self.completions
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Err(WorkflowError::Canceled) = &outcome {
            // Best effort: a canceled run does not need the answer.
            let _ = pool.cancel(&id).await;
        }
        match outcome?? {
            WorkOutcome::Succeeded { output } => match answer_of(&output) {
                Some(answer) => Ok(answer.to_owned()),
                None => Err(WorkflowError::PoolCall {
                    step: key,
                    pool: pool.name().to_owned(),
                    error: WorkFailure::new(
                        WorkErrorKind::Internal,
                        format!("the item's output has no answer: {output}"),
                    ),
                }),
            },
            WorkOutcome::Failed { error } => Err(WorkflowError::PoolCall {
                step: key,
                pool: pool.name().to_owned(),
                error,
            }),
            WorkOutcome::Canceled => Err(WorkflowError::PoolCall {
                step: key,
                pool: pool.name().to_owned(),
                error: WorkFailure::new(WorkErrorKind::Canceled, "the item was canceled"),
            }),
        }
    }
}

/// A failed call as the run's error.
fn failed(key: &str, failure: CallFailure) -> WorkflowError {
    match failure {
        CallFailure::Agent(source) => WorkflowError::Agent {
            step: key.to_owned(),
            source,
        },
        CallFailure::Timeout(after) => WorkflowError::Timeout {
            step: key.to_owned(),
            after,
        },
        CallFailure::NoAnswer(status) => WorkflowError::NoAnswer {
            step: key.to_owned(),
            status: status.to_owned(),
        },
    }
}
