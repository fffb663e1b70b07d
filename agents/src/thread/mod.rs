//! The thread actor: one live conversation thread, persisted in the store.
//!
//! It takes [`Turn`] (a user message answered by an agent), [`Approve`] (resume a turn paused
//! for a tool approval), [`ReadMessages`], [`Archive`] and [`Delete`]. Threads are entities of
//! a [`Registry`](troupe_runtime::Registry), which supervises them: it activates a thread on
//! its first message, passivates it when idle, and deactivates it if it panics.
//!
//! Turns, approvals, archive and delete are handled one at a time (`AtomicResponse`): concurrent
//! messages to one thread are serialized, and user, assistant, tool-call and tool-result
//! messages are persisted in order. Across daemons, each of them runs under the thread's turn
//! lease (`crate::thread_lease`) and first brings what the actor remembers (metadata,
//! pending approval, the recent messages) up to date with the store, so a thread continued on
//! any daemon numbers its messages contiguously and gives its model every earlier message.
//!
//! The registry delivers each message as `Traced` with its sender's span: a turn runs in a
//! `thread.turn` span (`group`, `thread`, `agent`) under it, and hands that span on to the
//! agent with [`RunAgent`](crate::agent::RunAgent) (see [`troupe_runtime::trace`]).
//!
//! - `messages.rs`: what a thread takes and answers ([`Turn`], [`Approve`], [`TurnOutcome`]…);
//! - `actor.rs`: [`ThreadActor`] and its handlers, each change under the turn lease;
//! - `state.rs`: what the actor remembers of its thread and how it is checked against the
//!   store, and the persisted pending approval;
//! - `turn.rs`: how a turn (or a resumed or one-shot turn) runs: the model context, the agent
//!   called, its messages and events persisted.

mod actor;
mod messages;
mod state;
mod turn;

pub use actor::ThreadActor;
pub use messages::{
    Approve, Archive, Delete, MessagePage, ReadMessages, StreamStart, StreamStarted, Turn,
    TurnOutcome, TurnStatus,
};
pub(crate) use turn::{fresh, one_shot, OwnTurn};
