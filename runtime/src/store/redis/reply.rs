//! Defensive parsing of Redis replies into the store's types: anything unexpected is a
//! [`StoreError::Protocol`], never a panic.

use std::time::Duration;

use redis::Value;

use crate::store::{
    ConsumerInfo, GroupInfo, PendingEntry, PendingSummary, StoreError, StoreResult, StreamEntry,
};

/// A parser bound to the operation it reports errors for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reply {
    pub op: &'static str,
}

impl Reply {
    fn bad(&self, what: &str, v: &Value) -> StoreError {
        let mut shown = format!("{v:?}");
        if shown.len() > 200 {
            let mut end = 200;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push('…');
        }
        StoreError::Protocol {
            op: self.op,
            message: format!("expected {what}, got {shown}"),
        }
    }

    /// `OK`, a status or anything else that is not an error.
    pub(super) fn ok(&self, _v: Value) -> StoreResult<()> {
        Ok(())
    }

    pub(super) fn int(&self, v: Value) -> StoreResult<i64> {
        match v {
            Value::Int(n) => Ok(n),
            Value::BulkString(ref b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad("an integer", &v)),
            other => Err(self.bad("an integer", &other)),
        }
    }

    pub(super) fn count(&self, v: Value) -> StoreResult<u64> {
        let n = self.int(v)?;
        u64::try_from(n).map_err(|_| StoreError::Protocol {
            op: self.op,
            message: format!("expected a count, got {n}"),
        })
    }

    pub(super) fn flag(&self, v: Value) -> StoreResult<bool> {
        Ok(self.int(v)? != 0)
    }

