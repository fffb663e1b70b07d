//! Usage and cost: every model call is recorded by group, and totals are queried by period,
//! model and agent. Optional per-group daily budgets stop calls before they reach the model.
//!
//! Layout: one hash per group and UTC day, `usage:{group}:{YYYY-MM-DD}`, whose integer fields
//! are counters: one set per model and agent, `pair:{model}:{agent}:` followed by `calls`,
//! `input_tokens`, `output_tokens` or `cost_nanos`. The totals, by model and by agent, are
//! sums of the pairs when read. Costs are kept in nano-dollars to stay integral. Hashes
//! written before the pairs (until December 2026) hold the twelve counters `calls`…,
//! `model:{name}:calls`… and `agent:{name}:calls`…; they are read too, and added to the
//! pairs, so a day written by both kinds of daemon adds up.
//!
//! A call's usage goes in the call's own batch (with its audit event). For a group with a
//! budget, and on the memory store, that batch increments the four counters (`HINCRBY`),
//! so the budget check reads them exact. For the other groups on Redis it appends one entry
//! to the usage log ([`log`]), which the [`tally`] folds into the counters in batches, so
//! thousands of calls of a pair cost four increments a fold instead of four each. A report
//! reads the counters and the log not yet folded, so it is exact either way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_runtime::key_name::join;
use troupe_runtime::store::{Store, Write};

use crate::error::AgentError;
use crate::model::{ModelError, Usage};

pub mod log;
pub mod tally;

use self::log::{Counted, FOLDS, FOLDS_FIELD, LOG};
pub use self::tally::{fold, Folded, UsageTally};

/// How long daily usage hashes are kept.
pub(crate) const RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);
const NANOS_PER_DOLLAR: f64 = 1e9;

/// Prices of a model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    /// Per million prompt tokens.
    pub input_per_million: f64,
    /// Per million generated tokens.
    pub output_per_million: f64,
}

impl Prices {
    /// The cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_million
            + usage.output_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

/// One model call's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// The agent that called.
    pub agent: String,
    /// The thread it ran for.
    pub thread: String,
    /// The configured model (`[models.NAME]`).
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Wall time of the call, retries included.
    pub latency_ms: u64,
    /// Cost in dollars from the model's prices.
    pub cost: f64,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Totals over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Model calls.
    pub calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cost in dollars.
    pub cost: f64,
}

/// A group's usage over a period, in all and by model and agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Everything.
    pub total: Totals,
    /// By configured model.
    pub by_model: BTreeMap<String, Totals>,
    /// By agent.
    pub by_agent: BTreeMap<String, Totals>,
}

/// A group's daily budget; a limit of `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    /// Tokens (input + output) per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Dollars per UTC day.
    pub cost_per_day: Option<f64>,
}

impl From<&troupe_config::BudgetSettings> for Budget {
    fn from(settings: &troupe_config::BudgetSettings) -> Self {
        Budget {
            tokens_per_day: settings.tokens_per_day,
            cost_per_day: settings.cost_per_day,
        }
    }
}

/// Records and queries usage. Cheap to clone.
#[derive(Clone)]
pub struct UsageLedger {
    store: Arc<dyn Store>,
    budgets: Arc<BTreeMap<String, Budget>>,
    /// Whether calls of groups without a budget go to the usage log (on Redis).
    logged: bool,
}

/// How many times a report reads the log and the counters again when a fold came between.
const REPORT_TRIES: usize = 5;

impl UsageLedger {
    /// A ledger over `store` enforcing `budgets` (by group).
    pub fn new(store: Arc<dyn Store>, budgets: BTreeMap<String, Budget>) -> Self {
        let logged = store.backend() == "redis";
        UsageLedger {
            store,
            budgets: Arc::new(budgets),
            logged,
        }
    }

    /// Whether this ledger appends calls to the usage log (Redis), which a [`UsageTally`]
    /// must then fold.
    pub fn is_logged(&self) -> bool {
        self.logged
    }

    /// The writes that record `record` (to batch with other writes of the same call): its
    /// counters, or its usage log entry (see the module's doc).
    pub fn writes(&self, record: &UsageRecord) -> Vec<Write> {
        let counted = Counted {
            key: day_key(&record.group, day_of(record.at_ms)),
            pair: join(&["pair:", &record.model, ":", &record.agent, ":"]),
            calls: 1,
            input: i64::try_from(record.input_tokens).unwrap_or(i64::MAX),
            output: i64::try_from(record.output_tokens).unwrap_or(i64::MAX),
            cost_nanos: (record.cost * NANOS_PER_DOLLAR).round() as i64,
        };
        if self.logged && !self.budgets.contains_key(&record.group) {
            vec![counted.log_write()]
        } else {
            counted.counter_writes()
        }
    }

