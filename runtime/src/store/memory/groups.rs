//! Consumer groups in the memory store: `XGROUP CREATE`, `XREADGROUP`, `XACK`, `XPENDING`,
//! `XAUTOCLAIM`, `XCLAIM ... JUSTID`, `XINFO GROUPS`/`CONSUMERS` and the idle-consumer delete,
//! over the groups and pending entries that [`Stream`] holds.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::id::{strict_ids, Id};
use super::keyspace::{wrong_type, Keyspace};
use super::streams::{Fields, Group, Pending, Stream};
use crate::store::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, IdleClaim, PendingEntry, PendingRange,
    PendingSummary, StoreError, StoreResult, StreamEntry,
};

fn no_group(stream: &str, group: &str) -> StoreError {
    StoreError::NoGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    }
}

impl Keyspace {
    /// The group `group` of `stream` and the stream's entries; [`StoreError::NoGroup`] if
    /// either is missing.
    fn group_mut(
        &mut self,
        op: &'static str,
        stream: &str,
        group: &str,
        now: Instant,
    ) -> StoreResult<(&mut Group, &BTreeMap<Id, Fields>)> {
        let s = self
            .stream_mut(op, stream, now, false)?
            .ok_or_else(|| no_group(stream, group))?;
        let Stream {
            entries, groups, ..
        } = s;
        let g = groups
            .get_mut(group)
            .ok_or_else(|| no_group(stream, group))?;
        Ok((g, entries))
    }

    /// Creates `group` after `start` (`None`: the stream's last id), creating the stream.
    pub(super) fn xgroup_create(
        &mut self,
        stream: &str,
        group: &str,
        start: Option<Id>,
        now: Instant,
    ) -> StoreResult<bool> {
        let s = self
            .stream_mut("xgroup_create", stream, now, true)?
            .ok_or_else(|| wrong_type("xgroup_create", stream))?;
        let last_delivered = start.unwrap_or(s.last_id);
        if s.groups.contains_key(group) {
            return Ok(false);
        }
        s.groups.insert(
            group.to_owned(),
            Group {
                last_delivered,
                pel: BTreeMap::new(),
                consumers: BTreeMap::new(),
            },
        );
        Ok(true)
    }

