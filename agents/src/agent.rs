//! The agent actor: one per `[agents.NAME]`, supervised by the `agents` supervisor. It takes
//! [`RunAgent`] and runs the agent loop for one turn of a thread: call the model, run the tool
//! calls it asks for (at most `tool_concurrency` at once, only those its allowlist permits,
//! only the first `max_tool_calls` of a response: the others are answered "refused"), feed
//! the results back, and repeat until a final answer or `max_steps`.
//!
//! The actor holds no conversation state (threads do), so runs proceed concurrently: each is
//! a future under [`isolate`], so a panic inside a run (a tool, the model client) becomes an
//! error for that run alone.
//!
//! A run is traced as `agent.run` under the span [`RunAgent`] carries (the thread's turn), with
//! `model.call` and `tool` spans inside (see [`troupe_runtime::trace`]).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;
use tracing::Instrument;
use troupe_config::AgentSettings;
use troupe_runtime::isolate;
use troupe_runtime::store::Store;
use troupe_tools::{ToolContext, ToolError, ToolRegistry};

use crate::error::AgentError;
use crate::events::{AuditEvent, EventLog, RefusedCall, ToolEvent, Who};
use crate::message::{ChatMessage, ToolCall};
use crate::model::{ChatRequest, DeltaSink, ModelService, Usage};
use crate::policy::{Call, Hold, Policies};
use crate::thread_store::ThreadId;
use crate::usage::Prices;

/// Everything an agent needs to run: its settings and the services it calls.
pub struct AgentSpec {
    /// `[agents.NAME]`.
    pub name: String,
    /// Its validated settings.
    pub settings: AgentSettings,
    /// Its model.
    pub model: Arc<dyn ModelService>,
    /// The model's prices.
    pub prices: Prices,
    /// All configured tools (the allowlist in `settings.tools` decides which it may call).
    pub tools: Arc<ToolRegistry>,
    /// The policies around each model call: budget, the agent's `limits`, metrics, usage
    /// and audit.
    pub policies: Policies,
    /// The store (for the audit events of tool calls).
    pub store: Arc<dyn Store>,
    /// Recall of earlier thread messages, when `[agents.X.memory]` is set.
    pub memory: Option<crate::memory::Memory>,
}

/// A tool call whose approval was decided by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The call.
    pub call: ToolCall,
    /// Whether it may run.
    pub approved: bool,
}

/// Runs one turn: `messages` is the context (system message, recent history, the new user
/// message); `resume` are calls of the last assistant message to run first (after an
/// approval).
#[derive(Message)]
#[rtype(result = "Result<AgentRun, AgentError>")]
pub struct RunAgent {
    /// The sender's span (the thread's turn): the run's span is its child.
    pub span: tracing::Span,
    /// The thread the turn belongs to.
    pub thread: ThreadId,
    /// The user the turn runs for.
    pub user: String,
    /// The context sent to the model.
    pub messages: Vec<ChatMessage>,
    /// Pending tool calls, decided, to run before calling the model again.
    pub resume: Vec<Decided>,
    /// Where to stream text deltas, if streaming.
    pub deltas: Option<DeltaSink>,
    /// Where the last model call's usage record waits for the turn's own batch (a one-shot
    /// turn's), if it does (see [`Hold`]).
    pub hold: Option<Arc<Hold>>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// The model gave a final answer.
    Completed,
    /// The model asked for tools that need a client's approval; the run is paused.
    AwaitingApproval {
        /// Every call of the paused assistant message.
        calls: Vec<ToolCall>,
    },
    /// `max_steps` model calls were made without a final answer.
    StepLimit,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRun {
    /// New messages, in order: assistant messages (with tool calls) and tool results.
    pub produced: Vec<ChatMessage>,
    /// The final answer (empty unless completed).
    pub answer: String,
    /// Tokens over all model calls of the run.
    pub usage: Usage,
    /// Model calls made.
    pub model_calls: u32,
    /// How it ended.
    pub status: RunStatus,
}

/// The agent actor. See the module documentation.
pub struct AgentActor {
    spec: Arc<AgentSpec>,
}

impl AgentActor {
    /// An agent actor for `spec`.
    pub fn new(spec: Arc<AgentSpec>) -> Self {
        AgentActor { spec }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;
}

impl Handler<RunAgent> for AgentActor {
    type Result = ResponseFuture<Result<AgentRun, AgentError>>;

