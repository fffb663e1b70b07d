//! Building a [`Limit`] from its settings: the split over shards, the interval between units,
//! a window's origin, the engine for its backend and kind, and the settings it refuses
//! ([`LimitError::Settings`]).

use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use troupe_config::{LimitBackend, LimitKind, LimitSettings};

use super::distributed::Distributed;
use super::engine::{Engine, Limit, Pace};
use super::local::{LimitClock, LocalBucket};
use super::window::LocalWindow;
use super::LimitError;
use crate::rate::gcra::Gcra;
use crate::rate::window::Window;
use crate::rate::RateAlgorithm;
use crate::store::Store;

impl Limit {
    pub(super) fn build(
        name: &str,
        s: &LimitSettings,
        store: &Arc<dyn Store>,
        clock: &LimitClock,
    ) -> Result<Limit, LimitError> {
        let settings_error = |message: String| LimitError::Settings {
            limit: name.to_owned(),
            message,
        };
        let shards = s.shards.max(1);
        let total = match s.kind {
            LimitKind::TokenBucket { capacity } => capacity,
            LimitKind::FixedWindow { .. } => s.rate,
        };
        let capacity = total / u64::from(shards);
        let rate = s.rate / u64::from(shards);
        if capacity == 0 || rate == 0 {
            return Err(settings_error(format!(
                "{shards} shards need a rate and capacity of at least {shards}"
            )));
        }
        let period_ns = s.period.as_nanos().max(1);
        let interval_ns = u64::try_from(period_ns.div_ceil(u128::from(rate))).unwrap_or(u64::MAX);
        let kind = match s.kind {
            LimitKind::TokenBucket { .. } => "tb",
            LimitKind::FixedWindow { .. } => "fw",
        };
        let origin = match &s.kind {
            LimitKind::FixedWindow { start: Some(start) } => {
                humantime::parse_rfc3339_weak(start.trim())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .ok_or_else(|| {
                        settings_error(format!(
                        "start {start:?} is not an RFC 3339 time at or after 1970-01-01T00:00:00Z"
                    ))
                    })?
            }
            _ => Duration::ZERO,
        };
        let (engine, pace) = match (s.backend, &s.kind) {
            (LimitBackend::Local, LimitKind::TokenBucket { .. }) => {
                let burst = u32::try_from(capacity)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        settings_error(format!(
                            "a local token bucket holds at most {} units per shard",
                            u32::MAX
                        ))
                    })?;
                // The furthest a key's time may run ahead (a full bucket, everything reserved
                // and a charge on top) must stay far inside governor's u64 nanoseconds.
                let horizon = u128::from(interval_ns)
                    * (u128::from(capacity) * 2 + u128::from(s.max_reserved));
                if horizon > u128::from(u64::MAX / 4) {
                    return Err(settings_error(
                        "period, capacity and max_reserved span too long a time".to_owned(),
                    ));
                }
                let gcra = Gcra {
                    interval: interval_ns,
                    capacity,
                };
                let bucket = LocalBucket::new(gcra, burst, clock.clone())
                    .ok_or_else(|| settings_error("the period is too short".to_owned()))?;
                (
                    Engine::Bucket(bucket),
                    Pace::PerUnit(Duration::from_nanos(interval_ns)),
                )
            }
            (LimitBackend::Local, LimitKind::FixedWindow { .. }) => {
                let window = Window {
                    period: u64::try_from(period_ns).unwrap_or(u64::MAX),
                    origin: i64::try_from(origin.as_nanos()).unwrap_or(i64::MAX),
                    limit: rate,
                };
                let pace = Pace::Window {
                    period: s.period,
                    limit: rate,
                };
                (
                    Engine::Window(LocalWindow::new(window, clock.clone())),
                    pace,
                )
            }
            (LimitBackend::Redis, LimitKind::TokenBucket { .. }) => {
                let interval = Duration::from_nanos(interval_ns);
                let algorithm = RateAlgorithm::Gcra { interval, capacity };
                let engine = Distributed::new(store.clone(), algorithm, s.on_store_error);
                (Engine::Distributed(engine), Pace::PerUnit(interval))
            }
            (LimitBackend::Redis, LimitKind::FixedWindow { .. }) => {
                let algorithm = RateAlgorithm::FixedWindow {
                    period: s.period,
                    origin,
                    limit: rate,
                };
                let engine = Distributed::new(store.clone(), algorithm, s.on_store_error);
                let pace = Pace::Window {
                    period: s.period,
                    limit: rate,
                };
                (Engine::Distributed(engine), pace)
            }
        };
        Ok(Limit {
            name: name.to_owned(),
            settings: s.clone(),
            engine,
            capacity,
            max_reserved: s.max_reserved / u64::from(shards),
            pace,
            shards,
            next_shard: AtomicU32::new(0),
            store_prefix: format!("limit:{name}:{kind}:"),
        })
    }
}
