//! troupe's configuration: a TOML file (plus `TROUPE_<SECTION>__<KEY>` environment overrides)
//! read into a raw serde image ([`raw`](crate) stage), then validated into typed settings handed
//! to each component ([`Config`]). Every problem is reported with its file, line and column.
//!
//! ```
//! let config = troupe_config::load_str(
//!     "[models.m]\nprovider = \"scripted\"\n[agents.a]\nmodel = \"m\"\n",
//!     "troupe.toml",
//!     &[],
//! )
//! .map_err(|err| err.to_string())?;
//! assert_eq!(config.agents["a"].model, "m");
//! # Ok::<(), String>(())
//! ```
#![warn(missing_docs)]

mod defaults;
mod env;
mod error;
mod load;
mod locate;
mod raw;
mod settings;
mod suggest;
pub mod template;
mod validate;

pub use error::{ConfigError, Diagnostic, Location, Origin};
pub use load::{embedded, load, load_str};
pub use locate::locate;
pub use settings::SYSTEM_GROUP;
pub use settings::{
    AgentSettings, BudgetSettings, Config, CronSettings, CronTarget, DaemonSettings, IngressAuth,
    IngressSettings, LimitBackend, LimitKey, LimitKind, LimitSettings, LimitUnit, ModelSettings,
    OnStoreError, PoolSettings, Provider, RedisSettings, RouteTarget, Schedule, StepKind,
    StepSettings, StoreSettings, ToolSettings, WorkflowSettings, MAX_CALL_KEY,
};
pub use settings::{IndexKind, MemorySettings, RagSettings, SearchType};
