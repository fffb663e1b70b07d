//! troupe-mock-llm: an OpenAI-compatible mock model server for tests and demos, and the
//! scripted replies it shares with troupe's in-process scripted model.
//!
//! - [`script`]: reply rules, the word-count token rule, hashed embeddings (always built).
//! - With the `server` feature (default): [`MockServer::start`] runs the server on
//!   `127.0.0.1:0` and returns a [`MockHandle`] (base URL, fault queue, stats; stops when
//!   dropped); [`serve`] runs it on a given address for `troupe mock-llm`.
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: plain and SSE streaming (`stream: true`, with
//!   `stream_options.include_usage`), tool calls (streamed ones split across chunks by `index`).
//! - `POST /v1/embeddings`: deterministic vectors ([`script::embed`]).
//! - `GET /_mock/stats`: [`Stats`] as JSON; `POST /_mock/faults` `{"faults": ["429", ...]}`
//!   queues faults; `DELETE /_mock/faults` clears the queue.
//!
//! # Per-request headers
//!
//! `x-mock-fault` (a [`Fault`] name, overrides the queue), `x-mock-quirks` (comma-separated
//! [`Quirk`] names, added to the configured ones), `x-mock-latency-ms`,
//! `x-mock-token-latency-ms`, `x-mock-retry-after-ms`.
//!
//! # Hostile answers
//!
//! For the client's defences: `429`s with raw `Retry-After` values (`retry_after_values`:
//! huge, negative, NaN, dates), `huge_body` (a 100 MiB answer or SSE event, made as it is
//! sent), `endless` (a body or stream without end), `huge_header` (a 1 MiB header value),
//! `echo` (a 400 repeating the request's URL and `Authorization`), and
//! rules whose tool call is repeated (`repeat`: thousands of calls in one reply).

#![warn(missing_docs)]

mod error;
pub mod script;

#[cfg(feature = "server")]
mod chat;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod control;
#[cfg(feature = "server")]
mod embeddings;
#[cfg(feature = "server")]
mod respond;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod state;
#[cfg(feature = "server")]
mod stats;

pub use error::MockError;
pub use script::Script;

#[cfg(feature = "server")]
pub use config::{Fault, MockConfig, Quirk, DEFAULT_HUGE_BYTES, HUGE_HEADER_BYTES};
#[cfg(feature = "server")]
pub use server::{serve, MockHandle, MockServer};
#[cfg(feature = "server")]
pub use stats::{RecordedRequest, Stats};