    /// Fails with [`ModelError::BudgetExceeded`] if `group` has spent today's budget.
    pub async fn check_budget(&self, group: &str) -> Result<(), AgentError> {
        let Some(budget) = self.budgets.get(group).copied() else {
            return Ok(());
        };
        let today = self
            .day_totals(group, day_of(crate::thread_store::now_ms()))
            .await?;
        let tokens = today.total.input_tokens + today.total.output_tokens;
        if let Some(max) = budget.tokens_per_day {
            if tokens >= max {
                return Err(ModelError::BudgetExceeded {
                    scope: format!("group {group}"),
                    message: format!("{tokens} tokens used today, budget {max}"),
                }
                .into());
            }
        }
        if let Some(max) = budget.cost_per_day {
            if today.total.cost >= max {
                return Err(ModelError::BudgetExceeded {
                    scope: format!("group {group}"),
                    message: format!("${:.6} spent today, budget ${max}", today.total.cost),
                }
                .into());
            }
        }
        Ok(())
    }

    /// `group`'s usage over the UTC days `from..=to` (days since the epoch; see [`day_of`]):
    /// the counters and, on Redis, the calls in the usage log not yet folded into them. A fold
    /// between the two reads makes it read again; after five reads in a row with a
    /// fold between (folds come once a second), the last is returned, which may count one
    /// fold's calls twice or not at all.
    pub async fn report(&self, group: &str, from: i64, to: i64) -> Result<UsageReport, AgentError> {
        if !self.logged {
            return self.counted(group, from, to).await;
        }
        let keys: std::collections::HashSet<String> =
            (from..=to).map(|day| day_key(group, day)).collect();
        let mut tries = 0;
        loop {
            // A fold moves calls from the log to the counters in one batch and counts itself:
            // if the count is the same after both reads, no call was read twice or missed.
            let before = self.store.hget(FOLDS, FOLDS_FIELD).await?;
            let pending = self.pending(&keys).await?;
            let mut report = self.counted(group, from, to).await?;
            tries += 1;
            if self.store.hget(FOLDS, FOLDS_FIELD).await? == before || tries == REPORT_TRIES {
                for counted in pending {
                    for (name, n) in counted.deltas() {
                        add_field(&mut report, &join(&[&counted.pair, name]), n);
                    }
                }
                return Ok(report);
            }
        }
    }

    /// The calls in the usage log for the day hashes `keys`.
    async fn pending(
        &self,
        keys: &std::collections::HashSet<String>,
    ) -> Result<Vec<Counted>, AgentError> {
        let mut pending = Vec::new();
        let mut after = "0".to_owned();
        loop {
            let entries = self.store.xread(LOG, &after, tally::BATCH, None).await?;
            let Some(last) = entries.last() else {
                return Ok(pending);
            };
            after = last.id.clone();
            let full = entries.len() == tally::BATCH;
            pending.extend(
                entries
                    .iter()
                    .filter_map(|entry| Counted::parse(entry).ok())
                    .filter(|counted| keys.contains(&counted.key)),
            );
            if !full {
                return Ok(pending);
            }
        }
    }

    /// The counters of `group` over the days `from..=to`.
    async fn counted(&self, group: &str, from: i64, to: i64) -> Result<UsageReport, AgentError> {
        let mut report = UsageReport::default();
        for day in from..=to {
            let one = self.day_totals(group, day).await?;
            add(&mut report.total, &one.total);
            for (name, t) in one.by_model {
                add(report.by_model.entry(name).or_default(), &t);
            }
            for (name, t) in one.by_agent {
                add(report.by_agent.entry(name).or_default(), &t);
            }
        }
        Ok(report)
    }

    async fn day_totals(&self, group: &str, day: i64) -> Result<UsageReport, AgentError> {
        let mut report = UsageReport::default();
        for (field, value) in self.store.hgetall(&day_key(group, day)).await? {
            let n: i64 = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            add_field(&mut report, &field, n);
        }
        Ok(report)
    }
}

