//! The caller's rate limits (`[limits.NAME]` named by the agent): one unit from request
//! limits and the estimated tokens from token limits before the call; after it, the token
//! limits are settled to what the call used, and a provider's `Retry-After` slows the
//! limiters down for as long as it asked.

use async_trait::async_trait;
use troupe_runtime::limit::{Limiters, Scope};
use troupe_runtime::store::Write;

use super::{Call, Layer, Outcome};
use crate::error::AgentError;

/// Takes and settles rate-limit units around a call.
pub struct LimitLayer {
    limiters: Limiters,
}

impl LimitLayer {
    /// Limits of `limiters`.
    pub fn new(limiters: Limiters) -> Self {
        LimitLayer { limiters }
    }
}

fn scope<'a>(call: &Call<'a>) -> Scope<'a> {
    Scope {
        group: call.group,
        user: Some(call.user),
    }
}

#[async_trait]
impl Layer for LimitLayer {
    async fn admit(&self, call: &Call<'_>) -> Result<(), AgentError> {
        self.limiters
            .acquire_call(call.limits, scope(call), call.estimated_tokens)
            .await?;
        Ok(())
    }

    async fn settle(&self, call: &Call<'_>, outcome: &Outcome<'_>, _: &mut Vec<Write>) {
        let used = match outcome {
            Outcome::Answered(record) => record.input_tokens + record.output_tokens,
            Outcome::Failed { .. } | Outcome::Refused => 0,
        };
        let (limits, scope) = (call.limits, scope(call));
        if let Err(err) = self
            .limiters
            .settle_call(limits, scope, call.estimated_tokens, used)
            .await
        {
            tracing::warn!(error = %err, "could not settle rate-limit units");
        }
        // The provider answered 429: hold the limits for as long as it asked.
        let Outcome::Failed { error, .. } = outcome else {
            return;
        };
        let Some(retry_after) = error.retry_after() else {
            return;
        };
        for name in limits {
            let penalized = match self.limiters.key_for(name, scope) {
                Ok(key) => self.limiters.penalize(name, &key, retry_after).await,
                Err(e) => Err(e),
            };
            if let Err(e) = penalized {
                tracing::warn!(limit = %name, error = %e, "could not slow the limiter down");
            }
        }
    }
}
