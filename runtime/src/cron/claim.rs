//! The claim of a cron's tick, kept in `cron:{name}:last`: the latest tick claimed, by whom,
//! and whether it has been decided (fired or skipped).
//!
//! ```text
//! "{tick}"                               decided (as written before claims had holders)
//! "{tick} decided {holder}"              fired or skipped by `holder`
//! "{tick} claimed {until_ms} {holder}"   claimed by `holder`, which decides it before `until_ms`
//! ```
//!
//! To fire tick `T` a daemon moves the key by compare-and-set to "`T` claimed", takes the
//! running lease, then moves the key from its own claim to "`T` decided" before it invokes
//! the target. A claim still undecided at `until_ms` — its daemon died, or cannot reach the
//! store — is taken over by the next daemon that looks at `T`; an undecided claim of an
//! earlier tick is superseded by the claim of a later one, and whoever supersedes it records
//! it as failed. So a claimed tick is fired, skipped or recorded as failed, never lost
//! without a trace; and only the holder of the claim can decide it, so it fires once.

/// What `cron:{name}:last` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Last {
    /// Tick `tick` was fired or skipped (`holder` is `None` in values of older versions).
    Decided { tick: u64, holder: Option<String> },
    /// Tick `tick` is claimed by `holder`, which must decide it before `until_ms`.
    Claimed {
        tick: u64,
        until_ms: u64,
        holder: String,
    },
}

impl Last {
    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            Last::Decided { tick, holder: None } => tick.to_string(),
            Last::Decided {
                tick,
                holder: Some(holder),
            } => format!("{tick} decided {holder}"),
            Last::Claimed {
                tick,
                until_ms,
                holder,
            } => format!("{tick} claimed {until_ms} {holder}"),
        }
        .into_bytes()
    }

    /// The value read back; `None` if it is not one this module writes.
    pub(super) fn decode(bytes: &[u8]) -> Option<Last> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, ' ');
        let tick = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Last::Decided { tick, holder: None }),
            (Some("decided"), Some(holder)) => Some(Last::Decided {
                tick,
                holder: Some(holder.to_owned()),
            }),
            (Some("claimed"), Some(rest)) => {
                let (until_ms, holder) = rest.split_once(' ')?;
                Some(Last::Claimed {
                    tick,
                    until_ms: until_ms.parse().ok()?,
                    holder: holder.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// When the claim's holder must have decided it (0 for a decided tick).
    pub(super) fn until_ms(&self) -> u64 {
        match self {
            Last::Claimed { until_ms, .. } => *until_ms,
            Last::Decided { .. } => 0,
        }
    }
}

/// What a daemon that wants to fire `tick` should do, given what the key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The key already holds this daemon's claim (a retried claim whose first try landed).
    Ours,
    /// Decided, or claimed for a later tick: not this daemon's to fire.
    Taken,
    /// Claimed by another daemon, which may still decide it before `until_ms`.
    Held { until_ms: u64 },
    /// Claim it. `superseded`: the undecided claim this replaces (its tick and holder) — of
    /// this tick past its time (a takeover), or of an earlier tick (to record as failed).
    Claim { superseded: Option<(u64, String)> },
}

/// Decides what `holder` should do about `tick` at `now_ms`, given the key's value `seen`.
pub(super) fn judge(seen: Option<&Last>, tick: u64, holder: &str, now_ms: u64) -> Verdict {
    match seen {
        None => Verdict::Claim { superseded: None },
        Some(Last::Decided { tick: seen, .. }) if *seen >= tick => Verdict::Taken,
        Some(Last::Decided { .. }) => Verdict::Claim { superseded: None },
        Some(Last::Claimed { tick: seen, .. }) if *seen > tick => Verdict::Taken,
        Some(Last::Claimed {
            tick: seen,
            holder: other,
            ..
        }) if *seen == tick && other == holder => Verdict::Ours,
        Some(Last::Claimed {
            tick: seen,
            until_ms,
            ..
        }) if *seen == tick && now_ms < *until_ms => Verdict::Held {
            until_ms: *until_ms,
        },
        Some(Last::Claimed {
            tick: seen,
            holder: other,
            ..
        }) => Verdict::Claim {
            superseded: Some((*seen, other.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(tick: u64, until_ms: u64, holder: &str) -> Last {
        Last::Claimed {
            tick,
            until_ms,
            holder: holder.to_owned(),
        }
    }

    #[test]
    fn values_round_trip_and_old_ones_read_as_decided() {
        for last in [
            claimed(1_000, 2_000, "d1-0000abcd:1000"),
            Last::Decided {
                tick: 1_000,
                holder: Some("d1-0000abcd:1000".into()),
            },
            Last::Decided {
                tick: 7,
                holder: None,
            },
        ] {
            assert_eq!(Last::decode(&last.encode()), Some(last));
        }
        assert_eq!(
            Last::decode(b"1500"),
            Some(Last::Decided {
                tick: 1_500,
                holder: None
            })
        );
        assert_eq!(Last::decode(b"x"), None);
        assert_eq!(Last::decode(b"1 claimed soon d1"), None);
    }

    #[test]
    fn a_claim_is_taken_over_after_its_time_and_superseded_by_a_later_tick() {
        let check = |seen: Option<Last>, now: u64, expected: Verdict| {
            assert_eq!(judge(seen.as_ref(), 10, "me", now), expected, "{seen:?}");
        };
        let decided = |tick| Last::Decided { tick, holder: None };
        check(None, 0, Verdict::Claim { superseded: None });
        check(Some(decided(9)), 0, Verdict::Claim { superseded: None });
        check(Some(decided(10)), 0, Verdict::Taken);
        check(Some(decided(11)), 0, Verdict::Taken);
        check(Some(claimed(11, 99, "other")), 0, Verdict::Taken);
        check(Some(claimed(10, 99, "me")), 500, Verdict::Ours);
        check(
            Some(claimed(10, 99, "other")),
            98,
            Verdict::Held { until_ms: 99 },
        );
        check(
            Some(claimed(10, 99, "other")),
            99,
            Verdict::Claim {
                superseded: Some((10, "other".into())),
            },
        );
        check(
            Some(claimed(9, 99, "other")),
            0,
            Verdict::Claim {
                superseded: Some((9, "other".into())),
            },
        );
    }
}
