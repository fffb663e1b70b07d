//! The group's daily budget (`[budgets.GROUP]`): a call is refused once the group has spent
//! today's tokens or cost.

use async_trait::async_trait;
use troupe_runtime::store::Write;

use super::{Call, Layer, Outcome};
use crate::error::AgentError;
use crate::usage::UsageLedger;

/// Refuses calls of a group past its budget ([`UsageLedger::check_budget`]).
pub struct BudgetLayer {
    ledger: UsageLedger,
}

impl BudgetLayer {
    /// Budgets of `ledger`.
    pub fn new(ledger: UsageLedger) -> Self {
        BudgetLayer { ledger }
    }
}

#[async_trait]
impl Layer for BudgetLayer {
    async fn admit(&self, call: &Call<'_>) -> Result<(), AgentError> {
        self.ledger.check_budget(call.group).await
    }

    async fn settle(&self, _: &Call<'_>, _: &Outcome<'_>, _: &mut Vec<Write>) {}
}
