//! Streams in the memory store: the [`Stream`] structure (entries by [`Id`], with its
//! consumer groups and their pending entries) and the commands that read and write entries
//! (`XADD`, `XDEL`, `XLEN`, `XRANGE`, `XREAD`, `XTRIM`). Consumer-group commands are in
//! `groups.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::id::{strict_id, strict_ids, Id};
use super::keyspace::{wrong_type, Keyspace};
use super::{Entry, Value};
use crate::store::args::check_entry;
use crate::store::{EntryId, StoreError, StoreResult, StreamEntry, Trim};

/// An entry's field/value pairs, in the order they were added.
pub(super) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A delivered, unacknowledged entry of a group.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) consumer: String,
    pub(super) delivered_at: Instant,
    pub(super) deliveries: u64,
}

/// A consumer group of a stream.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) last_delivered: Id,
    pub(super) pel: BTreeMap<Id, Pending>,
    /// Every consumer that read or claimed, with the time it last did.
    pub(super) consumers: BTreeMap<String, Instant>,
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) entries: BTreeMap<Id, Fields>,
    /// The highest id ever added; new ids are above it even after trimming.
    pub(super) last_id: Id,
    pub(super) groups: HashMap<String, Group>,
}

impl Stream {
    pub(super) fn entry(&self, id: Id) -> StreamEntry {
        StreamEntry {
            id: id.to_string(),
            fields: self.entries.get(&id).cloned().unwrap_or_default(),
        }
    }

    fn trim(&mut self, trim: &Trim, op: &'static str) -> StoreResult<u64> {
        let before = self.entries.len();
        match trim {
            Trim::MaxLen(max) => {
                let max = usize::try_from(*max).unwrap_or(usize::MAX);
                while self.entries.len() > max {
                    self.entries.pop_first();
                }
            }
            Trim::MinId(id) => {
                let min = strict_id(op, id)?;
                self.entries = self.entries.split_off(&min);
            }
        }
        Ok((before - self.entries.len()) as u64)
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Keyspace {
    /// `key` as a stream, created empty first if `create` and it does not exist.
    pub(super) fn stream_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut Stream>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::Stream(Stream::default())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Stream(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    pub(super) fn xadd(
        &mut self,
        stream: &str,
        fields: &[(&[u8], &[u8])],
        trim: Option<&Trim>,
        now: Instant,
    ) -> StoreResult<EntryId> {
        check_entry("xadd", stream, fields.len())?;
        if let Some(Trim::MinId(id)) = trim {
            strict_id("xadd", id)?;
        }
        let s = self
            .stream_mut("xadd", stream, now, true)?
            .ok_or_else(|| wrong_type("xadd", stream))?;
        let ms = unix_millis();
        let id = if ms > s.last_id.ms {
            Id { ms, seq: 0 }
        } else {
            s.last_id.next().ok_or_else(|| StoreError::Other {
                op: "xadd",
                message: format!("stream {stream:?} has exhausted its id space"),
            })?
        };
        s.last_id = id;
        let fields = fields
            .iter()
            .map(|(f, v)| (f.to_vec(), v.to_vec()))
            .collect();
        s.entries.insert(id, fields);
        if let Some(trim) = trim {
            s.trim(trim, "xadd")?;
        }
        Ok(id.to_string())
    }

    pub(super) fn xdel(&mut self, stream: &str, ids: &[EntryId], now: Instant) -> StoreResult<u64> {
        let ids = strict_ids("xdel", ids)?;
        let Some(s) = self.stream_mut("xdel", stream, now, false)? else {
            return Ok(0);
        };
        Ok(ids
            .iter()
            .filter(|id| s.entries.remove(id).is_some())
            .count() as u64)
    }

    pub(super) fn xlen(&mut self, stream: &str, now: Instant) -> StoreResult<u64> {
        Ok(self
            .stream_mut("xlen", stream, now, false)?
            .map_or(0, |s| s.entries.len() as u64))
    }

    /// The id of the stream's last entry (`XREAD`'s `$`); the lowest id if there is no stream.
    pub(super) fn last_id(&mut self, stream: &str, now: Instant) -> StoreResult<Id> {
        Ok(self
            .stream_mut("xread", stream, now, false)?
            .map_or(Id::MIN, |s| s.last_id))
    }

    /// Entries of `start..=end` (parsed range ends: `None` is an empty range).
    pub(super) fn xrange(
        &mut self,
        stream: &str,
        start: Option<Id>,
        end: Option<Id>,
        count: Option<usize>,
        now: Instant,
    ) -> StoreResult<Vec<StreamEntry>> {
        let Some(s) = self.stream_mut("xrange", stream, now, false)? else {
            return Ok(Vec::new());
        };
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        Ok(s.entries
            .range(start..=end)
            .take(count.unwrap_or(usize::MAX))
            .map(|(id, _)| s.entry(*id))
            .collect())
    }

    pub(super) fn xread(
        &mut self,
        stream: &str,
        after: Id,
        count: usize,
        now: Instant,
    ) -> StoreResult<Vec<StreamEntry>> {
        let Some(s) = self.stream_mut("xread", stream, now, false)? else {
            return Ok(Vec::new());
        };
        let Some(from) = after.next() else {
            return Ok(Vec::new());
        };
        Ok(s.entries
            .range(from..)
            .take(count)
            .map(|(id, fields)| StreamEntry {
                id: id.to_string(),
                fields: fields.clone(),
            })
            .collect())
    }

    /// `XTRIM` (a `MINID` of `trim` was checked by the caller).
    pub(super) fn xtrim(&mut self, stream: &str, trim: &Trim, now: Instant) -> StoreResult<u64> {
        match self.stream_mut("xtrim", stream, now, false)? {
            Some(s) => s.trim(trim, "xtrim"),
            None => Ok(0),
        }
    }
}
