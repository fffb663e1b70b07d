//! The `sleep` step: waits until a deadline journaled the first time it starts.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;
use super::plain;

impl Exec {
    /// Runs a `sleep` step of `duration`; its output is its input.
    pub(in crate::exec) async fn sleep(
        &self,
        key: &str,
        text: &str,
        duration: Duration,
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        if let Some(output) = self.replayed(key).await? {
            return Ok((plain(output), None));
        }
        self.begin(key, None).await?;
        let until = self.deadline(key, duration).await?;
        let left = Duration::from_millis(until.saturating_sub(now_ms()));
        self.interruptible(tokio::time::sleep(left)).await?;
        self.complete(key, text).await?;
        Ok((plain(text.to_owned()), None))
    }
}
