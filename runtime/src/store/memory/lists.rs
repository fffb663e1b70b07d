//! Append-only lists in the memory store: `RPUSH`, `LRANGE` (with Redis's index rules) and
//! `LLEN`.

use tokio::time::Instant;

use super::keyspace::{wrong_type, Keyspace};
use super::{Entry, Value};
use crate::store::StoreResult;

impl Keyspace {
    /// `key` as a list, created empty first if `create` and it does not exist.
    fn list_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut Vec<Vec<u8>>>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::List(Vec::new())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::List(l),
                ..
            }) => Ok(Some(l)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    pub(super) fn push(&mut self, key: &str, values: &[&[u8]], now: Instant) -> StoreResult<u64> {
        let create = !values.is_empty();
        match self.list_mut("push", key, now, create)? {
            Some(l) => {
                l.extend(values.iter().map(|v| v.to_vec()));
                Ok(l.len() as u64)
            }
            None => Ok(0),
        }
    }

    pub(super) fn range(
        &mut self,
        key: &str,
        start: i64,
        stop: i64,
        now: Instant,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let Some(l) = self.list_mut("range", key, now, false)? else {
            return Ok(Vec::new());
        };
        Ok(lrange(l, start, stop).to_vec())
    }

    pub(super) fn len(&mut self, key: &str, now: Instant) -> StoreResult<u64> {
        Ok(self
            .list_mut("len", key, now, false)?
            .map_or(0, |l| l.len() as u64))
    }
}

/// The slice `LRANGE start stop` returns.
fn lrange(list: &[Vec<u8>], start: i64, stop: i64) -> &[Vec<u8>] {
    let len = i64::try_from(list.len()).unwrap_or(i64::MAX);
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return &[];
    }
    // 0 <= start <= stop < len here.
    let (start, stop) = (
        usize::try_from(start).unwrap_or(0),
        usize::try_from(stop).unwrap_or(0),
    );
    &list[start..=stop]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrange_follows_redis_index_rules() {
        let list: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
        let check = |start, stop, expected: &[u8]| {
            let got: Vec<u8> = lrange(&list, start, stop).iter().map(|v| v[0]).collect();
            assert_eq!(got, expected, "LRANGE {start} {stop}");
        };
        check(0, -1, &[0, 1, 2, 3, 4]);
        check(1, 2, &[1, 2]);
        check(-2, -1, &[3, 4]);
        check(-100, 1, &[0, 1]);
        check(3, 100, &[3, 4]);
        check(5, 10, &[]);
        check(2, 1, &[]);
        check(0, -6, &[]);
        check(-1, -1, &[4]);
        assert!(lrange(&[], 0, -1).is_empty());
    }
}
