//! `[budgets.GROUP]`: a tenant group's daily spending limits on model calls.

/// A group's daily budget (UTC days); `None` is unlimited. Over budget, model calls fail with
/// `BudgetExceeded` before reaching the model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BudgetSettings {
    /// Input plus output tokens per day.
    pub tokens_per_day: Option<u64>,
    /// Dollars per day, from the models' prices.
    pub cost_per_day: Option<f64>,
}
