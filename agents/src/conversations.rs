//! Conversations: the API clients (the CLI, the ingress) use to talk to agents. Create and
//! list threads, ask an agent in a thread, approve paused tool calls, read messages, archive
//! and delete, read usage and events — every call scoped by group.
//!
//! [`build_agents`] turns the config into one supervised [`AgentActor`] per `[agents.NAME]`;
//! [`Conversations`] owns the thread registry that routes messages to [`ThreadActor`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_config::{Config, Provider};
use troupe_runtime::store::{Store, StreamEntry, Write};
use troupe_runtime::{
    ChildOptions, Intensity, Life, Registry, RegistryOptions, RegistryStats, SupervisorSpec,
};
use troupe_tools::ToolRegistry;

use crate::agent::{AgentActor, AgentDirectory, AgentHandle, AgentSpec};
use crate::error::AgentError;
use crate::events::{AuditEvent, EventLog};
use crate::memory::Memory;
use crate::model::{self, ModelService};
use crate::policy::Policies;
use crate::rag::{Rag, RagSearchTool, RAG_SEARCH_KIND};
use crate::thread::{
    Approve, Archive, Delete, MessagePage, ReadMessages, StreamStarted, ThreadActor, Turn,
    TurnOutcome,
};
use crate::thread_store::{
    NewThread, ThreadId, ThreadInfo, ThreadPage, ThreadStore, ONE_SHOT_PREFIX,
};
use crate::usage::Prices;
use crate::usage::{Budget, UsageLedger, UsageReport};
use troupe_runtime::key_name::check_key_name as check_name;

/// Builds the `agents` supervisor (one permanent child per `[agents.NAME]`) and the
/// directory threads use to reach them. Models are built once and shared by the agents that
/// name them; every model call goes through `policies`. The agents' `rag_search` tools and
/// memory use the daemon's knowledge bases `rag` (shared with workflows and the CLI's view of
/// the same store); the agents are spread over `arbiters` (round-robin; none: the
/// supervisor's).
pub fn build_agents(
    config: &Config,
    store: Arc<dyn Store>,
    policies: Policies,
    intensity: Intensity,
    rag: &Rag,
    arbiters: &[actix::ArbiterHandle],
) -> Result<(SupervisorSpec, Arc<AgentDirectory>), AgentError> {
    // `rag_search` tools are built here (they need the knowledge bases); the tools crate
    // builds the others.
    let mut registry = ToolRegistry::from_config(&config.tools)?;
    let rag_tools = config
        .tools
        .iter()
        .filter(|(_, settings)| settings.kind == RAG_SEARCH_KIND);
    for (name, settings) in rag_tools {
        let tool = RagSearchTool::new(name, rag.clone(), &settings.options)?;
        registry.register(Arc::new(tool), settings.timeout, settings.requires_approval)?;
    }
    let tools = Arc::new(registry);
    let memory = Memory::new(rag.clone(), config.daemon.thread_retention);
    let mut models: BTreeMap<&str, Arc<dyn ModelService>> = BTreeMap::new();
    let mut supervisor = SupervisorSpec::new("agents", intensity);
    let mut directory = AgentDirectory::new();
    for (i, (name, settings)) in config.agents.iter().enumerate() {
        let model_settings =
            config
                .models
                .get(&settings.model)
                .ok_or_else(|| AgentError::NotFound {
                    what: "model",
                    id: settings.model.clone(),
                })?;
        let model = match models.get(settings.model.as_str()) {
            Some(model) => model.clone(),
            None => {
                let built = model::build(&settings.model, model_settings)?;
                models.insert(&settings.model, built.clone());
                built
            }
        };
        let prices = Prices {
            input_per_million: model_settings.input_cost_per_million,
            output_per_million: model_settings.output_cost_per_million,
        };
        if matches!(model_settings.provider, Provider::Openai { .. }) {
            tracing::info!(agent = %name, model = %settings.model, "agent uses a remote model");
        }
        let spec = Arc::new(AgentSpec {
            name: name.clone(),
            settings: settings.clone(),
            model,
            prices,
            tools: tools.clone(),
            policies: policies.clone(),
            store: store.clone(),
            memory: settings.memory.as_ref().map(|_| memory.clone()),
        });
        let options = ChildOptions {
            arbiter: (!arbiters.is_empty()).then(|| arbiters[i % arbiters.len()].clone()),
            ..ChildOptions::default()
        };
        let actor = supervisor.child(name, options, move |_| AgentActor::new(spec.clone()));
        directory.insert(
            name.clone(),
            AgentHandle {
                actor,
                settings: settings.clone(),
            },
        );
    }
    Ok((supervisor, Arc::new(directory)))
}

