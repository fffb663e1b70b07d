//! Every default value of the configuration, in one place. Durations are written as in the file.

use std::time::Duration;

// Bounds of every key
/// The longest duration any key accepts: 10 years (of 365.25 days). Anything longer is a
/// mistake, and clock arithmetic (`Instant::now() + d`, timers) must never overflow on it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);
/// The largest count or size any integer key accepts (10^12), unless the key has a lower
/// maximum of its own below.
pub(crate) const MAX_COUNT: u64 = 1_000_000_000_000;

// [daemon]
/// Time given to actors to finish their current message on shutdown before they are stopped.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Idle per-entity actors (threads, workflow runs) are passivated after this long.
pub(crate) const PASSIVATE_AFTER: Duration = Duration::from_secs(5 * 60);
/// A thread untouched this long expires (30 days; every turn renews it).
pub(crate) const THREAD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// An ended workflow run's keys (and its calls' threads) expire this long after its end.
pub(crate) const RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bounded mailbox size of every actor.
pub(crate) const MAILBOX_CAPACITY: usize = 256;
/// Restart intensity: at most this many restarts of a child ...
pub(crate) const MAX_RESTARTS: u32 = 5;
/// ... within this window, after which the supervisor escalates.
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// Actor threads (arbiters); 0 means one per CPU.
pub(crate) const WORKERS: usize = 0;
/// Workflow runs one daemon executes at once; also the default of `max_runs_per_group` (no
/// per-group bound of its own).
pub(crate) const MAX_RUNS: usize = 1000;
/// Most actor threads `workers` may ask for.
pub(crate) const MAX_WORKERS: u64 = 1024;
/// Daemon name when neither `/etc/hostname` nor `HOSTNAME` gives a host name.
pub(crate) const HOSTNAME_FALLBACK: &str = "troupe";

// [store]
/// Prefix of every Redis key the daemon writes.
pub(crate) const STORE_PREFIX: &str = "troupe:";
/// Time allowed to open a Redis connection.
pub(crate) const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one Redis reply.
pub(crate) const STORE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the exponential reconnect delay.
pub(crate) const STORE_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

