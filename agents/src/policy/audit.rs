//! The audit event of an answered call: a `usage` event with its usage record, on the group's
//! event stream (see [`crate::events`]).

use async_trait::async_trait;
use troupe_runtime::store::Write;

use super::{Call, Layer, Outcome};
use crate::events::{AuditEvent, EventLog};

/// Audits every answered call.
pub struct AuditLayer;

#[async_trait]
impl Layer for AuditLayer {
    async fn settle(&self, _: &Call<'_>, outcome: &Outcome<'_>, batch: &mut Vec<Write>) {
        if let Outcome::Answered(record) = outcome {
            batch.push(EventLog::write(&record.group, &AuditEvent::Usage(record)));
        }
    }
}