/// A question for an agent.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// The agent to answer.
    pub agent: String,
    /// An existing thread to continue; a new one is created when `None`.
    pub thread: Option<String>,
    /// The message.
    pub input: String,
    /// Stream the answer to the turn's delta stream.
    pub stream: bool,
    /// Told the delta stream as soon as it is open (streamed turns only).
    pub started: Option<StreamStarted>,
}

/// The conversations API. Cheap to clone.
#[derive(Clone)]
pub struct Conversations {
    threads: ThreadStore,
    registry: Registry<ThreadId, ThreadActor>,
    agents: Arc<AgentDirectory>,
    usage: UsageLedger,
    events: EventLog,
    rag: Option<Rag>,
}

impl Conversations {
    /// Conversations over `store` with the given agents; thread actors are spread over the
    /// registry's arbiters and passivated after `options.passivate_after`; threads untouched
    /// for `retention` expire (`[daemon] thread_retention`).
    pub fn new(
        store: Arc<dyn Store>,
        agents: Arc<AgentDirectory>,
        usage: UsageLedger,
        options: RegistryOptions,
        retention: Duration,
    ) -> Self {
        let threads = ThreadStore::new(store.clone(), retention);
        let window = agents
            .values()
            .map(|a| a.settings.context_messages)
            .max()
            .unwrap_or(20)
            .max(1)
            * 2;
        let (t, a) = (threads.clone(), agents.clone());
        let registry = Registry::new("threads", options, move |id: &ThreadId, _: &Life| {
            ThreadActor::new(id.clone(), t.clone(), a.clone(), window)
        });
        Conversations {
            threads,
            registry,
            agents,
            usage,
            events: EventLog::new(store),
            rag: None,
        }
    }

    /// These conversations with the daemon's knowledge bases (workflows' `knowledge` steps
    /// use them).
    pub fn with_rag(mut self, rag: Rag) -> Self {
        self.rag = Some(rag);
        self
    }

    /// The daemon's knowledge bases, if given.
    pub fn rag(&self) -> Option<&Rag> {
        self.rag.as_ref()
    }

    /// The usage ledger (budgets, reports).
    pub fn usage_ledger(&self) -> &UsageLedger {
        &self.usage
    }

    /// A ledger over `store` with per-group budgets from the config.
    pub fn ledger(store: Arc<dyn Store>, budgets: BTreeMap<String, Budget>) -> UsageLedger {
        UsageLedger::new(store, budgets)
    }

    /// Names of the configured agents.
    pub fn agent_names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// Creates a thread.
    pub async fn create_thread(&self, new: NewThread) -> Result<ThreadInfo, AgentError> {
        // The creation event is written in the thread's own batch: one round trip.
        self.threads.create_with(new, creation_event).await
    }

    /// Asks `ask.agent` in a thread (a new one if none is given) and waits for the turn.
    pub async fn ask(&self, ask: Ask) -> Result<TurnOutcome, AgentError> {
        let (outcome, writes) = self.ask_deferred(ask).await?;
        if !writes.is_empty() {
            self.threads.store().apply(writes).await?;
        }
        Ok(outcome)
    }

