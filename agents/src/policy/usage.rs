//! The usage counters of an answered call (`usage:{group}:{day}`, see [`crate::usage`]).

use async_trait::async_trait;
use troupe_runtime::store::Write;

use super::{Call, Layer, Outcome};
use crate::usage::UsageLedger;

/// Adds an answered call's usage to the group's daily counters.
pub struct UsageLayer {
    ledger: UsageLedger,
}

impl UsageLayer {
    /// Counters of `ledger`.
    pub fn new(ledger: UsageLedger) -> Self {
        UsageLayer { ledger }
    }
}

#[async_trait]
impl Layer for UsageLayer {
    async fn settle(&self, _: &Call<'_>, outcome: &Outcome<'_>, batch: &mut Vec<Write>) {
        if let Outcome::Answered(record) = outcome {
            batch.extend(self.ledger.writes(record));
        }
    }
}
