//! The usage log: on Redis, an answered call of a group without a budget appends one entry to
//! the `usage-log` stream, in the call's own batch, instead of incrementing its four counters.
//! The tally ([`super::tally`]) folds the log into the day hashes in batches: one batch adds
//! the summed counters, deletes the folded entries and counts the fold, so a call is in the
//! log or in the counters, never in both and never in neither.
//!
//! An entry's fields: `k` the day hash (`usage:{group}:{YYYY-MM-DD}`), `p` the pair prefix
//! (`pair:{model}:{agent}:`), `i` input tokens, `o` output tokens, `c` cost in nano-dollars.
//! Anyone who can write to Redis can append to the log: an entry that is not of this form is
//! dropped by the fold (with a warning naming it), and one that would add to a key outside the
//! usage hashes is never applied.

use std::collections::BTreeMap;

use troupe_runtime::key_name::join;
use troupe_runtime::store::{EntryId, StreamEntry, Trim, Write};

use super::RETENTION;

/// The stream of calls not yet folded into the counters.
pub(crate) const LOG: &str = "usage-log";
/// The hash whose field [`FOLDS_FIELD`] counts the folds, so a reader of the log and the
/// counters can tell whether a fold came between its reads.
pub(crate) const FOLDS: &str = "usage-tally";
pub(crate) const FOLDS_FIELD: &str = "folds";
/// The log's bound if no daemon folds it for that long (the oldest calls are then lost).
const MAX_LEN: u64 = 1_000_000;

/// One call's counter deltas, or several calls' summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The day hash.
    pub key: String,
    /// The pair prefix, `pair:{model}:{agent}:`.
    pub pair: String,
    pub calls: i64,
    pub input: i64,
    pub output: i64,
    pub cost_nanos: i64,
}

impl Counted {
    /// The deltas by counter name (what follows the pair prefix in a day hash's field).
    pub fn deltas(&self) -> [(&'static str, i64); 4] {
        [
            ("calls", self.calls),
            ("input_tokens", self.input),
            ("output_tokens", self.output),
            ("cost_nanos", self.cost_nanos),
        ]
    }

    /// The writes that add these deltas to the day hash, with its expiry.
    pub fn counter_writes(&self) -> Vec<Write> {
        let mut writes = Vec::with_capacity(5);
        for (field, delta) in self.deltas() {
            writes.push(Write::HIncrBy {
                key: self.key.clone(),
                field: join(&[&self.pair, field]),
                delta,
            });
        }
        writes.push(Write::Expire {
            key: self.key.clone(),
            ttl: RETENTION,
        });
        writes
    }

    /// The log entry of one call.
    pub fn log_write(&self) -> Write {
        let fields = [
            ("k", self.key.clone().into_bytes()),
            ("p", self.pair.clone().into_bytes()),
            ("i", self.input.to_string().into_bytes()),
            ("o", self.output.to_string().into_bytes()),
            ("c", self.cost_nanos.to_string().into_bytes()),
        ];
        Write::XAdd {
            stream: LOG.to_owned(),
            fields: fields
                .into_iter()
                .map(|(name, value)| (name.as_bytes().to_vec(), value))
                .collect(),
            trim: Some(Trim::MaxLen(MAX_LEN)),
        }
    }

    /// The call a log entry records, or why the entry is not one.
    pub fn parse(entry: &StreamEntry) -> Result<Counted, String> {
        let text = |name: &'static str| {
            let bytes = entry
                .field(name)
                .ok_or_else(|| format!("no field {name:?}"))?;
            std::str::from_utf8(bytes).map_err(|_| format!("field {name:?} is not UTF-8"))
        };
        let number = |name: &'static str| {
            text(name)?
                .parse::<i64>()
                .map_err(|_| format!("field {name:?} is not an integer"))
        };
        let key = text("k")?;
        let pair = text("p")?;
        if !key.starts_with("usage:") || key.chars().any(char::is_whitespace) {
            return Err(format!("field \"k\" is not a usage hash: {key:?}"));
        }
        if !pair.starts_with("pair:") || !pair.ends_with(':') || pair.matches(':').count() != 3 {
            return Err(format!("field \"p\" is not a pair prefix: {pair:?}"));
        }
        let (input, output) = (number("i")?, number("o")?);
        if input < 0 || output < 0 {
            return Err("negative token counts".to_owned());
        }
        Ok(Counted {
            key: key.to_owned(),
            pair: pair.to_owned(),
            calls: 1,
            input,
            output,
            cost_nanos: number("c")?,
        })
    }
}

