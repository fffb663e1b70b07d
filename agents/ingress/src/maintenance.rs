//! The ingress's periodic maintenance, run by the read loop every few seconds: trimming the
//! ingress stream below the oldest entry a consumer group still needs, leaving out foreign
//! groups nobody reads any more ([`GroupWatch`]), and deleting other consumers of the group
//! that own nothing and have been idle past `consumer_expiry` (a live one resets its idle
//! time each round, [`Shared::keep_alive`]). Also the deletion of a
//! retiring generation's own consumer ([`OwnConsumer`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_config::IngressSettings;
use troupe_runtime::metrics::metrics;
use troupe_runtime::store::{EntryId, GroupInfo, GroupRead, ReadFrom, Store, StoreError, Trim};

use super::Shared;

/// At most one warning per foreign group this often: that it holds trimming back, and
/// (separately) that it is left out of it.
const GROUP_WARN_EVERY: Duration = Duration::from_secs(10 * 60);

/// What maintenance remembers between rounds about the stream's foreign groups (any group
/// other than the ingress's own: an operator's tap, a forgotten group).
#[derive(Debug, Default)]
pub(super) struct GroupWatch {
    /// Since when each foreign group has been seen without consumers by this daemon.
    consumerless: BTreeMap<String, Instant>,
    /// When each foreign group was last warned about for holding trimming back.
    pinning: BTreeMap<String, Instant>,
    /// When each foreign group was last warned about for being left out of trimming.
    left_out: BTreeMap<String, Instant>,
}

impl GroupWatch {
    /// Forgets groups that no longer exist.
    fn retain(&mut self, groups: &[GroupInfo]) {
        let exists = |name: &String| groups.iter().any(|g| &g.name == name);
        self.consumerless.retain(|name, _| exists(name));
        self.pinning.retain(|name, _| exists(name));
        self.left_out.retain(|name, _| exists(name));
    }
}

/// Whether a warning recorded in `warned` for `group` is due now; if so, records it.
fn due(warned: &mut BTreeMap<String, Instant>, group: &str) -> bool {
    let now = Instant::now();
    match warned.get(group) {
        Some(at) if now.saturating_duration_since(*at) < GROUP_WARN_EVERY => false,
        _ => {
            warned.insert(group.to_owned(), now);
            true
        }
    }
}

