//! Per-group in-flight quotas of the ingress (`[ingress] max_in_flight_per_group`): at most
//! that many tasks of one group run at once in a daemon. A task read while its group is at
//! its quota is parked — it gives its reading slot back, so other groups' tasks are read and
//! run, and waits (its entry kept claimed, not redelivered) until one of its group's tasks
//! ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Tasks running per group, bounded.
#[derive(Debug)]
pub(crate) struct GroupQuota {
    max: usize,
    running: Mutex<HashMap<String, usize>>,
    freed: Notify,
}

/// One running task of a group; its slot is given back when dropped.
#[derive(Debug)]
pub(crate) struct GroupSlot {
    quota: Arc<GroupQuota>,
    group: String,
}

impl GroupQuota {
    /// At most `max` tasks (at least 1) of one group at once.
    pub(crate) fn new(max: usize) -> Arc<GroupQuota> {
        Arc::new(GroupQuota {
            max: max.max(1),
            running: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// A slot of `group` if it is below its quota.
    pub(crate) fn try_take(self: &Arc<Self>, group: &str) -> Option<GroupSlot> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let n = running.entry(group.to_owned()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(GroupSlot {
            quota: self.clone(),
            group: group.to_owned(),
        })
    }

    /// A slot of `group`, once one is free.
    pub(crate) async fn take(self: &Arc<Self>, group: &str) -> GroupSlot {
        loop {
            // Created before the check: a slot given back in between still wakes it.
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take(group) {
                return slot;
            }
            freed.await;
        }
    }
}

impl Drop for GroupSlot {
    fn drop(&mut self) {
        let mut running = self
            .quota
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = running.get_mut(&self.group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.group);
            }
        }
        drop(running);
        self.quota.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_at_its_quota_waits_while_others_take_slots() {
        let quota = GroupQuota::new(2);
        let a1 = quota.try_take("a").expect("a has room");
        let _a2 = quota.try_take("a").expect("a has room");
        assert!(quota.try_take("a").is_none(), "a is at its quota");
        let _b = quota.try_take("b").expect("b is not held back by a");
        let waiting = tokio::spawn({
            let quota = quota.clone();
            async move { quota.take("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a1);
        let slot = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when a slot of a was given back")
            .expect("task");
        assert_eq!(slot.group, "a");
    }
}