    /// [`ask`](Self::ask) that leaves the writes of a new thread's first turn (which runs
    /// alone, see `thread::fresh`) to the caller, to send in its own batch (the ingress: with
    /// the task's result, so the result never names a thread not yet written). Empty when
    /// the turn wrote its thread itself.
    pub async fn ask_deferred(&self, ask: Ask) -> Result<(TurnOutcome, Vec<Write>), AgentError> {
        check_name("group", &ask.group)?;
        check_name("user", &ask.user)?;
        let Some(agent) = self.agents.get(&ask.agent) else {
            return Err(AgentError::NotFound {
                what: "agent",
                id: ask.agent,
            });
        };
        // An agent with memory indexes its thread's stored messages when it recalls: its
        // first turn needs the user's message stored before it runs.
        let alone = !ask.stream && agent.settings.memory.is_none();
        let id = match &ask.thread {
            Some(thread) => self.threads.resolve(&ask.group, thread).await?,
            None if alone => {
                // A thread of its own, new: the turn runs without an actor, and the thread
                // is written with its messages in one batch (see `thread::fresh`).
                let id = ThreadId::generate(&ask.group)?;
                let new = NewThread {
                    group: ask.group.clone(),
                    user: ask.user.clone(),
                    id: Some(id.thread().to_owned()),
                    title: title_of(&ask.input),
                    metadata: serde_json::Value::Null,
                };
                let turn = Turn {
                    agent: ask.agent,
                    user: ask.user,
                    input: ask.input,
                    stream: false,
                    started: None,
                };
                return crate::thread::fresh(self.own_turn(id, new, turn)).await;
            }
            None => {
                let info = self
                    .create_thread(NewThread {
                        group: ask.group.clone(),
                        user: ask.user.clone(),
                        id: None,
                        title: title_of(&ask.input),
                        metadata: serde_json::Value::Null,
                    })
                    .await?;
                ThreadId::new(&info.group, &info.id)?
            }
        };
        let turn = Turn {
            agent: ask.agent,
            user: ask.user,
            input: ask.input,
            stream: ask.stream,
            started: ask.started,
        };
        let outcome = self.registry.send(&id, turn).await??;
        Ok((outcome, Vec::new()))
    }

    /// Asks `agent` once in a thread of its own, `new` (a workflow call: its id must start
    /// with [`ONE_SHOT_PREFIX`]). No thread actor is started and nothing is written before the
    /// agent answers. The outcome comes with the writes that store the turn — the thread
    /// whole in one value, readable by its id with [`thread`](Self::thread) and
    /// [`messages`](Self::messages), and the last model call's usage — for the caller to send
    /// in its own batch (a workflow run: with its journal entry). The thread expires after
    /// `retention` (its run's; `None`: the thread retention). A turn paused for an approval
    /// is written at once as an ordinary thread, which [`approve`](Self::approve) continues;
    /// its writes are empty.
    pub async fn ask_once(
        &self,
        new: NewThread,
        agent: &str,
        input: String,
        retention: Option<Duration>,
    ) -> Result<(TurnOutcome, Vec<Write>), AgentError> {
        if !self.agents.contains_key(agent) {
            return Err(AgentError::NotFound {
                what: "agent",
                id: agent.to_owned(),
            });
        }
        check_name("user", &new.user)?;
        let id = ThreadId::new(&new.group, new.id.as_deref().unwrap_or_default())?;
        if !id.is_one_shot() {
            return Err(AgentError::Invalid {
                what: "thread id",
                message: format!(
                    "a one-shot thread's id starts with {ONE_SHOT_PREFIX:?}: {:?}",
                    id.thread()
                ),
            });
        }
        let turn = Turn {
            agent: agent.to_owned(),
            user: new.user.clone(),
            input,
            stream: false,
            started: None,
        };
        crate::thread::one_shot(self.own_turn(id, new, turn), retention).await
    }

    /// `turn` in thread `id`, made by `new`, to run without an actor.
    fn own_turn(&self, id: ThreadId, new: NewThread, turn: Turn) -> crate::thread::OwnTurn {
        crate::thread::OwnTurn {
            threads: self.threads.clone(),
            agents: self.agents.clone(),
            id,
            new,
            turn,
            created: creation_event,
        }
    }

    /// Resolves a paused turn's approval and resumes it.
    pub async fn approve(
        &self,
        group: &str,
        thread: &str,
        approval: &str,
        approve: bool,
    ) -> Result<TurnOutcome, AgentError> {
        let id = self.threads.resolve(group, thread).await?;
        let msg = Approve {
            approval: approval.to_owned(),
            approve,
        };
        self.registry.send(&id, msg).await?
    }