    /// One `XREADGROUP` pass: new entries (`from_pending: None`), or the consumer's pending
    /// entries after the given id.
    pub(super) fn xreadgroup(
        &mut self,
        read: &GroupRead<'_>,
        from_pending: Option<Id>,
        now: Instant,
    ) -> StoreResult<Vec<StreamEntry>> {
        let count = if read.count == 0 {
            usize::MAX
        } else {
            read.count
        };
        let (g, entries) = self.group_mut("xreadgroup", read.stream, read.group, now)?;
        g.consumers.insert(read.consumer.to_owned(), now);
        let mut out = Vec::new();
        match from_pending {
            None => {
                let Some(from) = g.last_delivered.next() else {
                    return Ok(out);
                };
                for (id, fields) in entries.range(from..).take(count) {
                    g.last_delivered = *id;
                    g.pel.insert(
                        *id,
                        Pending {
                            consumer: read.consumer.to_owned(),
                            delivered_at: now,
                            deliveries: 1,
                        },
                    );
                    out.push(StreamEntry {
                        id: id.to_string(),
                        fields: fields.clone(),
                    });
                }
            }
            Some(after) => {
                let Some(from) = after.next() else {
                    return Ok(out);
                };
                let mine = g
                    .pel
                    .range_mut(from..)
                    .filter(|(_, p)| p.consumer == read.consumer)
                    .take(count);
                for (id, p) in mine {
                    p.delivered_at = now;
                    p.deliveries += 1;
                    // Entries trimmed while pending are skipped here; XAUTOCLAIM reports them.
                    if let Some(fields) = entries.get(id) {
                        out.push(StreamEntry {
                            id: id.to_string(),
                            fields: fields.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) fn xack(
        &mut self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        now: Instant,
    ) -> StoreResult<u64> {
        let ids = strict_ids("xack", ids)?;
        let Some(s) = self.stream_mut("xack", stream, now, false)? else {
            return Ok(0);
        };
        let Some(g) = s.groups.get_mut(group) else {
            return Ok(0);
        };
        Ok(ids.iter().filter(|id| g.pel.remove(id).is_some()).count() as u64)
    }

    pub(super) fn xpending(
        &mut self,
        stream: &str,
        group: &str,
        now: Instant,
    ) -> StoreResult<PendingSummary> {
        let (g, _) = self.group_mut("xpending", stream, group, now)?;
        let mut consumers: BTreeMap<&str, u64> = BTreeMap::new();
        for p in g.pel.values() {
            *consumers.entry(p.consumer.as_str()).or_default() += 1;
        }
        Ok(PendingSummary {
            count: g.pel.len() as u64,
            lowest: g.pel.keys().next().map(Id::to_string),
            highest: g.pel.keys().next_back().map(Id::to_string),
            consumers: consumers
                .into_iter()
                .map(|(c, n)| (c.to_owned(), n))
                .collect(),
        })
    }

    /// Pending entries of `start..=end` (parsed range ends: `None` is an empty range).
    pub(super) fn xpending_range(
        &mut self,
        range: &PendingRange<'_>,
        (start, end): (Option<Id>, Option<Id>),
        now: Instant,
    ) -> StoreResult<Vec<PendingEntry>> {
        let (count, consumer) = (range.count, range.consumer);
        let (g, _) = self.group_mut("xpending_range", range.stream, range.group, now)?;
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        Ok(g.pel
            .range(start..=end)
            .filter(|(_, p)| consumer.is_none_or(|c| p.consumer == c))
            .take(count)
            .map(|(id, p)| PendingEntry {
                id: id.to_string(),
                consumer: p.consumer.clone(),
                idle: now.saturating_duration_since(p.delivered_at),
                deliveries: p.deliveries,
            })
            .collect())
    }

    /// `XAUTOCLAIM` from a parsed `start` (`None`: an empty range); `count` is at least 1.
    pub(super) fn xautoclaim(
        &mut self,
        claim: &IdleClaim<'_>,
        start: Option<Id>,
        now: Instant,
    ) -> StoreResult<AutoClaim> {
        let IdleClaim {
            stream,
            group,
            consumer,
            min_idle,
            count,
            ..
        } = *claim;
        let (g, entries) = self.group_mut("xautoclaim", stream, group, now)?;
        g.consumers.insert(consumer.to_owned(), now);
        let mut result = AutoClaim {
            next: Id::MIN.to_string(),
            ..AutoClaim::default()
        };
        let Some(start) = start else {
            return Ok(result);
        };
        // As Redis: scan at most 10 * count pending entries, claim at most `count`.
        let mut attempts = count.saturating_mul(10);
        let mut left = count;
        let ids: Vec<Id> = g.pel.range(start..).map(|(id, _)| *id).collect();
        let mut scanned = 0;
        for id in &ids {
            if attempts == 0 || left == 0 {
                break;
            }
            attempts -= 1;
            scanned += 1;
            if !entries.contains_key(id) {
                g.pel.remove(id);
                result.deleted.push(id.to_string());
                continue;
            }
            let Some(p) = g.pel.get_mut(id) else {
                continue;
            };
            if now.saturating_duration_since(p.delivered_at) < min_idle {
                continue;
            }
            p.consumer = consumer.to_owned();
            p.delivered_at = now;
            p.deliveries += 1;
            left -= 1;
            result.claimed.push(StreamEntry {
                id: id.to_string(),
                fields: entries.get(id).cloned().unwrap_or_default(),
            });
        }
        if let Some(next) = ids.get(scanned) {
            result.next = next.to_string();
        }
        Ok(result)
    }

    pub(super) fn xclaim_touch(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: Vec<Id>,
        now: Instant,
    ) -> StoreResult<Vec<EntryId>> {
        let (g, _) = self.group_mut("xclaim_touch", stream, group, now)?;
        g.consumers.insert(consumer.to_owned(), now);
        let mut touched = Vec::new();
        for id in ids {
            if let Some(p) = g.pel.get_mut(&id) {
                p.consumer = consumer.to_owned();
                p.delivered_at = now;
                touched.push(id.to_string());
            }
        }
        Ok(touched)
    }

    pub(super) fn xgroups(&mut self, stream: &str, now: Instant) -> StoreResult<Vec<GroupInfo>> {
        let Some(s) = self.stream_mut("xgroups", stream, now, false)? else {
            return Ok(Vec::new());
        };
        let mut groups: Vec<GroupInfo> = s
            .groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                consumers: g.consumers.len() as u64,
                pending: g.pel.len() as u64,
                last_delivered: g.last_delivered.to_string(),
                lag: Some(
                    s.entries
                        .keys()
                        .rev()
                        .take_while(|id| **id > g.last_delivered)
                        .count() as u64,
                ),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    pub(super) fn xconsumers(
        &mut self,
        stream: &str,
        group: &str,
        now: Instant,
    ) -> StoreResult<Vec<ConsumerInfo>> {
        let (g, _) = self.group_mut("xconsumers", stream, group, now)?;
        Ok(g.consumers
            .iter()
            .map(|(name, seen)| ConsumerInfo {
                name: name.clone(),
                pending: g.pel.values().filter(|p| &p.consumer == name).count() as u64,
                idle: now.saturating_duration_since(*seen),
            })
            .collect())
    }

    pub(super) fn xdelconsumer_idle(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        now: Instant,
    ) -> StoreResult<bool> {
        let (g, _) = self.group_mut("xdelconsumer_idle", stream, group, now)?;
        let Some(seen) = g.consumers.get(consumer) else {
            return Ok(false);
        };
        let idle = now.saturating_duration_since(*seen);
        if idle < min_idle || g.pel.values().any(|p| p.consumer == consumer) {
            return Ok(false);
        }
        g.consumers.remove(consumer);
        Ok(true)
    }
}
