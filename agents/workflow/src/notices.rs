//! Run notices: how daemons and clients sharing a store learn at once that a run was opened,
//! canceled, sent an event or ended by another process, instead of finding out at their next
//! read of the store.
//!
//! Every change of that kind writes a [`Notice`] to one stream, [`NOTICES`] (`wf-notices`,
//! at most [`MAX_NOTICES`] entries), in the batch of the change. Each router tails it with a
//! blocking `XREAD` (`router::actor::listen`) and acts on what it reads:
//! - `opened`: it tries to take the run's lease, as a scan would (one round trip, not a
//!   scan of the index);
//! - `canceled`: it tells the run, if it runs it;
//! - `event`: it wakes the run's `wait_event` step, if the run waits here;
//! - `ended`: it wakes this daemon's waiters for the run ([`Runs::wait`](crate::Runs::wait)).
//!
//! A store-only client ([`Runs::wait`](crate::Runs::wait) without a daemon) tails the same
//! stream for the end of the run it waits for. A notice can be missed (the listener was
//! reconnecting, the stream was trimmed past it): the router's scan of the index of
//! unfinished runs (`RouterOptions::scan`) and the waiters' own reads of the store are
//! the safety net, no longer the way runs are found.

use std::time::Duration;

use troupe_runtime::clock::now_ms;
use troupe_runtime::store::{EntryId, Store, StoreError, StreamEntry, Trim, Write};

/// The stream of run notices.
pub const NOTICES: &str = "wf-notices";

/// The notices stream is trimmed to this many entries at each write.
pub const MAX_NOTICES: u64 = 10_000;

/// How far back a new reader starts: notices written up to this long before it started
/// listening (or on a store clock this far behind its own) are still read. Reading one twice
/// is harmless.
const LOOK_BACK: Duration = Duration::from_secs(1);

/// What happened to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// It was opened (submitted or restarted): any daemon with room may adopt it.
    Opened {
        /// The run.
        run: String,
        /// Its group.
        group: String,
    },
    /// A cancel was requested.
    Canceled {
        /// The run.
        run: String,
    },
    /// An event was sent to it.
    Event {
        /// The run.
        run: String,
        /// Its group.
        group: String,
    },
    /// It ended.
    Ended {
        /// The run.
        run: String,
    },
}

impl Notice {
    /// The write that publishes the notice, for the batch of the change it tells of.
    pub fn write(&self) -> Write {
        let (kind, run, group) = match self {
            Notice::Opened { run, group } => ("opened", run, Some(group)),
            Notice::Canceled { run } => ("canceled", run, None),
            Notice::Event { run, group } => ("event", run, Some(group)),
            Notice::Ended { run } => ("ended", run, None),
        };
        let mut fields = vec![
            (b"kind".to_vec(), kind.as_bytes().to_vec()),
            (b"run".to_vec(), run.as_bytes().to_vec()),
        ];
        if let Some(group) = group {
            fields.push((b"group".to_vec(), group.as_bytes().to_vec()));
        }
        Write::XAdd {
            stream: NOTICES.to_owned(),
            fields,
            trim: Some(Trim::MaxLen(MAX_NOTICES)),
        }
    }

    /// The notice an entry holds, or `None` for an entry that is not one (anyone can `XADD`
    /// to the stream: such an entry is skipped).
    pub fn read(entry: &StreamEntry) -> Option<Notice> {
        let text = |name| {
            entry
                .field(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        let run = text("run")?;
        Some(match entry.field("kind")? {
            b"opened" => Notice::Opened {
                run,
                group: text("group")?,
            },
            b"canceled" => Notice::Canceled { run },
            b"event" => Notice::Event {
                run,
                group: text("group")?,
            },
            b"ended" => Notice::Ended { run },
            _ => return None,
        })
    }
}

/// A reader of the notices stream, from shortly before it was made.
#[derive(Debug, Clone)]
pub struct Tail {
    after: EntryId,
}

impl Default for Tail {
    fn default() -> Self {
        Tail::new()
    }
}

impl Tail {
    /// A reader of the notices written from `LOOK_BACK` (1 s) ago on.
    pub fn new() -> Tail {
        let from = now_ms().saturating_sub(u64::try_from(LOOK_BACK.as_millis()).unwrap_or(0));
        Tail {
            after: format!("{from}-0"),
        }
    }

    /// The next notices, waiting up to `block` for one; an empty list when none came.
    pub async fn next(
        &mut self,
        store: &dyn Store,
        block: Duration,
    ) -> Result<Vec<Notice>, StoreError> {
        let entries = store.xread(NOTICES, &self.after, 256, Some(block)).await?;
        if let Some(last) = entries.last() {
            self.after = last.id.clone();
        }
        Ok(entries.iter().filter_map(Notice::read).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_back_as_written_and_a_foreign_entry_is_skipped() {
        let notices = [
            Notice::Opened {
                run: "r1".into(),
                group: "acme".into(),
            },
            Notice::Canceled { run: "r2".into() },
            Notice::Event {
                run: "r3".into(),
                group: "globex".into(),
            },
            Notice::Ended { run: "r4".into() },
        ];
        for notice in notices {
            let Write::XAdd { fields, .. } = notice.write() else {
                panic!("not an XADD");
            };
            let entry = StreamEntry {
                id: "1-0".into(),
                fields,
            };
            assert_eq!(Notice::read(&entry), Some(notice));
        }
        for fields in [
            vec![(b"kind".to_vec(), b"opened".to_vec())],
            vec![
                (b"kind".to_vec(), b"unheard-of".to_vec()),
                (b"run".to_vec(), b"r".to_vec()),
            ],
            vec![
                (b"kind".to_vec(), b"opened".to_vec()),
                (b"run".to_vec(), vec![0xff, 0xfe]),
                (b"group".to_vec(), b"g".to_vec()),
            ],
        ] {
            let entry = StreamEntry {
                id: "1-0".into(),
                fields,
            };
            assert_eq!(Notice::read(&entry), None);
        }
    }
}