    /// The store threads are kept in.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.threads.store()
    }

    /// A thread's metadata.
    pub async fn thread(&self, group: &str, thread: &str) -> Result<ThreadInfo, AgentError> {
        let id = self.threads.resolve(group, thread).await?;
        self.threads.info(&id).await
    }

    /// Messages `from..from+limit` of a thread, oldest first.
    pub async fn messages(
        &self,
        group: &str,
        thread: &str,
        from: u64,
        limit: usize,
    ) -> Result<MessagePage, AgentError> {
        let id = self.threads.resolve(group, thread).await?;
        if let Some(once) = self.threads.once(&id).await? {
            let total = once.messages.len() as u64;
            let messages = once
                .messages
                .into_iter()
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .take(limit)
                .collect();
            return Ok(MessagePage { messages, total });
        }
        self.registry
            .send(&id, ReadMessages { from, limit })
            .await?
    }

    /// Threads of a group (of one user if given), newest first.
    pub async fn list_threads(
        &self,
        group: &str,
        user: Option<&str>,
        cursor: u64,
        limit: usize,
    ) -> Result<ThreadPage, AgentError> {
        self.threads.list(group, user, cursor, limit).await
    }

    /// Archives a thread.
    pub async fn archive(&self, group: &str, thread: &str) -> Result<ThreadInfo, AgentError> {
        let id = self.threads.resolve(group, thread).await?;
        self.registry.send(&id, Archive).await?
    }

    /// Deletes a thread and its messages, and (with knowledge bases) what thread memory
    /// indexed of it in its creator's memory.
    pub async fn delete(&self, group: &str, thread: &str) -> Result<(), AgentError> {
        let id = self.threads.resolve(group, thread).await?;
        let creator = match &self.rag {
            Some(_) => self.threads.info(&id).await.ok().map(|info| info.user),
            None => None,
        };
        self.registry.send(&id, Delete).await??;
        if let (Some(rag), Some(user)) = (&self.rag, creator) {
            let memory = Memory::new(rag.clone(), self.threads.retention());
            // The thread is gone already; what is left expires with the retention.
            if let Err(err) = memory.forget(&id, &user).await {
                tracing::warn!(group, error = %err, "memory of the deleted thread not deleted");
            }
        }
        Ok(())
    }

    /// A group's usage over the UTC days `from..=to` (see [`crate::usage::day_of`]).
    pub async fn usage(&self, group: &str, from: i64, to: i64) -> Result<UsageReport, AgentError> {
        check_name("group", group)?;
        self.usage.report(group, from, to).await
    }

    /// A group's audit events after entry id `after` (`"0"` for all).
    pub async fn events(
        &self,
        group: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, AgentError> {
        check_name("group", group)?;
        self.events.read(group, after, count).await
    }

    /// Thread registry counters.
    pub fn thread_stats(&self) -> RegistryStats {
        self.registry.stats()
    }

    /// Passivates now the threads idle for at least `idle` with no turn running; returns how
    /// many (the sweeper does it periodically for threads idle past `passivate_after`).
    pub fn passivate_idle(&self, idle: Duration) -> usize {
        self.registry.passivate_idle_for(idle)
    }

    /// Starts the periodic passivation sweeper.
    pub fn spawn_sweeper(&self) {
        self.registry.spawn_sweeper();
    }

    /// Stops every live thread actor.
    pub async fn shutdown(&self, grace: Duration) {
        self.registry.shutdown(grace).await;
    }
}

/// The audit event of a thread's creation, written in the thread's own batch.
fn creation_event(info: &ThreadInfo) -> Vec<troupe_runtime::store::Write> {
    let event = AuditEvent::ThreadCreated {
        thread: &info.id,
        user: &info.user,
        title: &info.title,
    };
    vec![EventLog::write(&info.group, &event)]
}

/// A title from the first words of a message.
fn title_of(input: &str) -> String {
    const MAX: usize = 60;
    let line = input.lines().next().unwrap_or("").trim();
    if line.chars().count() <= MAX {
        return line.to_owned();
    }
    let cut: String = line.chars().take(MAX).collect();
    format!("{}…", cut.trim_end())
}
