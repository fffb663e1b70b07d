//! The built-in tool kinds: `[tools.NAME] kind = "…"` picks one, `[tools.NAME.options]` is
//! read by it.

mod arguments;
mod current_time;
mod http_get;
mod options;

use std::sync::Arc;

use troupe_config::ToolSettings;

pub use current_time::CurrentTime;
pub use http_get::{HttpGet, HttpGetOptions};
pub(crate) use options::Options;

use crate::error::ToolError;
use crate::tool::Tool;

/// Every built-in kind, in the order error messages list them.
pub const KINDS: &[&str] = &["current_time", "http_get"];

/// Kinds built by other crates, which register them themselves (`rag_search`: the agents
/// crate, which holds the knowledge bases). [`ToolRegistry::from_config`] skips them.
///
/// [`ToolRegistry::from_config`]: crate::ToolRegistry::from_config
pub const PROVIDED_KINDS: &[&str] = &["rag_search"];

/// Builds the tool `[tools.name]` from its settings.
pub(crate) fn build(name: &str, settings: &ToolSettings) -> Result<Arc<dyn Tool>, ToolError> {
    match settings.kind.as_str() {
        "current_time" => {
            Options::new(name, &settings.options).finish()?;
            Ok(Arc::new(CurrentTime::new(name)))
        }
        "http_get" => {
            let options = HttpGetOptions::parse(name, &settings.options)?;
            Ok(Arc::new(HttpGet::new(name, options, settings.timeout)?))
        }
        other => Err(ToolError::Config {
            tool: name.to_owned(),
            message: format!(
                "unknown kind \"{other}\": valid kinds are {}",
                KINDS
                    .iter()
                    .chain(PROVIDED_KINDS)
                    .map(|kind| format!("\"{kind}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}
