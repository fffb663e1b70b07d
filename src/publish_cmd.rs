//! `troupe publish --agent NAME | --workflow NAME --group G --user U "input"`: publishes a task
//! to the ingress stream (plain `XADD`, the wire format of the README), waits for its result on
//! a private reply stream `<results>:<random>` and prints it; with `--stream`, prints the answer
//! live from the delta stream named in the task's acceptance. A task dead-lettered instead
//! (malformed, unknown agent, …) ends the wait at once with the reason. Needs a running daemon
//! on the same Redis. With `[ingress.auth] mode = "hmac"` the task is signed with the group's
//! secret (read from the variable the config names) and expires when the wait ends.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use troupe_config::{Config, IngressAuth};
use troupe_ingress::wire::{RawTask, Status, DEAD_FIELD, RESULT_FIELD, SIG_FIELD, TASK_FIELD};
use troupe_ingress::{sign, DeadLetter, TaskResult};
use troupe_runtime::store::Store;

use crate::serve::open_store;

/// How long one blocking read of the reply stream waits.
const BLOCK: Duration = Duration::from_millis(500);

/// What to publish: the command line of `troupe publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The agent to ask.
    #[arg(
        long,
        conflicts_with = "workflow",
        required_unless_present = "workflow"
    )]
    pub agent: Option<String>,
    /// The workflow to run.
    #[arg(long)]
    pub workflow: Option<String>,
    /// The tenant group.
    #[arg(long)]
    pub group: String,
    /// The end user.
    #[arg(long)]
    pub user: String,
    /// The input.
    pub input: String,
    /// Idempotency key (random when absent).
    #[arg(long)]
    pub id: Option<String>,
    /// The TOML config file (for the store and `[ingress]`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Give up waiting for the result after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub timeout: Duration,
    /// Print the whole result JSON instead of the output.
    #[arg(long)]
    pub json: bool,
    /// Print the answer live as it is generated (agents).
    #[arg(long)]
    pub stream: bool,
}

/// Runs `troupe publish`.
pub fn run(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    if args.agent.is_some() == args.workflow.is_some() {
        bail!("give exactly one of --agent and --workflow");
    }
    crate::serve::block_on(async move {
        let store = open_store(&config.store).await?;
        let ingress = &config.ingress;
        let id = args
            .id
            .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
        let reply_to = format!(
            "{}:{}:cli{:016x}",
            ingress.results,
            args.group,
            rand::random::<u64>()
        );
        let secret = match &ingress.auth {
            IngressAuth::None => None,
            IngressAuth::Hmac { secrets, .. } => {
                let Some(var) = secrets.get(&args.group) else {
                    bail!(
                        "[ingress.auth] is on and group {:?} has no secret configured \
                         ([ingress.auth.groups.{}] secret_env)",
                        args.group,
                        args.group
                    );
                };
                match std::env::var(var) {
                    Ok(secret) if !secret.is_empty() => Some(secret),
                    _ => bail!(
                        "[ingress.auth] is on: set {var} to group {:?}'s producer secret",
                        args.group
                    ),
                }
            }
        };
        let expires = match &ingress.auth {
            IngressAuth::None => None,
            IngressAuth::Hmac { max_expiry, .. } => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                Some((now + args.timeout.min(*max_expiry)).as_secs())
            }
        };
        let task = RawTask {
            id: Some(id.clone()),
            agent: args.agent,
            workflow: args.workflow,
            input: serde_json::Value::String(args.input),
            group: Some(args.group),
            user: Some(args.user),
            thread: None,
            reply_to: Some(reply_to.clone()),
            stream: args.stream,
            expires,
        };
        let json = serde_json::to_vec(&task)?;
        let entry = match secret {
            Some(secret) => {
                let sig = sign(secret.as_bytes(), &json);
                store
                    .xadd(
                        &ingress.stream,
                        &[(TASK_FIELD, &json), (SIG_FIELD, sig.as_bytes())],
                        None,
                    )
                    .await?
            }
            None => {
                store
                    .xadd(&ingress.stream, &[(TASK_FIELD, &json)], None)
                    .await?
            }
        };
        eprintln!("published task {id} as entry {entry}; waiting on {reply_to}");
        let deadline = Instant::now() + args.timeout;
        let mut after = "0".to_owned();
        let mut printed_live = false;
        let result = 'wait: loop {
            if Instant::now() >= deadline {
                let _ = store.del(std::slice::from_ref(&reply_to)).await;
                bail!("no result for task {id} within {:?}", args.timeout);
            }
            if let Some(letter) = dead_letter(&store, &ingress.dead, &entry).await? {
                let _ = store.del(std::slice::from_ref(&reply_to)).await;
                bail!(
                    "task {id} was dead-lettered ({}): {}",
                    letter.kind,
                    letter.reason
                );
            }
            for e in store.xread(&reply_to, &after, 16, Some(BLOCK)).await? {
                after = e.id.clone();
                let Some(bytes) = e.field(RESULT_FIELD) else {
                    continue;
                };
                let result: TaskResult =
                    serde_json::from_slice(bytes).context("decoding the result")?;
                if result.task_id != id {
                    continue;
                }
                if result.status.is_final() {
                    break 'wait (result, bytes.to_vec());
                }
                if let (Some(stream), false) = (&result.delta_stream, args.json) {
                    // Results name Redis keys; the store adds its prefix itself.
                    let key = stream.strip_prefix(store.key_prefix()).unwrap_or(stream);
                    follow(&store, key, deadline).await?;
                    printed_live = true;
                }
            }
        };
        let _ = store.del(&[reply_to]).await;
        let (result, raw) = result;
        if args.json {
            println!("{}", String::from_utf8_lossy(&raw));
        } else if let (Some(output), false) = (&result.output, printed_live) {
            println!("{output}");
        }
        match (result.status, result.error) {
            (Status::Ok, _) => Ok(()),
            (_, Some(error)) => bail!("task failed ({}): {}", error.kind, error.message),
            (_, None) => bail!("task failed"),
        }
    })
}

/// The dead letter of the ingress entry `entry`, if it was dead-lettered. Dead letters are
/// written after the entry, so only the dead stream from the entry's millisecond on is read
/// (both ids come from the same server clock; the letter may share the millisecond).
async fn dead_letter(
    store: &Arc<dyn Store>,
    dead: &str,
    entry: &str,
) -> anyhow::Result<Option<DeadLetter>> {
    let ms: u64 = entry
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(0);
    let mut after = format!("{}-0", ms.saturating_sub(1));
    loop {
        let letters = store.xread(dead, &after, 100, None).await?;
        let Some(last) = letters.last() else {
            return Ok(None);
        };
        after = last.id.clone();
        for e in &letters {
            let Some(bytes) = e.field(DEAD_FIELD) else {
                continue;
            };
            match serde_json::from_slice::<DeadLetter>(bytes) {
                Ok(letter) if letter.entry == entry => return Ok(Some(letter)),
                _ => {}
            }
        }
    }
}

/// Prints a delta stream as it is written, until its `done` entry or the deadline.
async fn follow(store: &Arc<dyn Store>, stream: &str, deadline: Instant) -> anyhow::Result<()> {
    let mut after = "0".to_owned();
    while Instant::now() < deadline {
        for entry in store.xread(stream, &after, 100, Some(BLOCK)).await? {
            after = entry.id.clone();
            if let Some(delta) = entry.field("delta") {
                print!("{}", String::from_utf8_lossy(delta));
                std::io::stdout().flush().ok();
            }
            if entry.field("done").is_some() {
                println!();
                return Ok(());
            }
        }
    }
    Ok(())
}