impl Shared {
    /// Trims the ingress stream below the oldest entry any group still needs: its oldest
    /// pending entry, or its first undelivered one. The last delivered id is read before
    /// the pending list, so an entry delivered in between is above the bound. A foreign
    /// group that is abandoned (see [`Shared::abandoned`]) is left out of the bound, with a
    /// warning; the ingress's own group never is (that would drop accepted work), and
    /// without it (about to be recreated from the start of the stream) nothing is trimmed.
    /// Returns the id of the last entry delivered to the own group, if it exists.
    pub(super) async fn trim(&self, watch: &mut GroupWatch) -> Result<Option<EntryId>, StoreError> {
        let s = &self.settings;
        let stream = &s.stream;
        let groups = self.store.xgroups(stream).await?;
        watch.retain(&groups);
        let mut own: Option<String> = None;
        let mut last_delivered = None;
        let mut holding: Vec<(&GroupInfo, String, u64)> = Vec::new();
        for group in &groups {
            let mine = group.name == s.group;
            let pending = match self.store.xpending(stream, &group.name).await {
                Ok(pending) => pending,
                // A foreign group destroyed meanwhile needs nothing.
                Err(StoreError::NoGroup { .. }) if !mine => continue,
                Err(err) => return Err(err),
            };
            let needed = match pending.lowest {
                Some(lowest) => min_id(&lowest, &group.last_delivered),
                None => group.last_delivered.clone(),
            };
            if mine {
                let m = metrics();
                m.ingress_pending.set(pending.count as i64);
                m.ingress_lag.set(group.lag.unwrap_or(0) as i64);
                own = Some(needed);
                last_delivered = Some(group.last_delivered.clone());
                continue;
            }
            match self.abandoned(group, watch).await {
                Ok(true) => {
                    if due(&mut watch.left_out, &group.name) {
                        self.warn_left_out(group, pending.count);
                    }
                }
                Ok(false) => holding.push((group, needed, pending.count)),
                Err(StoreError::NoGroup { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let Some(own) = own else {
            return Ok(None);
        };
        let mut bound = own.clone();
        for (_, needed, _) in &holding {
            bound = min_id(&bound, needed);
        }
        for (group, needed, pending) in &holding {
            let pins = *needed == bound && id_key(needed) < id_key(&own);
            if pins && due(&mut watch.pinning, &group.name) {
                self.warn_pinning(group, *pending);
            }
        }
        let removed = if bound == "0-0" {
            0
        } else {
            self.store.xtrim(stream, Trim::MinId(bound)).await?
        };
        if removed > 0 {
            tracing::debug!(removed, "ingress trimmed completed entries");
        }
        Ok(last_delivered)
    }

    /// Marks this consumer as alive for the others' `consumer_expiry`, even while no task
    /// arrives: a read of its own pending entries after `after` (the group's last delivered
    /// id, so there are none) resets its idle time, which an empty read of new entries does
    /// not on Redis 7.0. Nothing is delivered, no delivery is counted. Called from the read
    /// loop, so no entry is delivered to this consumer meanwhile.
    pub(super) async fn keep_alive(&self, after: &str) {
        let s = &self.settings;
        let read = GroupRead {
            stream: &s.stream,
            group: &s.group,
            consumer: &self.consumer,
            count: 1,
            block: None,
            from: ReadFrom::Pending(after.to_owned()),
        };
        match self.store.xreadgroup(read).await {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => tracing::warn!(
                count = entries.len(),
                "ingress keep-alive read entries past the group's last delivered id; they are \
                 reclaimed after claim_idle"
            ),
            Err(err) => tracing::debug!(error = %err, "ingress keep-alive read failed"),
        }
    }

    /// Whether the foreign `group` is abandoned: it has consumers and every one has been idle
    /// (no read, no claim) for `abandoned_group_after`, or it has none and this daemon has
    /// seen it so for that long.
    async fn abandoned(
        &self,
        group: &GroupInfo,
        watch: &mut GroupWatch,
    ) -> Result<bool, StoreError> {
        let after = self.settings.abandoned_group_after;
        if group.consumers == 0 {
            let since = *watch
                .consumerless
                .entry(group.name.clone())
                .or_insert_with(Instant::now);
            return Ok(since.elapsed() >= after);
        }
        watch.consumerless.remove(&group.name);
        let consumers = self
            .store
            .xconsumers(&self.settings.stream, &group.name)
            .await?;
        Ok(!consumers.is_empty() && consumers.iter().all(|c| c.idle >= after))
    }

    /// How to remove `group` by hand, with the names Redis knows.
    fn destroy_hint(&self, group: &str) -> String {
        format!(
            "XGROUP DESTROY {} {group}",
            self.redis_key(&self.settings.stream)
        )
    }

    /// Warns that the foreign `group` holds trimming of the ingress stream back.
    fn warn_pinning(&self, group: &GroupInfo, pending: u64) {
        let after = self.settings.abandoned_group_after;
        tracing::warn!(
            group = %group.name,
            unread = ?group.lag,
            pending,
            "ingress stream trimming is held back by the consumer group {:?}, which has not \
             read {} entries: the stream keeps them. Unless one of its consumers reads, it is \
             left out of trimming after abandoned_group_after ({after:?}); if nothing uses it, \
             remove it: {}",
            group.name,
            unread(group),
            self.destroy_hint(&group.name),
        );
    }

    /// Warns that the foreign `group` is left out of trimming.
    fn warn_left_out(&self, group: &GroupInfo, pending: u64) {
        let after = self.settings.abandoned_group_after;
        tracing::warn!(
            group = %group.name,
            unread = ?group.lag,
            pending,
            "ingress trims its stream past the consumer group {:?}, left out of trimming: \
             nothing read from it for abandoned_group_after ({after:?}); it had not read {} \
             entries, trimmed from now on. If nothing uses it, remove it: {}",
            group.name,
            unread(group),
            self.destroy_hint(&group.name),
        );
    }

    /// Deletes the other consumers of the group that own no pending entry and have been idle
    /// for `consumer_expiry` (a retired generation's, a dead daemon's once its entries were
    /// claimed); a live consumer reads every `block`. Returns how many it deleted.
    pub(super) async fn expire_consumers(&self) -> Result<usize, StoreError> {
        let s = &self.settings;
        let consumers = self.store.xconsumers(&s.stream, &s.group).await?;
        let mut deleted = 0;
        for c in consumers {
            if c.name == self.consumer || c.pending > 0 || c.idle < s.consumer_expiry {
                continue;
            }
            // Checked again with the delete, atomically: it may have read or claimed since.
            if self
                .store
                .xdelconsumer_idle(&s.stream, &s.group, &c.name, s.consumer_expiry)
                .await?
            {
                tracing::info!(
                    consumer = %c.name,
                    idle = ?c.idle,
                    "ingress deleted a consumer that owned nothing and was idle past consumer_expiry"
                );
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// How many entries `group` had not read, for a warning.
fn unread(group: &GroupInfo) -> String {
    match group.lag {
        Some(lag) => lag.to_string(),
        None => "an unknown number of".to_owned(),
    }
}

/// A generation's own ingress consumer, deleted at the end of its drain if it owns nothing.
#[derive(Clone)]
pub struct OwnConsumer {
    store: Arc<dyn Store>,
    stream: String,
    group: String,
    name: String,
}

impl OwnConsumer {
    /// The consumer `name` of the group of `settings`.
    pub fn new(store: Arc<dyn Store>, settings: &IngressSettings, name: &str) -> OwnConsumer {
        OwnConsumer {
            store,
            stream: settings.stream.clone(),
            group: settings.group.clone(),
            name: name.to_owned(),
        }
    }

    /// Deletes the consumer if it holds no pending entry, whatever its idle time: called once
    /// nothing reads or claims as it any more. One holding entries is left to be claimed by
    /// the others (and deleted by their `consumer_expiry` later). Returns whether it did.
    pub async fn retire(&self) -> bool {
        match self
            .store
            .xdelconsumer_idle(&self.stream, &self.group, &self.name, Duration::ZERO)
            .await
        {
            Ok(true) => {
                tracing::info!(consumer = %self.name, "ingress consumer deleted: it drained and owns nothing");
                true
            }
            Ok(false) => {
                tracing::info!(consumer = %self.name, "ingress consumer kept: it still holds pending entries, claimed by the others later");
                false
            }
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "ingress could not delete its drained consumer; the others do after consumer_expiry");
                false
            }
        }
    }
}

/// The order of a stream id (`ms-seq`); an unparsable id counts as lowest.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The lower of two stream ids.
fn min_id(a: &str, b: &str) -> String {
    if id_key(a) <= id_key(b) { a } else { b }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_by_time_then_sequence() {
        assert_eq!(min_id("10-2", "9-5"), "9-5");
        assert_eq!(min_id("10-2", "10-10"), "10-2");
        assert_eq!(min_id("0-0", "1-0"), "0-0");
        assert_eq!(min_id("bad", "1-0"), "bad");
    }

    #[test]
    fn a_warning_per_group_is_due_at_most_once_per_period() {
        let mut warned = BTreeMap::new();
        assert!(due(&mut warned, "tap"));
        assert!(!due(&mut warned, "tap"));
        assert!(due(&mut warned, "other"));
        if let Some(then) = Instant::now().checked_sub(GROUP_WARN_EVERY) {
            warned.insert("tap".to_owned(), then);
            assert!(due(&mut warned, "tap"));
        }
    }
}
