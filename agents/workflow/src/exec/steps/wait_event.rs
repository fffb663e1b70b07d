//! The `wait_event` step: waits for an event sent to the run, until its timeout.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;
use super::plain;

impl Exec {
    /// Runs a `wait_event` step for `event`; its output is the event's data.
    pub(in crate::exec) async fn wait_event(
        &self,
        step: &StepSettings,
        key: &str,
        event: &str,
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        if let Some(output) = self.replayed(key).await? {
            return Ok((plain(output), None));
        }
        self.begin(key, Some(format!("waiting for event {event:?}")))
            .await?;
        let until = match step.timeout {
            Some(timeout) => Some(self.deadline(key, timeout).await?),
            None => None,
        };
        self.set_status(RunStatus::Waiting).await?;
        let data = self.event(key, event, until).await;
        self.env.waiters.arrivals.forget(&self.journal.events_key());
        let data = data?;
        self.set_status(RunStatus::Running).await?;
        self.complete(key, &data).await?;
        Ok((plain(data), None))
    }

    /// Waits for event `event` until `until` (ms since the epoch), woken at once by an event
    /// sent through this daemon, and reading the run's events every `event_poll` for one sent
    /// by another process.
    async fn event(
        &self,
        key: &str,
        event: &str,
        until: Option<u64>,
    ) -> Result<String, WorkflowError> {
        let arrivals = self.env.waiters.arrivals.listen(&self.journal.events_key());
        loop {
            self.check()?;
            let sent = arrivals.notified();
            tokio::pin!(sent);
            sent.as_mut().enable();
            if let Some(data) = self.journal.event(event).await? {
                return Ok(data);
            }
            let now = now_ms();
            if until.is_some_and(|until| now >= until) {
                return Err(WorkflowError::EventTimeout {
                    step: key.to_owned(),
                    event: event.to_owned(),
                });
            }
            let left = until.map_or(u64::MAX, |until| until - now);
            let nap = self.env.options.event_poll.min(Duration::from_millis(left));
            let _ = self.interruptible(tokio::time::timeout(nap, sent)).await?;
        }
    }
}
