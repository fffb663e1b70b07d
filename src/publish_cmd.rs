//! `troupe publish --agent NAME | --workflow NAME --group G --user U "input"`: publishes a task
//! to the ingress stream (plain `XADD`, the wire format of the README), waits for its result on
//! a private reply stream `<results>:<random>` and prints it. Needs a running daemon on the
//! same Redis.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use troupe_agents::ingress::wire::{RawTask, Status, RESULT_FIELD, TASK_FIELD};
use troupe_agents::ingress::TaskResult;
use troupe_config::Config;

use crate::serve::open_store;

/// How long one blocking read of the reply stream waits.
const BLOCK: Duration = Duration::from_millis(500);

/// What to publish.
pub struct PublishArgs {
    /// The agent to ask (exclusive with `workflow`).
    pub agent: Option<String>,
    /// The workflow to run.
    pub workflow: Option<String>,
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// The input.
    pub input: String,
    /// Idempotency key (a random one when absent).
    pub id: Option<String>,
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// Print the whole result JSON instead of the output.
    pub json: bool,
}

/// Runs `troupe publish`.
pub fn run(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    if args.agent.is_some() == args.workflow.is_some() {
        bail!("give exactly one of --agent and --workflow");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let store = open_store(&config.store).await?;
        let ingress = &config.ingress;
        let id = args
            .id
            .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
        let reply_to = format!("{}:{:016x}", ingress.results, rand::random::<u64>());
        let task = RawTask {
            id: Some(id.clone()),
            agent: args.agent,
            workflow: args.workflow,
            input: serde_json::Value::String(args.input),
            group: Some(args.group),
            user: Some(args.user),
            thread: None,
            reply_to: Some(reply_to.clone()),
            stream: false,
        };
        let json = serde_json::to_vec(&task)?;
        let entry = store
            .xadd(&ingress.stream, &[(TASK_FIELD, &json)], None)
            .await?;
        eprintln!("published task {id} as entry {entry}; waiting on {reply_to}");
        let deadline = Instant::now() + args.timeout;
        let mut after = "0".to_owned();
        let result = 'wait: loop {
            if Instant::now() >= deadline {
                let _ = store.del(std::slice::from_ref(&reply_to)).await;
                bail!("no result for task {id} within {:?}", args.timeout);
            }
            for e in store.xread(&reply_to, &after, 16, Some(BLOCK)).await? {
                after = e.id.clone();
                let Some(bytes) = e.field(RESULT_FIELD) else {
                    continue;
                };
                let result: TaskResult =
                    serde_json::from_slice(bytes).context("decoding the result")?;
                if result.task_id == id {
                    break 'wait (result, bytes.to_vec());
                }
            }
        };
        let _ = store.del(&[reply_to]).await;
        let (result, raw) = result;
        if args.json {
            println!("{}", String::from_utf8_lossy(&raw));
        } else if let Some(output) = &result.output {
            println!("{output}");
        }
        match (result.status, result.error) {
            (Status::Ok, _) => Ok(()),
            (Status::Error, Some(error)) => {
                bail!("task failed ({}): {}", error.kind, error.message)
            }
            (Status::Error, None) => bail!("task failed"),
        }
    })
}
