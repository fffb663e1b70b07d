//! `troupe dead-letters list | retry`: the entries the ingress refused or gave up on, with
//! their reasons; `retry` publishes a letter's original entry to the ingress stream again and
//! removes the letter, in one atomic batch (so a letter is never both retried and kept, nor
//! lost).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use troupe_config::Config;
use troupe_ingress::wire::DEAD_FIELD;
use troupe_ingress::DeadLetter;
use troupe_runtime::store::{Store, StreamEntry, Write};

use crate::serve::open_store;

/// Longest task text printed per letter by `list`.
const SHOWN: usize = 160;

/// `troupe dead-letters …`
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Print dead letters, oldest first: id, kind, deliveries, reason and the task.
    List {
        /// The TOML config file (for the store and `[ingress]`).
        #[arg(long, short)]
        config: PathBuf,
        /// At most this many letters.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print each letter's JSON on one line instead.
        #[arg(long)]
        json: bool,
    },
    /// Publish a letter's original entry to the ingress stream again and delete the letter.
    Retry {
        /// The letter's id in the dead stream (as `list` prints it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every letter.
        #[arg(long)]
        all: bool,
        /// The TOML config file (for the store and `[ingress]`).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs `troupe dead-letters …`.
pub fn run(command: DeadLettersCommand) -> anyhow::Result<()> {
    crate::serve::block_on(async move {
        match command {
            DeadLettersCommand::List {
                config,
                limit,
                json,
            } => {
                let config = load(&config)?;
                let store = open_store(&config.store).await?;
                let entries = store
                    .xrange(&config.ingress.dead, "-", "+", Some(limit))
                    .await?;
                if entries.is_empty() {
                    eprintln!("no dead letters in {}", config.ingress.dead);
                }
                for entry in &entries {
                    print_letter(entry, json);
                }
                Ok(())
            }
            DeadLettersCommand::Retry { id, all, config } => {
                let config = load(&config)?;
                let store = open_store(&config.store).await?;
                let dead = &config.ingress.dead;
                let entries = match (&id, all) {
                    (_, true) => store.xrange(dead, "-", "+", None).await?,
                    (Some(id), false) => store.xrange(dead, id, id, Some(1)).await?,
                    (None, false) => bail!("give a letter id or --all"),
                };
                if entries.is_empty() {
                    bail!(
                        "no dead letter {} in {dead}",
                        id.as_deref().unwrap_or("at all")
                    );
                }
                for entry in &entries {
                    retry(store.as_ref(), &config, entry).await?;
                }
                Ok(())
            }
        }
    })
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))
}

fn decode(entry: &StreamEntry) -> anyhow::Result<DeadLetter> {
    let bytes = entry
        .field(DEAD_FIELD)
        .with_context(|| format!("entry {} has no `{DEAD_FIELD}` field", entry.id))?;
    serde_json::from_slice(bytes)
        .with_context(|| format!("entry {} is not a dead letter", entry.id))
}

fn print_letter(entry: &StreamEntry, json: bool) {
    if json {
        let text = entry.field(DEAD_FIELD).map(String::from_utf8_lossy);
        println!("{}", text.unwrap_or_default());
        return;
    }
    match decode(entry) {
        Ok(letter) => {
            let task: String = letter
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let shown: String = task.chars().take(SHOWN).collect();
            let more = if shown.len() < task.len() { "…" } else { "" };
            println!(
                "{}  {}  deliveries {}  entry {}\n    reason: {}\n    task: {shown}{more}",
                entry.id, letter.kind, letter.deliveries, letter.entry, letter.reason
            );
        }
        Err(err) => println!("{}  (unreadable: {err:#})", entry.id),
    }
}

async fn retry(store: &dyn Store, config: &Config, entry: &StreamEntry) -> anyhow::Result<()> {
    let letter = decode(entry)?;
    if letter.fields.is_empty() {
        bail!("dead letter {} holds no fields to publish", entry.id);
    }
    let fields = letter
        .fields
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    store
        .apply(vec![
            Write::XAdd {
                stream: config.ingress.stream.clone(),
                fields,
                trim: None,
            },
            Write::XDel {
                stream: config.ingress.dead.clone(),
                ids: vec![entry.id.clone()],
            },
        ])
        .await
        .with_context(|| format!("retrying dead letter {}", entry.id))?;
    println!(
        "retried {} (was entry {}, {}) on {}",
        entry.id, letter.entry, letter.kind, config.ingress.stream
    );
    Ok(())
}
