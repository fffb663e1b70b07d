//! [`Store::rate_limit`](crate::store::Store::rate_limit) in the memory store: the same
//! arithmetic as the Redis scripts (`crate::rate`), in the same microsecond units, on a
//! string (token bucket: the theoretical arrival time) or a hash (fixed window) that expires
//! once its state no longer matters.

use std::time::Duration;

use tokio::time::Instant;

use super::keyspace::{parse_int, Keyspace};
use super::{Entry, Value};
use crate::rate::gcra::Op;
use crate::store::micros::{self, Micros, MicrosAlgorithm};
use crate::store::{RateOutcome, StoreError, StoreResult};

impl Keyspace {
    /// Applies the checked rate-limit operation `params` to the counter at `key`.
    pub(super) fn rate_limit(
        &mut self,
        key: &str,
        params: &Micros,
        now: Instant,
    ) -> StoreResult<RateOutcome> {
        let not_integer = || StoreError::NotInteger {
            op: "rate_limit",
            key: key.to_owned(),
        };
        let outcome = match params.algorithm {
            MicrosAlgorithm::Gcra(gcra) => {
                let now_us = micros::micros_since_base(now);
                let tat = match self.bytes("rate_limit", key, now)? {
                    None => None,
                    Some(b) => Some(parse_int(b).ok_or_else(not_integer)?),
                };
                let ahead = tat.map_or(0, |t| u64::try_from(t.saturating_sub(now_us)).unwrap_or(0));
                let (outcome, next) = gcra.step(ahead, params.op);
                if next != ahead {
                    if next == 0 {
                        self.map.remove(key);
                    } else {
                        let tat = now_us.saturating_add(i64::try_from(next).unwrap_or(i64::MAX));
                        let entry = Entry {
                            value: Value::Bytes(tat.to_string().into_bytes()),
                            expires_at: Some(now + Duration::from_micros(next)),
                        };
                        self.insert(key, entry);
                    }
                }
                outcome
            }
            MicrosAlgorithm::Window(window) => {
                let now_us = micros::unix_micros();
                let state = match self.hash_mut("rate_limit", key, now, false)? {
                    None => None,
                    Some(h) => Some(
                        micros::window_from_fields(|f| h.get(f).and_then(|v| parse_int(v)))
                            .ok_or_else(not_integer)?,
                    ),
                };
                let (outcome, next) = window.step(state, now_us, params.op);
                let peek = matches!(params.op, Op::Peek { .. });
                match next {
                    _ if peek => {}
                    None => {
                        self.map.remove(key);
                    }
                    Some(state) => {
                        let fields = micros::window_fields(&state)
                            .into_iter()
                            .map(|(f, v)| (f.to_owned(), v.into_bytes()))
                            .collect();
                        let entry = Entry {
                            value: Value::Hash(fields),
                            expires_at: Some(now + Duration::from_micros(outcome.reset_after)),
                        };
                        self.insert(key, entry);
                    }
                }
                outcome
            }
        };
        Ok(micros::outcome_from_micros(outcome))
    }
}
