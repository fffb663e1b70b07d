//! `[ingress]`: how tasks are read from and results written to Redis streams.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::defaults;

/// Settings of the stream ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// Stream tasks are read from.
    pub stream: String,
    /// Stream results are written to.
    pub results: String,
    /// Stream poisoned tasks are moved to.
    pub dead: String,
    /// Consumer group shared by all daemons.
    pub group: String,
    /// Entries read per XREADGROUP (> 0).
    pub batch: usize,
    /// How long one read blocks (> 0).
    pub block: Duration,
    /// Pending entries idle this long are claimed from other consumers (> 0); a consumer
    /// working on a task refreshes its claim every third of it.
    pub claim_idle: Duration,
    /// Deliveries of one entry before it is dead-lettered (> 0).
    pub max_deliveries: u32,
    /// Tasks in flight in this daemon before reading pauses (> 0).
    pub max_in_flight: usize,
    /// Tasks of one group in flight in this daemon (> 0); a group's further tasks wait,
    /// parked (at most `max_in_flight` of them, their entries kept claimed), while other
    /// groups' tasks are read and run. `max_in_flight` unless set: no bound of its own.
    pub max_in_flight_per_group: usize,
    /// Largest accepted task input in bytes (> 0).
    pub max_input_bytes: usize,
    /// Largest accepted stream entry, every field name and value counted, in bytes (> 0).
    pub max_entry_bytes: usize,
    /// Approximate MAXLEN of the results and dead streams (> 0).
    pub max_len: u64,
    /// How long a task's result is kept (> 0): its reply stream expires this long after its
    /// last write (every result and acceptance renews it), and the record that answers a
    /// resend of the task id this long after the task ended.
    pub reply_retention: Duration,
    /// Another consumer of the group that owns no pending entry and has been idle this long
    /// is deleted (> `claim_idle`): the consumer of a retired generation or a dead daemon.
    pub consumer_expiry: Duration,
    /// A foreign consumer group of the ingress stream whose consumers have all been idle this
    /// long (or that has had none for this long) no longer holds trimming back (> 0).
    pub abandoned_group_after: Duration,
    /// Producer authentication.
    pub auth: IngressAuth,
}

/// `[ingress.auth]`: whether and how producers prove which group they publish for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IngressAuth {
    /// Any producer that can write the stream may publish for any group (the default): fit
    /// for one trusted producer, or Redis ACLs that already separate them.
    #[default]
    None,
    /// Every task carries an HMAC-SHA256 of its `task` bytes with its group's secret, an
    /// expiry and an id.
    Hmac {
        /// How far ahead of now a task's `expires` may be.
        max_expiry: Duration,
        /// The environment variable holding each group's secret, by group.
        secrets: BTreeMap<String, String>,
    },
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            stream: defaults::INGRESS_STREAM.to_owned(),
            results: defaults::INGRESS_RESULTS.to_owned(),
            dead: defaults::INGRESS_DEAD.to_owned(),
            group: defaults::INGRESS_GROUP.to_owned(),
            batch: defaults::INGRESS_BATCH,
            block: defaults::INGRESS_BLOCK,
            claim_idle: defaults::INGRESS_CLAIM_IDLE,
            max_deliveries: defaults::INGRESS_MAX_DELIVERIES,
            max_in_flight: defaults::INGRESS_MAX_IN_FLIGHT,
            max_in_flight_per_group: defaults::INGRESS_MAX_IN_FLIGHT,
            max_input_bytes: defaults::INGRESS_MAX_INPUT_BYTES,
            max_entry_bytes: defaults::INGRESS_MAX_ENTRY_BYTES,
            max_len: defaults::INGRESS_MAX_LEN,
            reply_retention: defaults::INGRESS_REPLY_RETENTION,
            consumer_expiry: defaults::INGRESS_CONSUMER_EXPIRY,
            abandoned_group_after: defaults::INGRESS_ABANDONED_GROUP_AFTER,
            auth: IngressAuth::None,
        }
    }
}
