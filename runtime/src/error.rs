//! Errors of the actor runtime: what a sender learns when its message could not be handled.

use std::time::Duration;

use crate::retry::Transient;

/// Why a message to an actor got no reply.
///
/// Every variant names the actor, so a log line or a task's error says where it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The actor panicked while handling this (or an earlier, still unanswered) message. It
    /// was restarted with fresh state (supervised children) or deactivated (entities).
    #[error("actor {actor} panicked: {message}")]
    Panicked {
        /// The actor's name.
        actor: String,
        /// The panic message.
        message: String,
    },
    /// The actor stopped (or was being restarted) before it answered; retrying may succeed.
    #[error("actor {actor} stopped before answering")]
    Stopped {
        /// The actor's name.
        actor: String,
    },
    /// The actor failed and its supervisor gave up restarting it.
    #[error("actor {actor} failed: {reason}")]
    Failed {
        /// The actor's name.
        actor: String,
        /// What its supervisor or the actor itself reported.
        reason: String,
    },
    /// The actor's mailbox is full; the message was not delivered (backpressure).
    #[error("actor {actor} is overloaded: mailbox full")]
    MailboxFull {
        /// The actor's name.
        actor: String,
    },
    /// No reply within the given time; the message may still be handled.
    #[error("actor {actor} did not answer within {after:?}")]
    Timeout {
        /// The actor's name.
        actor: String,
        /// The time waited.
        after: Duration,
    },
}

impl Transient for ActorError {
    /// Everything but an actor its supervisor gave up on: the restarted or re-activated actor
    /// may answer.
    fn is_retryable(&self) -> bool {
        match self {
            ActorError::Panicked { .. }
            | ActorError::Stopped { .. }
            | ActorError::MailboxFull { .. }
            | ActorError::Timeout { .. } => true,
            ActorError::Failed { .. } => false,
        }
    }
}
