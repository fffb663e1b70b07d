//! The `knowledge` step: a search of the run's group's knowledge base.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;

impl Exec {
    /// Runs a `knowledge` step: `text` searched in `namespace`.
    pub(in crate::exec) async fn knowledge_step(
        &self,
        key: &str,
        text: &str,
        namespace: Option<&str>,
        top_k: Option<usize>,
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        let output = self
            .memo(key, self.knowledge(key, namespace, top_k, text))
            .await?;
        let branches = troupe_agents::rag::knowledge_branches(&output);
        Ok((StepOutput { output, branches }, None))
    }
}
