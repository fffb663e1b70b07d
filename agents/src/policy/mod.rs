//! The policies around a model call, as layers: [`budget`] (the group's daily budget),
//! [`limits`] (the caller's rate limits), [`metrics`] (latency and tokens), [`usage`] (the
//! usage counters) and [`audit`] (the `usage` event). Chat calls (the agent loop) and
//! embedding calls (the knowledge bases) go through the same [`Policies`].
//!
//! A layer may refuse a call before it is made ([`Layer::admit`]) and settles it after
//! ([`Layer::settle`]), whatever its outcome, adding the writes that record it to one batch:
//! the usage counters and the audit event of a call reach the store together, or not at
//! all. A failure to record is logged and never fails the call: the answer matters more than
//! its accounting.
//!
//! A caller that writes a batch of its own right after the call (a workflow call's one-shot
//! turn: its thread and its journal entry) may [`Hold`] that record: the last answered call's
//! writes then wait in the hold for the caller's batch, and are sent before the next call
//! is admitted (so a budget still sees every earlier call).

pub mod audit;
pub mod budget;
pub mod limits;
pub mod metrics;
pub mod usage;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use troupe_runtime::clock::now_ms;
use troupe_runtime::limit::Limiters;
use troupe_runtime::store::{Store, Write};

use crate::error::AgentError;
use crate::model::{ModelError, Usage};
use crate::usage::{Prices, UsageLedger, UsageRecord};

/// One model call: who makes it, for what, and what it is expected to use.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Tenant group.
    pub group: &'a str,
    /// End user.
    pub user: &'a str,
    /// The agent (or tool, or command) that calls.
    pub agent: &'a str,
    /// The thread it runs for (empty when none: embeddings).
    pub thread: &'a str,
    /// The configured model (`[models.NAME]`).
    pub model: &'a str,
    /// The model's prices.
    pub prices: Prices,
    /// The rate limits (`[limits.NAME]`) that guard it.
    pub limits: &'a [String],
    /// Tokens it is expected to use, for token limits.
    pub estimated_tokens: u64,
    /// Where an answered call's record waits for the caller's batch, if it has one.
    pub hold: Option<&'a Hold>,
}

/// The record of a turn's last answered call, held for the batch its caller writes next.
#[derive(Debug, Default)]
pub struct Hold {
    writes: Mutex<Vec<Write>>,
}

impl Hold {
    /// The writes held, taken (to send in the caller's batch).
    pub fn take(&self) -> Vec<Write> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put(&self, batch: Vec<Write>) {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
    }
}

/// How a call ended, as the layers settle it.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The model answered; its usage as recorded.
    Answered(&'a UsageRecord),
    /// The model failed after `latency`.
    Failed {
        /// Why.
        error: &'a ModelError,
        /// Wall time of the call, retries included.
        latency: Duration,
    },
    /// A later layer refused the call: it was never made.
    Refused,
}

/// One policy around model calls.
#[async_trait]
pub trait Layer: Send + Sync + 'static {
    /// Before the call: refuses it with an error, or lets it through (taking what it needs,
    /// such as rate-limit units, which [`Layer::settle`] then settles).
    async fn admit(&self, call: &Call<'_>) -> Result<(), AgentError> {
        let _ = call;
        Ok(())
    }

    /// After the call (or after a later layer refused it): settles what `admit` took, and
    /// adds what records the call to `batch`.
    async fn settle(&self, call: &Call<'_>, outcome: &Outcome<'_>, batch: &mut Vec<Write>);
}

/// The layers every model call goes through, in order: admitted first to last, settled last
/// to first. Cheap to clone.
#[derive(Clone)]
pub struct Policies {
    layers: Arc<[Arc<dyn Layer>]>,
    store: Arc<dyn Store>,
}

impl Policies {
    /// The daemon's policies: the group's budget, then the caller's rate limits, the
    /// metrics, the usage counters and the audit event.
    pub fn new(store: Arc<dyn Store>, ledger: UsageLedger, limiters: Limiters) -> Self {
        let layers: Vec<Arc<dyn Layer>> = vec![
            Arc::new(budget::BudgetLayer::new(ledger.clone())),
            Arc::new(limits::LimitLayer::new(limiters)),
            Arc::new(metrics::MetricsLayer),
            Arc::new(usage::UsageLayer::new(ledger)),
            Arc::new(audit::AuditLayer),
        ];
        Policies::with_layers(store, layers)
    }

