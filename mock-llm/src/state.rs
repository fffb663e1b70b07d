//! The state the handlers share ([`Shared`]: config, script, fault queue, stats, the stop
//! signal) and the per-request [`Options`] read from the `x-mock-*` headers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use tokio::sync::watch;

use crate::config::{Fault, MockConfig, Quirk};
use crate::script::Script;
use crate::stats::{RecordedRequest, Stats};

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) script: Script,
    queue: Mutex<VecDeque<Fault>>,
    pub(crate) persistent: Mutex<Option<Fault>>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) requests: Mutex<Vec<RecordedRequest>>,
    sequence: AtomicU64,
    /// `429` answers so far (which of `retry_after_values` is next).
    rate_limited: AtomicUsize,
    stopped: watch::Receiver<bool>,
}

/// The endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Embeddings,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, stopped: watch::Receiver<bool>) -> Shared {
        Shared {
            script: config.script(),
            queue: Mutex::new(config.faults.iter().copied().collect()),
            persistent: Mutex::new(config.fault),
            config,
            stats: Mutex::new(Stats::default()),
            requests: Mutex::new(Vec::new()),
            sequence: AtomicU64::new(0),
            rate_limited: AtomicUsize::new(0),
            stopped,
        }
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, VecDeque<Fault>> {
        lock(&self.queue)
    }

    /// Counts and records a request.
    pub(crate) fn record(&self, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) {
        {
            let mut stats = lock(&self.stats);
            stats.requests += 1;
            match endpoint {
                Endpoint::Chat => stats.chat_completions += 1,
                Endpoint::Embeddings => stats.embeddings += 1,
            }
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        lock(&self.requests).push(RecordedRequest {
            endpoint: match endpoint {
                Endpoint::Chat => "chat_completions",
                Endpoint::Embeddings => "embeddings",
            }
            .to_owned(),
            authorization,
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        });
    }

    /// The fault for this request: the header's, else the queue's next, else the persistent
    /// one. Counted when it is a real fault.
    pub(crate) fn next_fault(&self, from_header: Option<Fault>) -> Option<Fault> {
        let fault = from_header
            .or_else(|| self.queue().pop_front())
            .or(*lock(&self.persistent))
            .filter(|fault| *fault != Fault::Pass);
        if let Some(fault) = fault {
            let mut stats = lock(&self.stats);
            stats.faults += 1;
            *stats
                .faults_by_kind
                .entry(fault.name().to_owned())
                .or_default() += 1;
        }
        fault
    }

    /// Adds reported chat usage to the stats.
    pub(crate) fn add_chat_usage(&self, prompt: u64, completion: u64) {
        let mut stats = lock(&self.stats);
        stats.prompt_tokens += prompt;
        stats.completion_tokens += completion;
    }

    /// The raw `Retry-After` and `retry-after-ms` values of the next `429`, when configured.
    pub(crate) fn next_retry_after(&self) -> (Option<&str>, Option<&str>) {
        let n = self.rate_limited.fetch_add(1, Ordering::Relaxed);
        (
            pick(&self.config.retry_after_values, n),
            pick(&self.config.retry_after_ms_values, n),
        )
    }

    /// A fresh response id.
    pub(crate) fn next_id(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Resolves when the server is stopping.
    pub(crate) async fn stopping(&self) {
        until_stopped(self.stopped.clone()).await;
    }

    /// Sleeps `delay`; `false` if the server stopped meanwhile.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        if delay.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.stopping() => false,
        }
    }
}

/// Value `n` of `values`, cycling; `None` when there are none.
fn pick(values: &[String], n: usize) -> Option<&str> {
    (!values.is_empty()).then(|| values[n % values.len()].as_str())
}

pub(crate) async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stopped as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-request options: config values overridden by `x-mock-*` headers.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) fault: Option<Fault>,
    pub(crate) quirks: Vec<Quirk>,
    pub(crate) latency: Duration,
    pub(crate) token_latency: Duration,
    pub(crate) retry_after: Duration,
}

impl Options {
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        config: &MockConfig,
    ) -> Result<Options, String> {
        let text = |name: &str| -> Result<Option<&str>, String> {
            headers
                .get(name)
                .map(|value| value.to_str().map_err(|_| format!("{name}: not text")))
                .transpose()
        };
        let millis = |name: &str, default: Duration| -> Result<Duration, String> {
            match text(name)? {
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name}: {value:?} is not a number of milliseconds")),
                None => Ok(default),
            }
        };
        let fault = text("x-mock-fault")?
            .map(|name| name.parse::<Fault>())
            .transpose()?;
        let mut quirks = config.quirks.clone();
        if let Some(list) = text("x-mock-quirks")? {
            for name in list.split(',').filter(|name| !name.trim().is_empty()) {
                quirks.push(name.parse()?);
            }
        }
        Ok(Options {
            fault,
            quirks,
            latency: millis("x-mock-latency-ms", config.latency)?,
            token_latency: millis("x-mock-token-latency-ms", config.token_latency)?,
            retry_after: millis("x-mock-retry-after-ms", config.retry_after)?,
        })
    }

    pub(crate) fn has(&self, quirk: Quirk) -> bool {
        self.quirks.contains(&quirk)
    }
}