/// Adds the value `n` of a day hash's `field` to `report`.
fn add_field(report: &mut UsageReport, field: &str, n: i64) {
    let parts: Vec<&str> = field.split(':').collect();
    match parts.as_slice() {
        ["pair", model, agent, name] => {
            count(&mut report.total, name, n);
            count(
                report.by_model.entry((*model).to_owned()).or_default(),
                name,
                n,
            );
            count(
                report.by_agent.entry((*agent).to_owned()).or_default(),
                name,
                n,
            );
        }
        // Written before the pairs.
        [name] => count(&mut report.total, name, n),
        ["model", model, name] => {
            count(
                report.by_model.entry((*model).to_owned()).or_default(),
                name,
                n,
            );
        }
        ["agent", agent, name] => {
            count(
                report.by_agent.entry((*agent).to_owned()).or_default(),
                name,
                n,
            );
        }
        _ => {}
    }
}

/// Adds counter `name`'s value `n` to `totals`.
fn count(totals: &mut Totals, name: &str, n: i64) {
    match name {
        "calls" => totals.calls += n.max(0) as u64,
        "input_tokens" => totals.input_tokens += n.max(0) as u64,
        "output_tokens" => totals.output_tokens += n.max(0) as u64,
        "cost_nanos" => totals.cost += n as f64 / NANOS_PER_DOLLAR,
        _ => {}
    }
}

fn add(into: &mut Totals, t: &Totals) {
    into.calls += t.calls;
    into.input_tokens += t.input_tokens;
    into.output_tokens += t.output_tokens;
    into.cost += t.cost;
}

/// The UTC day (days since 1970-01-01) of a time in ms since the epoch.
pub fn day_of(ms: u64) -> i64 {
    (ms / 86_400_000) as i64
}

fn day_key(group: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    if !(0..=9999).contains(&y) {
        return format!("usage:{group}:{y:04}-{m:02}-{d:02}");
    }
    // Built on every call: by hand, not with `format!`'s padding.
    let mut key = String::with_capacity(17 + group.len());
    key.push_str("usage:");
    key.push_str(group);
    key.push(':');
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    let y = y as u32;
    key.extend([digit(y / 1000), digit(y / 100), digit(y / 10), digit(y)]);
    key.extend(['-', digit(m / 10), digit(m), '-', digit(d / 10), digit(d)]);
    key
}

/// Howard Hinnant's days-to-civil algorithm: (year, month, day) of a day since the epoch.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, agent: &str, input_tokens: u64) -> UsageRecord {
        UsageRecord {
            group: "acme".into(),
            user: "u".into(),
            agent: agent.into(),
            thread: "t".into(),
            model: model.into(),
            input_tokens,
            output_tokens: 1,
            latency_ms: 1,
            cost: 0.5,
            at_ms: 1_795_219_200_000,
        }
    }

    #[tokio::test]
    async fn pairs_add_up_by_model_and_agent_and_with_counters_written_before_them() {
        let store: Arc<dyn Store> = Arc::new(troupe_runtime::store::MemoryStore::new());
        let ledger = UsageLedger::new(store.clone(), BTreeMap::new());
        for r in [
            record("m1", "a", 10),
            record("m1", "b", 20),
            record("m2", "a", 30),
        ] {
            let writes = ledger.writes(&r);
            assert_eq!(writes.len(), 5, "four counters and the expiry");
            store.apply(writes).await.expect("apply");
        }
        // A call recorded by an older daemon the same day: its twelve counters.
        let day = day_key("acme", day_of(1_795_219_200_000));
        for (field, n) in [
            ("calls", 1),
            ("input_tokens", 40),
            ("model:m2:calls", 1),
            ("model:m2:input_tokens", 40),
            ("agent:b:calls", 1),
            ("agent:b:input_tokens", 40),
        ] {
            store.hincr_by(&day, field, n).await.expect("hincrby");
        }
        let day = day_of(1_795_219_200_000);
        let report = ledger.report("acme", day, day).await.expect("report");
        assert_eq!(report.total.calls, 4);
        assert_eq!(report.total.input_tokens, 100);
        assert_eq!(report.total.output_tokens, 3);
        assert!((report.total.cost - 1.5).abs() < 1e-9);
        assert_eq!(report.by_model["m1"].calls, 2);
        assert_eq!(report.by_model["m1"].input_tokens, 30);
        assert_eq!(report.by_model["m2"].calls, 2);
        assert_eq!(report.by_model["m2"].input_tokens, 70);
        assert_eq!(report.by_agent["a"].input_tokens, 40);
        assert_eq!(report.by_agent["b"].calls, 2);
        assert_eq!(report.by_agent["b"].input_tokens, 60);
    }

    #[test]
    fn days_map_to_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        assert_eq!(
            day_key("g", day_of(1_795_219_200_000 + 3_600_000)),
            "usage:g:2026-11-21"
        );
    }
}
