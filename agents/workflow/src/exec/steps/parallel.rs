//! The `parallel` step: its agents asked at once (at most `max_concurrency`), their
//! answers joined, one branch per agent.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;

impl Exec {
    /// Runs a `parallel` step: `agents` asked `text` at once, at most `width` at a time.
    pub(in crate::exec) async fn parallel(
        &self,
        step: &StepSettings,
        key: &str,
        text: &str,
        agents: &[String],
        max_concurrency: Option<usize>,
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        let done = self.replayed(key).await?.is_some();
        let width = max_concurrency.unwrap_or(agents.len()).max(1);
        if !done {
            // All at once: the step's and its calls' `started` entries in one write.
            let starting = if width >= agents.len() {
                let replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
                agents
                    .iter()
                    .map(|agent| format!("{key}/{agent}"))
                    .filter(|branch| !replay.completed.contains_key(branch))
                    .collect()
            } else {
                Vec::new()
            };
            self.begin_with(key, starting).await?;
        }
        let calls: Vec<_> = agents
            .iter()
            .map(|agent| async move {
                let branch_key = format!("{key}/{agent}");
                let output = self.call(step, &branch_key, agent, text).await?;
                Ok::<_, WorkflowError>((agent.clone(), output))
            })
            .collect();
        let branches: Vec<(String, String)> = futures::stream::iter(calls)
            .buffered(width)
            .try_collect()
            .await?;
        let output = branches
            .iter()
            .map(|(agent, output)| format!("[{agent}]\n{output}"))
            .collect::<Vec<_>>()
            .join("\n\n");
        if !done {
            self.complete_step(key, &output).await?;
        }
        Ok((
            StepOutput {
                output,
                branches: branches.into_iter().collect(),
            },
            None,
        ))
    }
}