// [ingress]
/// Stream tasks are read from.
pub(crate) const INGRESS_STREAM: &str = "tasks";
/// Stream results are written to.
pub(crate) const INGRESS_RESULTS: &str = "results";
/// Stream poisoned tasks are moved to after `max_deliveries`.
pub(crate) const INGRESS_DEAD: &str = "dead";
/// Consumer group of all daemons sharing the stream.
pub(crate) const INGRESS_GROUP: &str = "troupe";
/// Entries read per XREADGROUP.
pub(crate) const INGRESS_BATCH: usize = 64;
/// How long one XREADGROUP blocks waiting for entries.
pub(crate) const INGRESS_BLOCK: Duration = Duration::from_secs(1);
/// Pending entries idle this long are claimed from dead consumers.
pub(crate) const INGRESS_CLAIM_IDLE: Duration = Duration::from_secs(30);
/// Deliveries of one entry before it goes to the dead stream.
pub(crate) const INGRESS_MAX_DELIVERIES: u32 = 5;
/// Tasks being processed at once by this daemon; reading pauses above it. Also the default
/// of `max_in_flight_per_group` (no per-group bound of its own).
pub(crate) const INGRESS_MAX_IN_FLIGHT: usize = 512;
/// Largest accepted task input, in bytes.
pub(crate) const INGRESS_MAX_INPUT_BYTES: usize = 65_536;
/// Largest accepted stream entry (every field name and value), in bytes: the default input
/// plus room for the task's other fields and a signature.
pub(crate) const INGRESS_MAX_ENTRY_BYTES: usize = 131_072;
/// How far ahead of now a signed task's `expires` may be (`[ingress.auth] max_expiry`); it
/// bounds how long a captured task could be replayed and how long its nonce is kept.
pub(crate) const INGRESS_AUTH_MAX_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Approximate MAXLEN of the results and dead streams.
pub(crate) const INGRESS_MAX_LEN: u64 = 1_000_000;
/// A task's reply stream expires this long after its last result or acceptance.
pub(crate) const INGRESS_REPLY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Another consumer of the group owning nothing and idle this long is deleted (a retired
/// generation's, a dead daemon's); a live consumer reads every `block`.
pub(crate) const INGRESS_CONSUMER_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// A foreign group of the ingress stream nobody read from this long stops holding trimming
/// back.
pub(crate) const INGRESS_ABANDONED_GROUP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

// [models.X]
/// OpenAI-compatible endpoint when `base_url` is not given.
pub(crate) const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Time allowed to connect to the model server.
pub(crate) const MODEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A streaming response silent for this long is abandoned.
pub(crate) const MODEL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one model request (transient errors, 429, 5xx).
pub(crate) const MODEL_MAX_RETRIES: u32 = 4;
/// Total time spent retrying one model request.
pub(crate) const MODEL_MAX_RETRY_TIME: Duration = Duration::from_secs(60);
/// First backoff before retrying a model request (doubled per retry, with jitter) ...
pub(crate) const MODEL_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// ... up to this; a server's Retry-After takes precedence.
pub(crate) const MODEL_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest response read from a model server, in bytes (8 MiB): a non-streamed body, one
/// SSE event, and a streamed answer's assembled text and tool calls. Past it the call fails
/// (`ResponseTooLarge`, not retried); nothing is buffered beyond it.
pub(crate) const MODEL_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// The largest `max_response_bytes` accepted (1 GiB).
pub(crate) const MODEL_MAX_RESPONSE_BYTES_LIMIT: u64 = 1 << 30;
/// Cost per million input / output tokens (free unless told).
pub(crate) const MODEL_COST_PER_MILLION: f64 = 0.0;
/// Artificial latency of the scripted model.
pub(crate) const SCRIPTED_LATENCY: Duration = Duration::ZERO;

// [agents.X]
/// System instructions.
pub(crate) const AGENT_INSTRUCTIONS: &str = "";
/// Model calls (tool round trips) per task before the agent gives up.
pub(crate) const AGENT_MAX_STEPS: u32 = 8;
/// Sampling temperature.
pub(crate) const AGENT_TEMPERATURE: f32 = 0.2;
/// Recent thread messages sent to the model.
pub(crate) const AGENT_CONTEXT_MESSAGES: usize = 20;
/// Tool calls run per model response; the calls beyond it are answered "refused" to the model.
pub(crate) const AGENT_MAX_TOOL_CALLS: usize = 16;
/// The largest `max_tool_calls` accepted.
pub(crate) const AGENT_MAX_TOOL_CALLS_LIMIT: u64 = 1_000;
/// Tool calls of one response running at once.
pub(crate) const AGENT_TOOL_CONCURRENCY: usize = 8;
/// The largest `tool_concurrency` accepted.
pub(crate) const AGENT_TOOL_CONCURRENCY_LIMIT: u64 = 256;

// [tools.X]
/// Time allowed for one tool call.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Tools run without asking a client first.
pub(crate) const TOOL_REQUIRES_APPROVAL: bool = false;

// [limits.X]
/// Shards of a limit's counter.
pub(crate) const LIMIT_SHARDS: u32 = 1;
/// How long a caller waits for capacity; zero fails immediately.
pub(crate) const LIMIT_MAX_WAIT: Duration = Duration::ZERO;
/// Units a limit may promise ahead (reservations, waiting callers), in capacities: by default
/// one more bucket (token bucket) or window (fixed window) may be reserved.
pub(crate) const LIMIT_MAX_RESERVED_CAPACITIES: u64 = 1;

// [pools.X]
/// Jobs of a pool running at once.
pub(crate) const POOL_MAX_PARALLELISM: usize = 8;
/// Attempts of one job, the first included.
pub(crate) const POOL_MAX_ATTEMPTS: u32 = 3;
/// Delay before the first retry ...
pub(crate) const POOL_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// ... multiplied by this factor on each further retry ...
pub(crate) const POOL_BACKOFF_BASE: f64 = 2.0;
/// ... up to this delay.
pub(crate) const POOL_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Randomise retry delays (full jitter).
pub(crate) const POOL_JITTER: bool = true;
/// Finished jobs' records are kept this long.
pub(crate) const POOL_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

// [crons.X]
/// Input handed to the cron's agent or workflow.
pub(crate) const CRON_INPUT: &str = "";

// [rag]
/// Embedder: the local lexical embedder (no network) unless a `[models.X]` is named.
pub(crate) const RAG_EMBEDDER: &str = "local";
/// Dimensions of the local embedder's vectors.
pub(crate) const RAG_DIMENSIONS: usize = 384;
/// The largest `dimensions` accepted (vectors are allocated at this size).
pub(crate) const RAG_MAX_DIMENSIONS: u64 = 65_536;
/// Target chunk length, in characters (about 200 tokens).
pub(crate) const RAG_CHUNK_SIZE: usize = 800;
/// Characters of the previous chunk repeated at the start of the next one.
pub(crate) const RAG_CHUNK_OVERLAP: usize = 100;
/// Hard cap of a chunk, in characters: a longer sentence is cut.
pub(crate) const RAG_MAX_CHUNK: usize = 1_200;
/// Chunks per embedding request.
pub(crate) const RAG_EMBED_BATCH: usize = 64;
/// Embedding requests of one ingestion in flight at once.
pub(crate) const RAG_EMBED_PARALLELISM: usize = 4;
/// Hits returned by a search when the caller gives no `top_k`.
pub(crate) const RAG_TOP_K: usize = 5;
/// The largest `top_k` accepted (a search keeps a heap of this size).
pub(crate) const RAG_MAX_TOP_K: u64 = 1_000;
/// Vector hits scoring below this are dropped (cosine similarity, -1..1).
pub(crate) const RAG_VECTOR_SCORE_THRESHOLD: f32 = 0.0;
/// Search type when the caller gives none.
pub(crate) const RAG_SEARCH_TYPE: &str = "hybrid";
/// Weight of the vector ranking in hybrid search (reciprocal rank fusion).
pub(crate) const RAG_VECTOR_WEIGHT: f32 = 1.0;
/// Weight of the keyword ranking in hybrid search.
pub(crate) const RAG_TEXT_WEIGHT: f32 = 1.0;
/// Index kind: exact search over contiguous f32 vectors, or "auto" (approximate above
/// `approximate_above` chunks).
pub(crate) const RAG_INDEX: &str = "exact";
/// Chunks of a namespace above which `index = "auto"` builds the approximate index.
pub(crate) const RAG_APPROXIMATE_ABOVE: usize = 50_000;
/// Bytes of in-process namespace indexes (vectors, texts, keyword and vector indexes) a
/// daemon keeps (256 MiB); past it the least recently searched namespaces are dropped and
/// loaded again from the store at their next search.
pub(crate) const RAG_INDEX_CACHE: usize = 256 * 1024 * 1024;

// [agents.X.memory]
/// Earlier messages recalled per turn.
pub(crate) const MEMORY_LIMIT: usize = 3;
/// The largest memory `limit` accepted (a recall searches for three times as many).
pub(crate) const MEMORY_MAX_LIMIT: u64 = 100;
/// Messages before and after each recalled one.
pub(crate) const MEMORY_RANGE: usize = 1;
/// The largest memory `range` accepted.
pub(crate) const MEMORY_MAX_RANGE: u64 = 100;
/// Recalled messages scoring below this are dropped.
pub(crate) const MEMORY_MIN_SCORE: f32 = 0.1;
