//! `rag_search`: the tool agents search their group's knowledge base with. Configured as
//! `[tools.NAME] kind = "rag_search"` (options: `namespace`, `top_k`, `chunk_context`,
//! `search_type`) and registered only for agents whose `tools` allowlist names it. The group
//! always comes from the call's context, never from the model.

use async_trait::async_trait;
use serde_json::{json, Value};
use troupe_config::SearchType;
use troupe_runtime::retry::Transient as _;
use troupe_tools::{Tool, ToolContext, ToolError, ToolOutput};

use super::embed::Caller;
use super::error::RagError;
use super::search::{format_hits, SearchRequest};
use super::Rag;

/// The `kind` of `[tools.NAME]` that builds this tool.
pub const RAG_SEARCH_KIND: &str = "rag_search";
/// The largest `top_k` option (as `[rag] top_k`: a search keeps a heap of this size).
const MAX_TOP_K: i64 = 1_000;
/// The largest `chunk_context` option.
const MAX_CHUNK_CONTEXT: i64 = 100;

/// The `rag_search` tool.
#[derive(Debug)]
pub struct RagSearchTool {
    name: String,
    rag: Rag,
    namespace: Option<String>,
    top_k: Option<usize>,
    chunk_context: usize,
    search_type: Option<SearchType>,
}

/// Checks the options of every `rag_search` tool of `tools` (for `troupe check`).
pub fn check_options(
    tools: &std::collections::BTreeMap<String, troupe_config::ToolSettings>,
) -> Result<(), ToolError> {
    for (name, settings) in tools.iter().filter(|(_, s)| s.kind == RAG_SEARCH_KIND) {
        Options::parse(name, &settings.options)?;
    }
    Ok(())
}

/// `[tools.NAME.options]` of a `rag_search` tool.
#[derive(Debug, Default)]
struct Options {
    namespace: Option<String>,
    top_k: Option<usize>,
    chunk_context: usize,
    search_type: Option<SearchType>,
}

impl Options {
    fn parse(name: &str, options: &toml::Table) -> Result<Self, ToolError> {
        let config = |message: String| ToolError::Config {
            tool: name.to_owned(),
            message,
        };
        let mut parsed = Options::default();
        for (key, value) in options {
            match (key.as_str(), value) {
                ("namespace", toml::Value::String(ns)) => {
                    troupe_runtime::key_name::check_key_name("namespace", ns)
                        .map_err(|err| config(format!("options.namespace: {err}")))?;
                    parsed.namespace = Some(ns.clone());
                }
                ("top_k", toml::Value::Integer(n)) if (1..=MAX_TOP_K).contains(n) => {
                    parsed.top_k = Some(*n as usize);
                }
                ("chunk_context", toml::Value::Integer(n)) if (0..=MAX_CHUNK_CONTEXT).contains(n) => {
                    parsed.chunk_context = *n as usize;
                }
                ("search_type", toml::Value::String(kind)) => {
                    parsed.search_type = Some(SearchType::parse(kind).ok_or_else(|| {
                        config(format!(
                            "options.search_type: unknown value {kind:?}: expected \"vector\", \"text\" or \"hybrid\""
                        ))
                    })?);
                }
                ("namespace" | "top_k" | "chunk_context" | "search_type", _) => {
                    return Err(config(format!("options.{key}: wrong type or value")));
                }
                _ => {
                    return Err(config(format!(
                        "options.{key}: unknown option (known: namespace, top_k, chunk_context, search_type)"
                    )))
                }
            }
        }
        Ok(parsed)
    }
}

impl RagSearchTool {
    /// The tool `[tools.name]` with its `options`; an unknown or ill-typed option is a
    /// [`ToolError::Config`].
    pub fn new(name: &str, rag: Rag, options: &toml::Table) -> Result<Self, ToolError> {
        let options = Options::parse(name, options)?;
        Ok(RagSearchTool {
            name: name.to_owned(),
            rag,
            namespace: options.namespace,
            top_k: options.top_k,
            chunk_context: options.chunk_context,
            search_type: options.search_type,
        })
    }