    /// Policies of the given `layers`, recording into `store`.
    pub fn with_layers(store: Arc<dyn Store>, layers: Vec<Arc<dyn Layer>>) -> Self {
        Policies {
            layers: layers.into(),
            store,
        }
    }

    /// Makes the call `op` under the policies: `op` yields the answer and its usage (the
    /// server's, or an estimate when it reported none).
    ///
    /// `op` is boxed before anything awaits it: a model call's future is large, and a future
    /// passed by value to an `async fn` is stored twice in its state.
    pub fn call<'a, T: 'a, F>(
        &'a self,
        call: &'a Call<'a>,
        op: F,
    ) -> impl Future<Output = Result<T, AgentError>> + 'a
    where
        F: Future<Output = Result<(T, Usage), ModelError>> + 'a,
    {
        self.call_boxed(call, Box::pin(op))
    }

    async fn call_boxed<T, F>(&self, call: &Call<'_>, op: Pin<Box<F>>) -> Result<T, AgentError>
    where
        F: Future<Output = Result<(T, Usage), ModelError>>,
    {
        if let Some(hold) = call.hold {
            // The previous call's record first: this call's budget must see it.
            self.record(hold.take()).await;
        }
        for (admitted, layer) in self.layers.iter().enumerate() {
            if let Err(refusal) = layer.admit(call).await {
                let mut batch = Vec::new();
                for earlier in self.layers[..admitted].iter().rev() {
                    earlier.settle(call, &Outcome::Refused, &mut batch).await;
                }
                self.record(batch).await;
                return Err(refusal);
            }
        }
        let started = Instant::now();
        let result = op.await;
        let latency = started.elapsed();
        let mut batch = Vec::new();
        match result {
            Ok((answer, usage)) => {
                let record = record(call, usage, latency);
                self.settle(call, &Outcome::Answered(&record), &mut batch)
                    .await;
                match call.hold {
                    Some(hold) => hold.put(batch),
                    None => self.record(batch).await,
                }
                Ok(answer)
            }
            Err(error) => {
                let outcome = Outcome::Failed {
                    error: &error,
                    latency,
                };
                self.settle(call, &outcome, &mut batch).await;
                self.record(batch).await;
                Err(error.into())
            }
        }
    }

    async fn settle(&self, call: &Call<'_>, outcome: &Outcome<'_>, batch: &mut Vec<Write>) {
        for layer in self.layers.iter().rev() {
            layer.settle(call, outcome, batch).await;
        }
    }

    async fn record(&self, batch: Vec<Write>) {
        if batch.is_empty() {
            return;
        }
        if let Err(err) = self.store.apply(batch).await {
            tracing::warn!(error = %err, "could not record a model call's usage");
        }
    }
}

/// The usage record of an answered call.
fn record(call: &Call<'_>, usage: Usage, latency: Duration) -> UsageRecord {
    UsageRecord {
        group: call.group.to_owned(),
        user: call.user.to_owned(),
        agent: call.agent.to_owned(),
        thread: call.thread.to_owned(),
        model: call.model.to_owned(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        cost: call.prices.cost(&usage),
        at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use troupe_runtime::store::MemoryStore;

    use super::*;

    /// Logs what it is asked, and refuses when told to.
    struct Probe {
        name: &'static str,
        refuse: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Layer for Probe {
        async fn admit(&self, _: &Call<'_>) -> Result<(), AgentError> {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("admit {}", self.name));
            if self.refuse {
                return Err(AgentError::Invalid {
                    what: "call",
                    message: format!("refused by {}", self.name),
                });
            }
            Ok(())
        }

        async fn settle(&self, _: &Call<'_>, outcome: &Outcome<'_>, batch: &mut Vec<Write>) {
            let what = match outcome {
                Outcome::Answered(record) => format!("answered {}", record.input_tokens),
                Outcome::Failed { .. } => "failed".to_owned(),
                Outcome::Refused => "refused".to_owned(),
            };
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("settle {} {what}", self.name));
            batch.push(Write::Set {
                key: format!("probe:{}", self.name),
                value: what.into_bytes(),
                ttl: None,
            });
        }
    }

    fn call() -> Call<'static> {
        Call {
            group: "acme",
            user: "ann",
            agent: "helper",
            thread: "t1",
            model: "m",
            prices: Prices::default(),
            limits: &[],
            estimated_tokens: 10,
            hold: None,
        }
    }

    fn policies(
        refusing: Option<&'static str>,
    ) -> (Policies, Arc<Mutex<Vec<String>>>, Arc<MemoryStore>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(MemoryStore::new());
        let layers = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                Arc::new(Probe {
                    name,
                    refuse: refusing == Some(name),
                    log: log.clone(),
                }) as Arc<dyn Layer>
            })
            .collect();
        (Policies::with_layers(store.clone(), layers), log, store)
    }