    fn handle(&mut self, msg: RunAgent, _: &mut Context<Self>) -> Self::Result {
        let spec = self.spec.clone();
        let span = tracing::info_span!(
            parent: &msg.span,
            "agent.run",
            agent = %spec.name,
            group = %msg.thread.group(),
            thread = %msg.thread.thread()
        );
        Box::pin(
            async move {
                let actor = format!("agent:{}", spec.name);
                // Boxed: `isolate` would otherwise hold the loop's large state twice.
                let run = Box::pin(run(&spec, msg));
                isolate(&actor, run).await?
            }
            .instrument(span),
        )
    }
}

/// The agent loop.
async fn run(spec: &AgentSpec, msg: RunAgent) -> Result<AgentRun, AgentError> {
    let settings = &spec.settings;
    let tools = spec.tools.specs(&settings.tools);
    let mut messages = msg.messages;
    if msg.resume.is_empty() {
        Box::pin(recall(spec, &msg.thread, &msg.user, &mut messages)).await;
    }
    let mut out = AgentRun {
        produced: Vec::new(),
        answer: String::new(),
        usage: Usage::default(),
        model_calls: 0,
        status: RunStatus::StepLimit,
    };
    if !msg.resume.is_empty() {
        let results = Box::pin(execute(spec, &msg.thread, &msg.user, msg.resume)).await;
        messages.extend(results.iter().cloned());
        out.produced.extend(results);
    }
    for step in 1..=settings.max_steps {
        let request = ChatRequest {
            messages: messages.clone(),
            tools: tools.clone(),
            temperature: Some(settings.temperature),
            max_tokens: settings.max_tokens,
        };
        let call = Call {
            group: msg.thread.group(),
            user: &msg.user,
            agent: &spec.name,
            thread: msg.thread.thread(),
            model: spec.model.name(),
            prices: spec.prices,
            limits: &settings.limits,
            estimated_tokens: estimate_tokens(&request),
            hold: msg.hold.as_deref(),
        };
        let span = tracing::info_span!("model.call", model = %spec.model.name(), call = step);
        let (response, usage) = spec
            .policies
            .call(&call, async {
                // Made in the boxed call (see `Policies::call`), not held in this loop's state.
                let response = spec
                    .model
                    .chat(&request, msg.deltas.clone())
                    .instrument(span)
                    .await?;
                let usage = response
                    .usage
                    .unwrap_or_else(|| estimate_usage(&request, &response.content));
                Ok(((response, usage), usage))
            })
            .await?;
        out.model_calls += 1;
        out.usage.input_tokens += usage.input_tokens;
        out.usage.output_tokens += usage.output_tokens;

        if response.tool_calls.is_empty() {
            out.answer = response.content.clone();
            out.produced.push(ChatMessage::new(
                crate::message::Role::Assistant,
                response.content,
            ));
            out.status = RunStatus::Completed;
            return Ok(out);
        }
        let calls = response.tool_calls.clone();
        let assistant = ChatMessage::tool_calls(response.content, response.tool_calls);
        messages.push(assistant.clone());
        out.produced.push(assistant);

        // Calls beyond max_tool_calls never run, so they need no approval either.
        let needs_approval = calls.iter().take(settings.max_tool_calls).any(|call| {
            settings.tools.contains(&call.name) && spec.tools.requires_approval(&call.name)
        });
        if needs_approval {
            out.status = RunStatus::AwaitingApproval { calls };
            return Ok(out);
        }
        let decided = calls
            .into_iter()
            .map(|call| Decided {
                call,
                approved: true,
            })
            .collect();
        let results = Box::pin(execute(spec, &msg.thread, &msg.user, decided)).await;
        messages.extend(results.iter().cloned());
        out.produced.extend(results);
    }
    tracing::warn!(agent = %spec.name, max_steps = settings.max_steps, "step limit reached");
    Ok(out)
}

/// With memory, inserts the earlier messages of the thread most relevant to the new user
/// message as a system message after the instructions. A failure to recall is logged and
/// the turn goes on without it.
async fn recall(spec: &AgentSpec, thread: &ThreadId, user: &str, messages: &mut Vec<ChatMessage>) {
    let (Some(memory), Some(settings)) = (&spec.memory, &spec.settings.memory) else {
        return;
    };
    let Some(query) = messages
        .iter()
        .rev()
        .find(|m| m.role == crate::message::Role::User)
        .map(|m| m.content.clone())
    else {
        return;
    };
    let in_context = messages
        .iter()
        .filter(|m| m.role != crate::message::Role::System)
        .count() as u64;
    let total = match spec.store.len(&thread.messages_key()).await {
        Ok(total) => total,
        Err(err) => {
            tracing::warn!(error = %err, "memory: could not count the thread's messages");
            return;
        }
    };
    let exclude_from = total.saturating_sub(in_context);
    match memory
        .recall(thread, user, &query, exclude_from, settings)
        .await
    {
        Ok(recalled) if recalled.is_empty() => {}
        Ok(recalled) => {
            tracing::debug!(recalled = recalled.len(), "memory recalled");
            let text = crate::memory::format_recalled(&recalled, thread.thread());
            let at = usize::from(
                messages
                    .first()
                    .is_some_and(|m| m.role == crate::message::Role::System),
            );
            messages.insert(at, ChatMessage::new(crate::message::Role::System, text));
        }
        Err(err) => tracing::warn!(error = %err, "memory: recall failed"),
    }
}

/// Runs tool calls, at most `tool_concurrency` at once; every call gets a tool message in
/// call order, errors included, so the model can correct itself. Only the first
/// `max_tool_calls` run: the others are answered refused, and audited as one `tool_denied`
/// event (a flood does not flood the audit stream).
async fn execute(
    spec: &AgentSpec,
    thread: &ThreadId,
    user: &str,
    mut calls: Vec<Decided>,
) -> Vec<ChatMessage> {
    let max = spec.settings.max_tool_calls;
    let beyond = calls.split_off(max.min(calls.len()));
    let ctx = ToolContext {
        group: thread.group().to_owned(),
        user: user.to_owned(),
        agent: spec.name.clone(),
        thread: thread.thread().to_owned(),
        message_id: String::new(),
    };
    let runs = calls.into_iter().map(|decided| {
        let ctx = ctx.clone();
        async move {
            let call = decided.call;
            let outcome = if decided.approved {
                spec.tools
                    .call(&spec.settings.tools, &call.name, &ctx, &call.arguments)
                    .await
            } else {
                Err(ToolError::Denied {
                    tool: call.name.clone(),
                    reason: "the user did not approve this call".to_owned(),
                })
            };
            let denied = matches!(outcome, Err(ToolError::Denied { .. }));
            let content = match &outcome {
                Ok(output) => output.content.clone(),
                Err(err) => {
                    if denied {
                        tracing::warn!(agent = %spec.name, tool = %call.name, error = %err, "tool call refused");
                    }
                    format!("error: {err}")
                }
            };
            let tool_event = ToolEvent {
                by: actor(&ctx),
                tool: &call.name,
                call_id: &call.id,
                ok: outcome.is_ok(),
                error: outcome.as_ref().err().map(ToString::to_string),
            };
            let event = if denied {
                AuditEvent::ToolDenied(tool_event)
            } else {
                AuditEvent::ToolCall(tool_event)
            };
            if let Err(err) = spec
                .store
                .apply(vec![EventLog::write(&ctx.group, &event)])
                .await
            {
                tracing::warn!(error = %err, "could not record a tool event");
            }
            ChatMessage::tool_result(call.id, content)
        }
    });
    let mut results: Vec<ChatMessage> = futures::stream::iter(runs)
        .buffered(spec.settings.tool_concurrency.max(1))
        .collect()
        .await;
    if !beyond.is_empty() {
        results.extend(refuse_flood(spec, &ctx, beyond).await);
    }
    results
}

/// Answers the calls beyond `max_tool_calls` "refused", and audits them as one event.
async fn refuse_flood(
    spec: &AgentSpec,
    ctx: &ToolContext,
    beyond: Vec<Decided>,
) -> Vec<ChatMessage> {
    /// Calls named in the audit event, and the characters kept of each id and name.
    const NAMED: usize = 8;
    const CHARS: usize = 64;
    let max = spec.settings.max_tool_calls;
    let refusal = format!("refused: more than max_tool_calls = {max} tool calls in one response");
    tracing::warn!(agent = %spec.name, max_tool_calls = max, refused = beyond.len(), "tool calls refused");
    let short = |text: &str| text.chars().take(CHARS).collect::<String>();
    let calls = beyond
        .iter()
        .take(NAMED)
        .map(|d| RefusedCall {
            call_id: short(&d.call.id),
            tool: short(&d.call.name),
        })
        .collect();
    let event = AuditEvent::ToolsRefused {
        by: actor(ctx),
        reason: "max_tool_calls",
        max_tool_calls: max,
        refused: beyond.len(),
        calls,
        ok: false,
        error: refusal.clone(),
    };
    if let Err(err) = spec
        .store
        .apply(vec![EventLog::write(&ctx.group, &event)])
        .await
    {
        tracing::warn!(error = %err, "could not record a tool event");
    }
    beyond
        .into_iter()
        .map(|d| ChatMessage::tool_result(d.call.id, refusal.clone()))
        .collect()
}

/// Who acts in a tool event.
fn actor(ctx: &ToolContext) -> Who<'_> {
    Who {
        thread: &ctx.thread,
        agent: &ctx.agent,
        user: &ctx.user,
    }
}

/// Tokens a request is expected to use, for token limits: its prompt (about four characters
/// per token) and its output bound (256 when unset).
fn estimate_tokens(request: &ChatRequest) -> u64 {
    let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
    prompt.div_ceil(4) as u64 + u64::from(request.max_tokens.unwrap_or(256))
}

/// A rough usage when the server reports none: about four characters per token.
fn estimate_usage(request: &ChatRequest, answer: &str) -> Usage {
    let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
    Usage {
        input_tokens: prompt.div_ceil(4) as u64,
        output_tokens: answer.len().div_ceil(4) as u64,
    }
}

/// A running agent: its actor and its settings (threads build the model context from them).
#[derive(Clone)]
pub struct AgentHandle {
    /// The agent actor.
    pub actor: troupe_runtime::ActorRef<AgentActor>,
    /// Its settings.
    pub settings: AgentSettings,
}

/// The agents of a daemon by name.
pub type AgentDirectory = HashMap<String, AgentHandle>;

#[cfg(test)]
mod tests;