    fn request(&self, args: &Value) -> Result<SearchRequest, ToolError> {
        let invalid = |message: &str| ToolError::InvalidArguments {
            tool: self.name.clone(),
            message: message.to_owned(),
        };
        let query = args
            .get("query")
            .and_then(Value::as_str)
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| invalid("\"query\" (a non-empty string) is required"))?;
        let mut request = SearchRequest::text(query);
        request.namespace = match args.get("namespace") {
            None | Some(Value::Null) => self.namespace.clone(),
            Some(Value::String(ns)) => Some(ns.clone()),
            Some(_) => return Err(invalid("\"namespace\" must be a string")),
        };
        request.top_k = match args.get("top_k") {
            None | Some(Value::Null) => self.top_k,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| (1..=50).contains(n))
                    .ok_or_else(|| invalid("\"top_k\" must be an integer from 1 to 50"))?
                    as usize,
            ),
        };
        request.search_type = match args.get("search_type") {
            None | Some(Value::Null) => self.search_type,
            Some(v) => Some(v.as_str().and_then(SearchType::parse).ok_or_else(|| {
                invalid("\"search_type\" must be \"vector\", \"text\" or \"hybrid\"")
            })?),
        };
        request.chunk_context = match args.get("chunk_context") {
            None | Some(Value::Null) => self.chunk_context,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= 5)
                .ok_or_else(|| invalid("\"chunk_context\" must be an integer from 0 to 5"))?
                as usize,
        };
        if let Some(filters) = args.get("filters").filter(|f| !f.is_null()) {
            let Some(filters) = filters.as_object() else {
                return Err(invalid(
                    "\"filters\" must be an object: name -> value or [values]",
                ));
            };
            for (name, value) in filters {
                let values = match value {
                    Value::String(v) => vec![v.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| invalid("filter values must be strings"))?,
                    _ => return Err(invalid("filter values must be strings")),
                };
                request.filters.insert(name.clone(), values);
            }
        }
        Ok(request)
    }
}

#[async_trait]
impl Tool for RagSearchTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        "Search your group's knowledge base. Returns numbered passages with their sources; cite them."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for."},
                "namespace": {"type": "string", "description": "Knowledge base namespace (default: the group's)."},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                "search_type": {"type": "string", "enum": ["vector", "text", "hybrid"]},
                "filters": {"type": "object", "description": "Field -> value or list of accepted values."},
                "chunk_context": {"type": "integer", "minimum": 0, "maximum": 5}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        if let Some(group) = args.get("group") {
            if group.as_str() != Some(ctx.group.as_str()) {
                return Err(ToolError::Denied {
                    tool: self.name.clone(),
                    reason: format!("the knowledge base of group {} only", ctx.group),
                });
            }
        }
        let request = self.request(&args)?;
        let caller = Caller::new(&ctx.group, &ctx.user, &ctx.agent);
        let hits = self
            .rag
            .search(&caller, request)
            .await
            .map_err(|err| match err {
                RagError::Forbidden { .. } => ToolError::Denied {
                    tool: self.name.clone(),
                    reason: err.to_string(),
                },
                RagError::Invalid { .. } => ToolError::InvalidArguments {
                    tool: self.name.clone(),
                    message: err.to_string(),
                },
                other => ToolError::Failed {
                    tool: self.name.clone(),
                    retryable: other.is_retryable(),
                    message: other.to_string(),
                },
            })?;
        let content = if hits.is_empty() {
            crate::NO_PASSAGE.to_owned()
        } else {
            format_hits(&hits)
        };
        Ok(ToolOutput {
            content,
            data: serde_json::to_value(&hits).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<Options, ToolError> {
        let table: toml::Table = text.parse().unwrap_or_else(|err| panic!("{err}"));
        Options::parse("kb", &table)
    }

    #[test]
    fn options_are_checked() {
        let ok = options("namespace = \"docs\"\ntop_k = 3\nsearch_type = \"text\"\n");
        let ok = ok.unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(ok.namespace.as_deref(), Some("docs"));
        assert_eq!(ok.search_type, Some(SearchType::Text));
        for (text, fragment) in [
            ("top_k = 0", "options.top_k: wrong type or value"),
            (
                "top_k = 1000000000000",
                "options.top_k: wrong type or value",
            ),
            (
                "chunk_context = 101",
                "options.chunk_context: wrong type or value",
            ),
            ("search_type = \"fuzzy\"", "unknown value \"fuzzy\""),
            ("namespace = \"a:b\"", "options.namespace"),
            ("group = \"other\"", "options.group: unknown option"),
        ] {
            let err = options(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }
}