    #[tokio::test]
    async fn layers_admit_in_order_settle_in_reverse_and_record_in_one_batch() {
        let (policies, log, store) = policies(None);
        let usage = Usage {
            input_tokens: 7,
            output_tokens: 3,
        };
        let answer = policies
            .call(&call(), async move { Ok(("hi", usage)) })
            .await
            .expect("answered");
        assert_eq!(answer, "hi");
        assert_eq!(
            *log.lock().unwrap_or_else(|e| e.into_inner()),
            [
                "admit a",
                "admit b",
                "admit c",
                "settle c answered 7",
                "settle b answered 7",
                "settle a answered 7"
            ]
        );
        for name in ["a", "b", "c"] {
            let value = store.get(&format!("probe:{name}")).await.expect("get");
            assert_eq!(value.as_deref(), Some(b"answered 7".as_slice()));
        }
    }

    #[tokio::test]
    async fn a_held_record_waits_for_the_callers_batch_and_is_sent_before_the_next_call() {
        let (policies, log, store) = policies(None);
        let hold = Hold::default();
        let held = Call {
            hold: Some(&hold),
            ..call()
        };
        let usage = |input_tokens| Usage {
            input_tokens,
            output_tokens: 1,
        };
        policies
            .call(&held, async move { Ok(((), usage(7))) })
            .await
            .expect("answered");
        // Settled, but not written: it waits in the hold.
        assert!(store.get("probe:a").await.expect("get").is_none());
        // The next call of the turn writes it before it is made (before its admission: its
        // budget sees it)...
        let seen = store.clone();
        policies
            .call(&held, async move {
                let before = seen.get("probe:a").await.expect("get");
                assert_eq!(before.as_deref(), Some(b"answered 7".as_slice()));
                Ok(((), usage(9)))
            })
            .await
            .expect("answered");
        assert_eq!(log.lock().unwrap_or_else(|e| e.into_inner()).len(), 12);
        // ... and holds its own for the caller, who sends it with its batch.
        let writes = hold.take();
        assert_eq!(writes.len(), 3, "{writes:?}");
        assert_eq!(
            store.get("probe:a").await.expect("get").as_deref(),
            Some(b"answered 7".as_slice())
        );
        store.apply(writes).await.expect("apply");
        assert_eq!(
            store.get("probe:a").await.expect("get").as_deref(),
            Some(b"answered 9".as_slice())
        );
        assert!(hold.take().is_empty());
    }

    #[tokio::test]
    async fn a_refusal_settles_only_the_layers_before_it_and_never_calls() {
        let (policies, log, _) = policies(Some("b"));
        let called = std::sync::atomic::AtomicBool::new(false);
        let result: Result<(), AgentError> = policies
            .call(&call(), async {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(((), Usage::default()))
            })
            .await;
        let err = result.expect_err("refused");
        assert!(err.to_string().contains("refused by b"), "{err}");
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            *log.lock().unwrap_or_else(|e| e.into_inner()),
            ["admit a", "admit b", "settle a refused"]
        );
    }

    #[tokio::test]
    async fn a_failed_call_is_settled_as_failed_by_every_layer() {
        let (policies, log, _) = policies(None);
        let result: Result<(), AgentError> = policies
            .call(&call(), async {
                Err(ModelError::Timeout {
                    model: "m".into(),
                    phase: "waiting for a response",
                    after: Duration::from_secs(1),
                })
            })
            .await;
        assert!(matches!(result, Err(AgentError::Model(_))), "{result:?}");
        assert_eq!(
            log.lock().unwrap_or_else(|e| e.into_inner())[3..],
            ["settle c failed", "settle b failed", "settle a failed"]
        );
    }
}
