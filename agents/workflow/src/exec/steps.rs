//! The step interpreter: a workflow's steps in order, each by its kind (agent, parallel,
//! route, loop, sleep, wait_event, child workflow, knowledge), replayed or run and journaled.

// The imports of `Exec` (the parent module), shared by its method files.
use super::*;

impl Exec {
    /// Runs workflow `name` (the run's, or a child's with journal keys under `prefix`).
    pub(crate) fn workflow<'a>(
        &'a self,
        name: &'a str,
        prefix: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            let def: &WorkflowSettings =
                self.snapshot
                    .definitions
                    .get(name)
                    .ok_or_else(|| WorkflowError::NotFound {
                        what: "workflow",
                        id: name.to_owned(),
                    })?;
            let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
            let mut previous = input.to_owned();
            let mut index = 0;
            while let Some(step) = def.steps.get(index) {
                let key = format!("{prefix}{}", step.name);
                let span = tracing::info_span!(
                    troupe_runtime::trace::span::WORKFLOW_STEP,
                    workflow = name,
                    run = %self.record().id,
                    step = %key,
                    group = %self.record().group,
                );
                let text = match &step.input {
                    Some(template) => render(template, input, &outputs).map_err(|source| {
                        WorkflowError::Template {
                            step: key.clone(),
                            source,
                        }
                    })?,
                    None => previous.clone(),
                };
                let (output, jump) = self
                    .step(step, &key, &text, &outputs)
                    .instrument(span)
                    .await?;
                previous = output.output.clone();
                outputs.insert(step.name.clone(), output);
                index = match jump {
                    Some(target) => def.steps.iter().position(|s| s.name == target).ok_or(
                        WorkflowError::NotFound {
                            what: "step",
                            id: target,
                        },
                    )?,
                    None => index + 1,
                };
            }
            Ok(previous)
        }
        .boxed()
    }

    /// Runs one step; returns its output and the step to jump to, if it routes to one.
    pub(super) fn step<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        text: &'a str,
        outputs: &'a BTreeMap<String, StepOutput>,
    ) -> BoxFuture<'a, Result<(StepOutput, Option<String>), WorkflowError>> {
        async move {
        let plain = |output: String| StepOutput {
            output,
            branches: BTreeMap::new(),
        };
        match &step.kind {
            StepKind::Agent { agent } => {
                let output = self.call(step, key, agent, text).await?;
                Ok((plain(output), None))
            }
            StepKind::Parallel {
                agents,
                max_concurrency,
            } => {
                let done = self.replayed(key).await?.is_some();
                if !done {
                    self.begin(key, None).await?;
                }
                let width = max_concurrency.unwrap_or(agents.len()).max(1);
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
                    self.complete(key, &output).await?;
                }
                Ok((
                    StepOutput {
                        output,
                        branches: branches.into_iter().collect(),
                    },
                    None,
                ))
            }
            StepKind::Route {
                on,
                routes,
                default,
            } => {
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
                let target = routes.get(&label).or(default.as_ref()).ok_or_else(|| {
                    WorkflowError::NoRoute {
                        step: key.to_owned(),
                        answer: answer.clone(),
                    }
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
            StepKind::Loop {
                agent,
                scorers,
                until_score,
                max_iterations,
            } => {
                let done = self.replayed(key).await?.is_some();
                if !done {
                    self.begin(key, None).await?;
                }
                let mut current = text.to_owned();
                let mut branches = BTreeMap::new();
                for iteration in 0..=*max_iterations {
                    let scoring = format!(
                        "SCORE the text below from 0 to 1; answer with the number, then why.\n\n{current}"
                    );
                    let scoring = &scoring;
                    let calls: Vec<_> = scorers
                        .iter()
                        .map(|scorer| async move {
                            let sub = format!("{key}/{iteration}/{scorer}");
                            let answer = self.call(step, &sub, scorer, scoring).await?;
                            Ok::<_, WorkflowError>((scorer.clone(), answer))
                        })
                        .collect();
                    let answers: Vec<(String, String)> =
                        futures::future::try_join_all(calls).await?;
                    let mut low = Vec::new();
                    for (scorer, answer) in &answers {
                        let score = parse_score(answer);
                        if score.is_none_or(|s| s < *until_score) {
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
                    if iteration == *max_iterations {
                        if !done {
                            self.note(
                                key,
                                format!("bound reached after {max_iterations} refinements"),
                            )
                            .await?;
                        }
                        break;
                    }
                    let refine = format!(
                        "REFINE the text below to answer this feedback:\n{}\n\nText:\n{current}",
                        low.join("\n")
                    );
                    let sub = format!("{key}/{iteration}/{agent}");
                    current = self.call(step, &sub, agent, &refine).await?;
                }
                if !done {
                    self.complete(key, &current).await?;
                }
                Ok((
                    StepOutput {
                        output: current,
                        branches,
                    },
                    None,
                ))
            }
            StepKind::Sleep { duration } => {
                if let Some(output) = self.replayed(key).await? {
                    return Ok((plain(output), None));
                }
                self.begin(key, None).await?;
                let until = self.deadline(key, *duration).await?;
                let left = Duration::from_millis(until.saturating_sub(now_ms()));
                self.interruptible(tokio::time::sleep(left)).await?;
                self.complete(key, text).await?;
                Ok((plain(text.to_owned()), None))
            }
            StepKind::WaitEvent { event } => {
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
            StepKind::Knowledge { namespace, top_k } => {
                let output = self
                    .memo(key, self.knowledge(key, namespace.as_deref(), *top_k, text))
                    .await?;
                let branches = troupe_agents::rag::knowledge_branches(&output);
                Ok((StepOutput { output, branches }, None))
            }
            StepKind::Workflow { workflow } => {
                let done = self.replayed(key).await?;
                if let Some(output) = done {
                    return Ok((plain(output), None));
                }
                self.begin(key, None).await?;
                let prefix = format!("{key}/");
                let output = self.workflow(workflow, &prefix, text).await?;
                self.complete(key, &output).await?;
                Ok((plain(output), None))
            }
        }
        }
        .boxed()
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