    pub(super) fn bytes_opt(&self, v: Value) -> StoreResult<Option<Vec<u8>>> {
        match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            Value::SimpleString(s) => Ok(Some(s.into_bytes())),
            Value::Okay => Ok(Some(b"OK".to_vec())),
            other => Err(self.bad("a string or nil", &other)),
        }
    }

    pub(super) fn string(&self, v: Value) -> StoreResult<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b).map_err(|e| StoreError::Protocol {
                op: self.op,
                message: format!("expected UTF-8 text: {e}"),
            }),
            Value::SimpleString(s) => Ok(s),
            other => Err(self.bad("a string", &other)),
        }
    }

    pub(super) fn string_opt(&self, v: Value) -> StoreResult<Option<String>> {
        match v {
            Value::Nil => Ok(None),
            v => self.string(v).map(Some),
        }
    }

    /// An array (`Nil` reads as empty).
    pub(super) fn array(&self, v: Value) -> StoreResult<Vec<Value>> {
        match v {
            Value::Array(items) | Value::Set(items) => Ok(items),
            Value::Nil => Ok(Vec::new()),
            other => Err(self.bad("an array", &other)),
        }
    }

    /// Exactly `N` array elements.
    fn tuple<const N: usize>(&self, v: Value, what: &str) -> StoreResult<[Value; N]> {
        match v {
            Value::Array(items) => {
                let len = items.len();
                <[Value; N]>::try_from(items).map_err(|_| StoreError::Protocol {
                    op: self.op,
                    message: format!("expected {what} of {N} elements, got {len}"),
                })
            }
            other => Err(self.bad(what, &other)),
        }
    }

    /// Field/value pairs with text names (hashes) from a flat array or a RESP3 map.
    pub(super) fn pairs(&self, v: Value) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.byte_pairs(v)?
            .into_iter()
            .map(|(f, v)| match String::from_utf8(f) {
                Ok(f) => Ok((f, v)),
                Err(e) => Err(StoreError::Protocol {
                    op: self.op,
                    message: format!("expected a UTF-8 field name: {e}"),
                }),
            })
            .collect()
    }

    /// Field/value pairs with byte names (stream entries: Redis allows any bytes) from a flat
    /// array or a RESP3 map.
    pub(super) fn byte_pairs(&self, v: Value) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let pairs: Vec<(Value, Value)> = match v {
            Value::Map(pairs) => pairs,
            Value::Nil => Vec::new(),
            Value::Array(items) => {
                if items.len() % 2 != 0 {
                    return Err(StoreError::Protocol {
                        op: self.op,
                        message: format!("expected field/value pairs, got {} items", items.len()),
                    });
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    pairs.push((f, v));
                }
                pairs
            }
            other => return Err(self.bad("field/value pairs", &other)),
        };
        pairs
            .into_iter()
            .map(|(f, v)| {
                let value = self
                    .bytes_opt(v)?
                    .ok_or_else(|| self.bad("a field value", &Value::Nil))?;
                let name = self
                    .bytes_opt(f)?
                    .ok_or_else(|| self.bad("a field name", &Value::Nil))?;
                Ok((name, value))
            })
            .collect()
    }

    /// One stream entry `[id, [field, value, ...]]`; `Ok(Err(id))` when its fields are nil
    /// (the entry was deleted while pending), `Ok(Err(None))` for a nil entry.
    fn entry(&self, v: Value) -> StoreResult<Result<StreamEntry, Option<String>>> {
        if matches!(v, Value::Nil) {
            return Ok(Err(None));
        }
        let [id, fields] = self.tuple(v, "a stream entry")?;
        let id = self.string(id)?;
        if matches!(fields, Value::Nil) {
            return Ok(Err(Some(id)));
        }
        Ok(Ok(StreamEntry {
            id,
            fields: self.byte_pairs(fields)?,
        }))
    }

    /// Stream entries, skipping those deleted while pending (nil fields or nil entries).
    pub(super) fn entries(&self, v: Value) -> StoreResult<Vec<StreamEntry>> {
        Ok(self.entries_and_deleted(v)?.0)
    }

    /// Stream entries, and the ids of entries that were deleted while pending; the count of nil
    /// entries without an id is returned as well.
    pub(super) fn entries_and_deleted(
        &self,
        v: Value,
    ) -> StoreResult<(Vec<StreamEntry>, Vec<String>, usize)> {
        let mut entries = Vec::new();
        let mut deleted = Vec::new();
        let mut anonymous = 0;
        for item in self.array(v)? {
            match self.entry(item)? {
                Ok(e) => entries.push(e),
                Err(Some(id)) => deleted.push(id),
                Err(None) => anonymous += 1,
            }
        }
        Ok((entries, deleted, anonymous))
    }

    /// An `XREAD`/`XREADGROUP` reply for one stream: nil, `[[name, entries]]` or a RESP3 map.
    pub(super) fn read(&self, v: Value) -> StoreResult<Vec<StreamEntry>> {
        let streams: Vec<Value> = match v {
            Value::Nil => return Ok(Vec::new()),
            Value::Map(pairs) => pairs.into_iter().map(|(_, e)| e).collect(),
            Value::Array(items) => items
                .into_iter()
                .map(|item| {
                    let [_name, entries] = self.tuple(item, "a stream and its entries")?;
                    Ok(entries)
                })
                .collect::<StoreResult<_>>()?,
            other => return Err(self.bad("streams", &other)),
        };
        let mut out = Vec::new();
        for entries in streams {
            out.extend(self.entries(entries)?);
        }
        Ok(out)
    }

    /// `XPENDING stream group`: `[count, lowest, highest, [[consumer, count], ...]]`.
    pub(super) fn pending_summary(&self, v: Value) -> StoreResult<PendingSummary> {
        let [count, lowest, highest, consumers] = self.tuple(v, "a pending summary")?;
        let mut consumers = self
            .array(consumers)?
            .into_iter()
            .map(|c| {
                let [name, n] = self.tuple(c, "a consumer and its count")?;
                Ok((self.string(name)?, self.count(n)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        consumers.sort();
        Ok(PendingSummary {
            count: self.count(count)?,
            lowest: self.string_opt(lowest)?,
            highest: self.string_opt(highest)?,
            consumers,
        })
    }

    /// An `XINFO` record: a flat `[name, value, ...]` array or a RESP3 map.
    fn record(&self, v: Value) -> StoreResult<Vec<(String, Value)>> {
        let pairs: Vec<(Value, Value)> = match v {
            Value::Map(pairs) => pairs,
            Value::Array(items) if items.len() % 2 == 0 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    pairs.push((f, v));
                }
                pairs
            }
            other => return Err(self.bad("an XINFO record", &other)),
        };
        pairs
            .into_iter()
            .map(|(f, v)| Ok((self.string(f)?, v)))
            .collect()
    }

    /// `XINFO GROUPS stream`: one record per group.
    pub(super) fn groups(&self, v: Value) -> StoreResult<Vec<GroupInfo>> {
        let mut groups = Vec::new();
        for item in self.array(v)? {
            let mut g = GroupInfo::default();
            for (name, value) in self.record(item)? {
                match name.as_str() {
                    "name" => g.name = self.string(value)?,
                    "consumers" => g.consumers = self.count(value)?,
                    "pending" => g.pending = self.count(value)?,
                    "last-delivered-id" => g.last_delivered = self.string(value)?,
                    "lag" => {
                        g.lag = match value {
                            Value::Nil => None,
                            v => Some(self.count(v)?),
                        }
                    }
                    _ => {}
                }
            }
            groups.push(g);
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    /// `XINFO CONSUMERS stream group`: one record per consumer.
    pub(super) fn consumers(&self, v: Value) -> StoreResult<Vec<ConsumerInfo>> {
        let mut consumers = Vec::new();
        for item in self.array(v)? {
            let mut c = ConsumerInfo {
                name: String::new(),
                pending: 0,
                idle: Duration::ZERO,
            };
            for (name, value) in self.record(item)? {
                match name.as_str() {
                    "name" => c.name = self.string(value)?,
                    "pending" => c.pending = self.count(value)?,
                    "idle" => c.idle = Duration::from_millis(self.count(value)?),
                    _ => {}
                }
            }
            consumers.push(c);
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(consumers)
    }

    /// An array of ids (`XCLAIM ... JUSTID`).
    pub(super) fn ids(&self, v: Value) -> StoreResult<Vec<String>> {
        self.array(v)?
            .into_iter()
            .map(|id| self.string(id))
            .collect()
    }

    /// `XPENDING stream group start end count`: `[[id, consumer, idle ms, deliveries], ...]`.
    pub(super) fn pending_entries(&self, v: Value) -> StoreResult<Vec<PendingEntry>> {
        self.array(v)?
            .into_iter()
            .map(|item| {
                let [id, consumer, idle, deliveries] = self.tuple(item, "a pending entry")?;
                Ok(PendingEntry {
                    id: self.string(id)?,
                    consumer: self.string(consumer)?,
                    idle: Duration::from_millis(self.count(idle)?),
                    deliveries: self.count(deliveries)?,
                })
            })
            .collect()
    }

    /// `XAUTOCLAIM`: `[next, entries]` (Redis 6.2) or `[next, entries, deleted ids]` (7+).
    pub(super) fn autoclaim(
        &self,
        v: Value,
    ) -> StoreResult<(String, Vec<StreamEntry>, Vec<String>)> {
        let mut items = self.array(v)?.into_iter();
        let (Some(next), Some(claimed)) = (items.next(), items.next()) else {
            return Err(StoreError::Protocol {
                op: self.op,
                message: "expected at least 2 elements in an XAUTOCLAIM reply".into(),
            });
        };
        let (entries, mut deleted, anonymous) = self.entries_and_deleted(claimed)?;
        if anonymous > 0 {
            tracing::warn!(
                count = anonymous,
                "XAUTOCLAIM returned nil entries without ids; counted as lost"
            );
        }
        if let Some(ids) = items.next() {
            for id in self.array(ids)? {
                let id = self.string(id)?;
                if !deleted.contains(&id) {
                    deleted.push(id);
                }
            }
        }
        Ok((self.string(next)?, entries, deleted))
    }

    /// `SCAN`: `[cursor, [key, ...]]`.
    pub(super) fn scan(&self, v: Value) -> StoreResult<(u64, Vec<String>)> {
        let [cursor, keys] = self.tuple(v, "a SCAN reply")?;
        let cursor = self.string(cursor)?;
        let cursor = cursor.parse().map_err(|_| StoreError::Protocol {
            op: self.op,
            message: format!("expected a numeric SCAN cursor, got {cursor:?}"),
        })?;
        let keys = self
            .array(keys)?
            .into_iter()
            .map(|k| self.string(k))
            .collect::<StoreResult<_>>()?;
        Ok((cursor, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    const R: Reply = Reply { op: "test" };

    #[test]
    fn autoclaim_counts_nil_entries_and_deleted_ids_without_panicking() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("f"), bulk("v")])]),
                Value::Nil,
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
            Value::Array(vec![bulk("3-0")]),
        ]);
        let (next, claimed, deleted) = R.autoclaim(reply).expect("parses");
        assert_eq!(next, "0-0");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].field("f"), Some(&b"v"[..]));
        assert_eq!(deleted, vec!["2-0".to_string(), "3-0".to_string()]);
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        let cases = [
            R.autoclaim(Value::Array(vec![bulk("0-0")])).err(),
            R.pending_summary(Value::Int(3)).err(),
            R.entries(Value::Array(vec![Value::Array(vec![bulk("1-0")])]))
                .err(),
            R.pairs(Value::Array(vec![bulk("odd")])).err(),
            R.scan(Value::Array(vec![bulk("x"), Value::Array(vec![])]))
                .err(),
            R.int(bulk("nope")).err(),
        ];
        for (i, e) in cases.into_iter().enumerate() {
            assert!(
                matches!(e, Some(StoreError::Protocol { .. })),
                "case {i}: {e:?}"
            );
        }
    }

    #[test]
    fn read_replies_accept_nil_arrays_and_maps() {
        assert!(R.read(Value::Nil).expect("nil").is_empty());
        let entries = Value::Array(vec![Value::Array(vec![
            bulk("5-1"),
            Value::Array(vec![bulk("a"), bulk("1")]),
        ])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("s"), entries)]);
        assert_eq!(R.read(resp2).expect("resp2"), R.read(resp3).expect("resp3"));
    }
}
