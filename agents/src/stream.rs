//! Live deltas: the text of a streamed answer, appended to a per-turn stream in the store as
//! it is generated, so any Redis client can follow it with `XREAD` and resume from any id.
//!
//! Deltas are coalesced (every [`COALESCE`] or [`MAX_CHUNK`] characters, whichever first) to
//! keep the write rate bounded. Entries have one field, `delta`; the last entry has `done`
//! (`ok` or `error`) and, on error, `error`. The stream expires [`RETENTION`] after its last
//! write, whether the turn ended or its daemon died.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;
use troupe_runtime::store::{Store, Write};

use crate::model::DeltaSink;

/// Longest time a delta waits before it is written.
pub const COALESCE: Duration = Duration::from_millis(100);
/// Characters that trigger a write at once.
pub const MAX_CHUNK: usize = 512;
/// How long a delta stream is kept after its last write, at most (never longer than its
/// thread: see [`DeltaWriter::start`]).
pub const RETENTION: Duration = Duration::from_secs(3600);

/// Writes one turn's deltas to its stream.
pub struct DeltaWriter {
    sink: Option<DeltaSink>,
    task: JoinHandle<()>,
    store: Arc<dyn Store>,
    stream: String,
    ttl: Duration,
}

impl DeltaWriter {
    /// Starts writing deltas sent to [`sink`](Self::sink) to `stream`, which expires
    /// [`RETENTION`] or `thread_retention` (the shorter) after its last write.
    pub fn start(store: Arc<dyn Store>, stream: String, thread_retention: Duration) -> Self {
        let ttl = RETENTION.min(thread_retention);
        let (sink, rx) = unbounded_channel();
        let task = tokio::spawn(pump(store.clone(), stream.clone(), ttl, rx));
        DeltaWriter {
            sink: Some(sink),
            task,
            store,
            stream,
            ttl,
        }
    }

    /// How long the stream is kept after its last write.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Where the model sends its deltas.
    pub fn sink(&self) -> Option<DeltaSink> {
        self.sink.clone()
    }

    /// Flushes what is buffered, appends the final entry and sets the stream's expiry.
    pub async fn finish(mut self, error: Option<&str>) {
        self.sink = None;
        // Every sender is gone once the model call returned; the pump drains and ends.
        if let Err(err) = (&mut self.task).await {
            tracing::warn!(stream = %self.stream, error = %err, "delta writer failed");
        }
        let mut fields = vec![(
            b"done".to_vec(),
            if error.is_some() {
                b"error".to_vec()
            } else {
                b"ok".to_vec()
            },
        )];
        if let Some(error) = error {
            fields.push((b"error".to_vec(), error.as_bytes().to_vec()));
        }
        let writes = vec![
            Write::XAdd {
                stream: self.stream.clone(),
                fields,
                trim: None,
            },
            Write::Expire {
                key: self.stream.clone(),
                ttl: self.ttl,
            },
        ];
        if let Err(err) = self.store.apply(writes).await {
            tracing::warn!(stream = %self.stream, error = %err, "could not close delta stream");
        }
    }
}

async fn pump(
    store: Arc<dyn Store>,
    stream: String,
    ttl: Duration,
    mut rx: UnboundedReceiver<String>,
) {
    let mut buffer = String::new();
    loop {
        let next = if buffer.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(COALESCE, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&*store, &stream, ttl, &mut buffer).await;
                    continue;
                }
            }
        };
        match next {
            Some(delta) => {
                buffer.push_str(&delta);
                if buffer.len() >= MAX_CHUNK {
                    flush(&*store, &stream, ttl, &mut buffer).await;
                }
            }
            None => {
                flush(&*store, &stream, ttl, &mut buffer).await;
                return;
            }
        }
    }
}

async fn flush(store: &dyn Store, stream: &str, ttl: Duration, buffer: &mut String) {
    if buffer.is_empty() {
        return;
    }
    let text = std::mem::take(buffer);
    // Each write renews the expiry: the stream of a turn cut short (its daemon died) goes too.
    let writes = vec![
        Write::XAdd {
            stream: stream.to_owned(),
            fields: vec![(b"delta".to_vec(), text.into_bytes())],
            trim: None,
        },
        Write::Expire {
            key: stream.to_owned(),
            ttl,
        },
    ];
    if let Err(err) = store.apply(writes).await {
        // Deltas are a live view; the finished message is stored whole either way.
        tracing::warn!(%stream, error = %err, "dropped a delta");
    }
}
