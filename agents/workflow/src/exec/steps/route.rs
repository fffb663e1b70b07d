//! The `route` step: the label read from an earlier step's answer picks an agent to ask or
//! a step to jump to.

// The imports of `Exec` (its module), shared by its method files.
use super::super::*;

impl Exec {
    /// Runs a `route` step on the answer of step `on`.
    pub(in crate::exec) async fn route(
        &self,
        step: &StepSettings,
        key: &str,
        text: &str,
        outputs: &BTreeMap<String, StepOutput>,
        (on, routes, default): (&str, &BTreeMap<String, RouteTarget>, Option<&RouteTarget>),
    ) -> Result<(StepOutput, Option<String>), WorkflowError> {
        let answer = outputs
            .get(on)
            .map(|o| o.output.clone())
            .unwrap_or_default();
        let labels: Vec<&str> = routes.keys().map(String::as_str).collect();
        let label_key = format!("{key}/label");
        let label = self
            .memo(&label_key, async {
                Ok(match parse_label(&answer, &labels) {
                    Some(label) => {
                        self.note(key, format!("label {label:?} read from {answer:?}"))
                            .await?;
                        label.to_owned()
                    }
                    None => {
                        self.note(
                            key,
                            format!("no label in {answer:?}: taking the default branch"),
                        )
                        .await?;
                        String::new()
                    }
                })
            })
            .await?;
        let target = routes
            .get(&label)
            .or(default)
            .ok_or_else(|| WorkflowError::NoRoute {
                step: key.to_owned(),
                answer: answer.clone(),
            })?;
        let mut branches = BTreeMap::new();
        branches.insert("label".to_owned(), label);
        match target {
            RouteTarget::Agent(agent) => {
                let output = self.call(step, key, agent, text).await?;
                Ok((StepOutput { output, branches }, None))
            }
            RouteTarget::Step(target) => {
                let output = self.memo(key, async { Ok(text.to_owned()) }).await?;
                Ok((StepOutput { output, branches }, Some(target.clone())))
            }
        }
    }
}
