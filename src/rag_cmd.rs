//! `troupe rag`: add files to a group's knowledge base, search it, list and delete entries
//! and namespaces. Works on the configured store directly, so with the Redis store running
//! daemons see the changes at their next search (the memory store keeps nothing after the
//! command).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use troupe_agents::rag::{Caller, NewDocument, Query, Rag, SearchRequest};
use troupe_agents::{Budget, Policies, UsageLedger};
use troupe_config::{Config, SearchType, StoreSettings};
use troupe_runtime::limit::Limiters;

use crate::serve::open_store;

/// `troupe rag …`
#[derive(Debug, Subcommand)]
pub enum RagCommand {
    /// Add (or replace) documents: one entry per file, keyed by file name unless `--key`.
    Add {
        /// Text or markdown files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The tenant group.
        #[arg(long)]
        group: String,
        /// The namespace (`default` when absent).
        #[arg(long)]
        namespace: Option<String>,
        /// The entry key (only with one file).
        #[arg(long)]
        key: Option<String>,
        /// The title (only with one file; else the first `# heading` or the file name).
        #[arg(long)]
        title: Option<String>,
        /// Metadata `name=value`, repeatable.
        #[arg(long = "meta", value_parser = pair)]
        meta: Vec<(String, String)>,
        /// Filter value `name=value`, repeatable.
        #[arg(long = "filter", value_parser = pair)]
        filters: Vec<(String, String)>,
        /// Importance, 0 to 1.
        #[arg(long)]
        importance: Option<f32>,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Search a namespace and print the hits.
    Search {
        /// The query text.
        query: String,
        /// The tenant group.
        #[arg(long)]
        group: String,
        /// The namespace (`default` when absent).
        #[arg(long)]
        namespace: Option<String>,
        /// `vector`, `text` or `hybrid` (`[rag] search_type` when absent).
        #[arg(long = "type", value_parser = search_type)]
        search_type: Option<SearchType>,
        /// Hits wanted (`[rag] top_k` when absent).
        #[arg(long)]
        top_k: Option<usize>,
        /// Accepted filter value `name=value`, repeatable (several values of one name: any).
        #[arg(long = "filter", value_parser = pair)]
        filters: Vec<(String, String)>,
        /// Chunks before and after each hit to include.
        #[arg(long, default_value_t = 0)]
        context: usize,
        /// Print the hits as JSON.
        #[arg(long)]
        json: bool,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Delete one entry (`--key`) or a whole namespace (`--namespace` alone).
    Delete {
        /// The tenant group.
        #[arg(long)]
        group: String,
        /// The entry key.
        #[arg(long, required_unless_present = "namespace")]
        key: Option<String>,
        /// The namespace (with `--key`: where the entry is; alone: delete it all).
        #[arg(long)]
        namespace: Option<String>,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the group's namespaces, or the entries of one.
    List {
        /// The tenant group.
        #[arg(long)]
        group: String,
        /// The namespace whose entries to list.
        #[arg(long)]
        namespace: Option<String>,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected name=value, got {text:?}")),
    }
}

fn search_type(text: &str) -> Result<SearchType, String> {
    SearchType::parse(text).ok_or_else(|| format!("expected vector, text or hybrid, got {text:?}"))
}

/// Runs a `troupe rag` command.
pub fn run(command: RagCommand) -> anyhow::Result<()> {
    crate::serve::block_on(execute(command))
}

async fn open(path: &std::path::Path) -> anyhow::Result<(Config, Rag)> {
    let config = troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
    let store = open_store(&config.store).await?;
    let budgets = config
        .budgets
        .iter()
        .map(|(group, budget)| (group.clone(), Budget::from(budget)))
        .collect();
    let usage = UsageLedger::new(Arc::clone(&store), budgets);
    let limiters = Limiters::new(&config.limits, Arc::clone(&store))?;
    let policies = Policies::new(Arc::clone(&store), usage, limiters);
    let rag = troupe_agents::embedder::rag_from_config(&config, store, policies)?;
    Ok((config, rag))
}

async fn execute(command: RagCommand) -> anyhow::Result<()> {
    match command {
        RagCommand::Add {
            files,
            group,
            namespace,
            key,
            title,
            meta,
            filters,
            importance,
            config,
        } => {
            if files.len() > 1 && (key.is_some() || title.is_some()) {
                bail!("--key and --title name one entry: give one file with them");
            }
            let (config, rag) = open(&config).await?;
            if matches!(config.store, StoreSettings::Memory) {
                eprintln!("warning: the memory store keeps nothing after this command; use a Redis store to share the knowledge base");
            }
            let caller = Caller::new(&group, "cli", "cli");
            let metadata: serde_json::Map<String, serde_json::Value> = meta
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let filters: BTreeMap<String, String> = filters.into_iter().collect();
            for file in &files {
                let content = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.display().to_string());
                let doc = NewDocument {
                    namespace: namespace.clone(),
                    key: key.clone().unwrap_or_else(|| name.clone()),
                    title: title
                        .clone()
                        .unwrap_or_else(|| heading(&content).unwrap_or(name)),
                    content,
                    metadata: {
                        let mut m = metadata.clone();
                        m.insert("file".to_owned(), file.display().to_string().into());
                        m
                    },
                    filters: filters.clone(),
                    importance,
                };
                let outcome = rag.add(&caller, doc).await?;
                println!(
                    "{} {}/{} ({} chunks, version {})",
                    serde_json::to_value(outcome.status)?
                        .as_str()
                        .unwrap_or("added"),
                    outcome.namespace,
                    outcome.key,
                    outcome.chunks,
                    outcome.version
                );
            }
            Ok(())
        }
        RagCommand::Search {
            query,
            group,
            namespace,
            search_type,
            top_k,
            filters,
            context,
            json,
            config,
        } => {
            let (_, rag) = open(&config).await?;
            let mut accepted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in filters {
                accepted.entry(name).or_default().push(value);
            }
            let request = SearchRequest {
                namespace,
                query: Query::Text(query),
                top_k,
                search_type,
                vector_score_threshold: None,
                filters: accepted,
                chunk_context: context,
                importance_weight: None,
            };
            let hits = rag
                .search(&Caller::new(&group, "cli", "cli"), request)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else if hits.is_empty() {
                println!("no hits");
            } else {
                for (i, hit) in hits.iter().enumerate() {
                    println!(
                        "[{}] {:.4} {}/{} #{} {}",
                        i + 1,
                        hit.score,
                        hit.namespace,
                        hit.key,
                        hit.chunk,
                        hit.title
                    );
                    for line in hit.text.lines() {
                        println!("    {line}");
                    }
                }
            }
            Ok(())
        }
        RagCommand::Delete {
            group,
            key,
            namespace,
            config,
        } => {
            let (_, rag) = open(&config).await?;
            match (key, namespace) {
                (Some(key), namespace) => {
                    if rag.delete_entry(&group, namespace.as_deref(), &key).await? {
                        println!("deleted entry {key}");
                    } else {
                        bail!("no entry {key:?}");
                    }
                }
                (None, Some(namespace)) => {
                    let n = rag.delete_namespace(&group, &namespace).await?;
                    println!("deleted namespace {namespace} ({n} entries)");
                }
                (None, None) => bail!("give --key or --namespace"),
            }
            Ok(())
        }
        RagCommand::List {
            group,
            namespace,
            config,
        } => {
            let (_, rag) = open(&config).await?;
            match namespace {
                None => {
                    for ns in rag.namespaces(&group).await? {
                        println!(
                            "{} ({} entries, {} chunks, dimension {})",
                            ns.name, ns.entries, ns.chunks, ns.dim
                        );
                    }
                }
                Some(namespace) => {
                    for entry in rag.entries(&group, Some(&namespace)).await? {
                        println!(
                            "{} \"{}\" ({} chunks, importance {}, version {})",
                            entry.key, entry.title, entry.chunks, entry.importance, entry.version
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// The first markdown `# heading` of `text`.
fn heading(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("# "))
        .map(|line| line.trim_start_matches('#').trim().to_owned())
        .filter(|h| !h.is_empty())
}
