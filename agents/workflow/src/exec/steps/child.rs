//! The `workflow` step: a child workflow run inside the run, its journal keys under the
//! step's.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;
use super::plain;

impl Exec {
    /// Runs a `workflow` step: child workflow `workflow` on `text`.
    pub(in crate::exec) async fn child(
        &self,
        key: &str,
        text: &str,
        workflow: &str,
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        let done = self.replayed(key).await?;
        if let Some(output) = done {
            return Ok((plain(output), None));
        }
        self.begin(key, None).await?;
        let prefix = format!("{key}/");
        let output = self.workflow(workflow, &prefix, text).await?;
        self.complete_step(key, &output).await?;
        Ok((plain(output), None))
    }
}
