//! The `loop` step: scorers score the text, the agent refines it on their feedback, until
//! every score reaches `until_score` or `max_iterations` refinements were made.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;
use super::prompts;

impl Exec {
    /// Runs a `loop` step on `text`.
    pub(in crate::exec) async fn refine(
        &self,
        step: &StepSettings,
        key: &str,
        text: &str,
        (agent, scorers, until_score, max_iterations): (&str, &[String], f64, u32),
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        let done = self.replayed(key).await?.is_some();
        if !done {
            self.begin(key, None).await?;
        }
        let mut current = text.to_owned();
        let mut branches = BTreeMap::new();
        for iteration in 0..=max_iterations {
            let scoring = prompts::fill(prompts::SCORE, &[("text", &current)]);
            let scoring = &scoring;
            let calls: Vec<_> = scorers
                .iter()
                .map(|scorer| async move {
                    let sub = format!("{key}/{iteration}/{scorer}");
                    let answer = self.call(step, &sub, scorer, scoring).await?;
                    Ok::<_, WorkflowError>((scorer.clone(), answer))
                })
                .collect();
            let answers: Vec<(String, String)> = futures::future::try_join_all(calls).await?;
            let mut low = Vec::new();
            for (scorer, answer) in &answers {
                let score = parse_score(answer);
                if score.is_none_or(|s| s < until_score) {
                    low.push(format!(
                        "{scorer} ({}): {answer}",
                        score.map_or("no score".to_owned(), |s| format!("{s:.2}"))
                    ));
                }
                branches.insert(scorer.clone(), answer.clone());
            }
            if low.is_empty() {
                break;
            }
            if iteration == max_iterations {
                if !done {
                    self.note(
                        key,
                        format!("bound reached after {max_iterations} refinements"),
                    )
                    .await?;
                }
                break;
            }
            let feedback = low.join("\n");
            let refine = prompts::fill(
                prompts::REFINE,
                &[("feedback", &feedback), ("text", &current)],
            );
            let sub = format!("{key}/{iteration}/{agent}");
            current = self.call(step, &sub, agent, &refine).await?;
        }
        if !done {
            self.complete_step(key, &current).await?;
        }
        Ok((
            StepOutput {
                output: current,
                branches,
            },
            None,
        ))
    }
}