/// What one fold does: the counters of `entries` summed by day hash and pair, their deletion
/// from the log and the fold counted, as one batch; and the entries it drops as malformed,
/// with why.
pub(crate) fn fold(entries: &[StreamEntry]) -> (Vec<Write>, Vec<(EntryId, String)>) {
    let mut sums: BTreeMap<(&str, &str), Counted> = BTreeMap::new();
    let mut parsed = Vec::with_capacity(entries.len());
    let mut malformed = Vec::new();
    for entry in entries {
        match Counted::parse(entry) {
            Ok(counted) => parsed.push(counted),
            Err(why) => malformed.push((entry.id.clone(), why)),
        }
    }
    for counted in &parsed {
        let sum = sums
            .entry((&counted.key, &counted.pair))
            .or_insert_with(|| Counted {
                calls: 0,
                input: 0,
                output: 0,
                cost_nanos: 0,
                ..counted.clone()
            });
        sum.calls = sum.calls.saturating_add(counted.calls);
        sum.input = sum.input.saturating_add(counted.input);
        sum.output = sum.output.saturating_add(counted.output);
        sum.cost_nanos = sum.cost_nanos.saturating_add(counted.cost_nanos);
    }
    let mut writes: Vec<Write> = sums.values().flat_map(Counted::counter_writes).collect();
    writes.push(Write::XDel {
        stream: LOG.to_owned(),
        ids: entries.iter().map(|e| e.id.clone()).collect(),
    });
    writes.push(Write::HIncrBy {
        key: FOLDS.to_owned(),
        field: FOLDS_FIELD.to_owned(),
        delta: 1,
    });
    (writes, malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn call(id: &str, key: &str, pair: &str, input: &str) -> StreamEntry {
        entry(
            id,
            &[
                ("k", key),
                ("p", pair),
                ("i", input),
                ("o", "2"),
                ("c", "7"),
            ],
        )
    }

    #[test]
    fn a_log_entry_reads_back_as_the_call_it_records() {
        let counted = Counted {
            key: "usage:acme:2026-12-04".into(),
            pair: "pair:m:a:".into(),
            calls: 1,
            input: 10,
            output: 3,
            cost_nanos: 99,
        };
        let Write::XAdd { fields, .. } = counted.log_write() else {
            panic!("an XADD");
        };
        let read = StreamEntry {
            id: "1-0".into(),
            fields,
        };
        assert_eq!(Counted::parse(&read), Ok(counted));
    }

    #[test]
    fn a_fold_sums_by_hash_and_pair_deletes_every_entry_and_drops_the_malformed() {
        let day = "usage:acme:2026-12-04";
        let entries = vec![
            call("1-0", day, "pair:m:a:", "10"),
            call("2-0", day, "pair:m:a:", "5"),
            call("3-0", day, "pair:m:b:", "1"),
            call("4-0", "usage:globex:2026-12-04", "pair:m:a:", "4"),
            // Hostile: another key, a bad pair, a bad number, a missing field, raw bytes.
            call("5-0", "ingress:done:acme:t1", "pair:m:a:", "1"),
            call("6-0", day, "calls", "1"),
            call("7-0", day, "pair:m:a:", "lots"),
            entry("8-0", &[("k", day)]),
            StreamEntry {
                id: "9-0".into(),
                fields: vec![(b"k".to_vec(), vec![0xff, 0xfe])],
            },
        ];
        let (writes, malformed) = fold(&entries);
        let dropped: Vec<&str> = malformed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(dropped, ["5-0", "6-0", "7-0", "8-0", "9-0"]);
        let incr = |key: &str, field: &str| {
            writes.iter().find_map(|w| match w {
                Write::HIncrBy {
                    key: k,
                    field: f,
                    delta,
                } if k == key && f == field => Some(*delta),
                _ => None,
            })
        };
        assert_eq!(incr(day, "pair:m:a:calls"), Some(2));
        assert_eq!(incr(day, "pair:m:a:input_tokens"), Some(15));
        assert_eq!(incr(day, "pair:m:a:output_tokens"), Some(4));
        assert_eq!(incr(day, "pair:m:a:cost_nanos"), Some(14));
        assert_eq!(incr(day, "pair:m:b:calls"), Some(1));
        assert_eq!(
            incr("usage:globex:2026-12-04", "pair:m:a:input_tokens"),
            Some(4)
        );
        assert_eq!(incr(FOLDS, FOLDS_FIELD), Some(1));
        let touched: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::HIncrBy { key, .. } | Write::Expire { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .filter(|key| *key != FOLDS)
            .collect();
        assert!(
            touched.iter().all(|key| key.starts_with("usage:")),
            "{touched:?}"
        );
        let deleted = writes.iter().find_map(|w| match w {
            Write::XDel { ids, .. } => Some(ids.len()),
            _ => None,
        });
        assert_eq!(deleted, Some(entries.len()), "malformed entries go too");
    }
}
