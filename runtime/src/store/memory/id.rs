//! Stream entry ids as the memory store keeps them ([`Id`]: milliseconds and a sequence), and
//! the id arguments of the stream commands parsed the way Redis parses them: strict ids and
//! the ends of a range (`-`, `+`, `(id` exclusive).

use std::fmt;

use crate::store::{StoreError, StoreResult};

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Id {
    pub(super) ms: u64,
    pub(super) seq: u64,
}

impl Id {
    pub(super) const MIN: Id = Id { ms: 0, seq: 0 };
    pub(super) const MAX: Id = Id {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Parses `<ms>-<seq>` or `<ms>` (then `seq` is `missing_seq`).
    pub(super) fn parse(s: &str, missing_seq: u64) -> Option<Id> {
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (s, None),
        };
        let ms = parse_u64(ms)?;
        let seq = match seq {
            Some(seq) => parse_u64(seq)?,
            None => missing_seq,
        };
        Some(Id { ms, seq })
    }

    pub(super) fn next(self) -> Option<Id> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Id { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| Id { ms, seq: 0 }),
        }
    }

    pub(super) fn prev(self) -> Option<Id> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(Id { ms: self.ms, seq }),
            None => self.ms.checked_sub(1).map(|ms| Id { ms, seq: u64::MAX }),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn invalid_id(op: &'static str, id: &str) -> StoreError {
    StoreError::InvalidId {
        op,
        id: id.to_owned(),
    }
}

/// An id argument: `ms-seq` or `ms` (seq 0).
pub(super) fn strict_id(op: &'static str, s: &str) -> StoreResult<Id> {
    Id::parse(s, 0).ok_or_else(|| invalid_id(op, s))
}

/// Several id arguments, each as [`strict_id`].
pub(super) fn strict_ids(op: &'static str, ids: &[String]) -> StoreResult<Vec<Id>> {
    ids.iter().map(|id| strict_id(op, id)).collect()
}

/// The start of a range: `-`, `+`, `(id` (exclusive), `id`, `ms` (seq 0). `None`: empty range.
pub(super) fn range_start(op: &'static str, s: &str) -> StoreResult<Option<Id>> {
    match s {
        "-" => return Ok(Some(Id::MIN)),
        "+" => return Ok(Some(Id::MAX)),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix('(') {
        let id = Id::parse(rest, 0).ok_or_else(|| invalid_id(op, s))?;
        return Ok(id.next());
    }
    Id::parse(s, 0).map(Some).ok_or_else(|| invalid_id(op, s))
}

/// The end of a range: `-`, `+`, `(id` (exclusive), `id`, `ms` (seq max). `None`: empty range.
pub(super) fn range_end(op: &'static str, s: &str) -> StoreResult<Option<Id>> {
    match s {
        "-" => return Ok(Some(Id::MIN)),
        "+" => return Ok(Some(Id::MAX)),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix('(') {
        let id = Id::parse(rest, u64::MAX).ok_or_else(|| invalid_id(op, s))?;
        return Ok(id.prev());
    }
    Id::parse(s, u64::MAX)
        .map(Some)
        .ok_or_else(|| invalid_id(op, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_like_redis() {
        assert_eq!(Id::parse("5-3", 0), Some(Id { ms: 5, seq: 3 }));
        assert_eq!(Id::parse("5", 7), Some(Id { ms: 5, seq: 7 }));
        for bad in ["", "-", "a-1", "1-", "1-b", "-1", "1-2-3", "+1"] {
            assert_eq!(Id::parse(bad, 0), None, "{bad:?}");
        }
        assert_eq!(
            range_start("t", "(5-3").ok().flatten(),
            Some(Id { ms: 5, seq: 4 })
        );
        assert_eq!(
            range_end("t", "(5-0").ok().flatten(),
            Some(Id {
                ms: 4,
                seq: u64::MAX
            })
        );
        assert_eq!(
            range_end("t", "5").ok().flatten(),
            Some(Id {
                ms: 5,
                seq: u64::MAX
            })
        );
    }
}
