//! `troupe tail THREAD --group G`: prints a thread's messages from the store, then follows
//! it: live deltas of a turn in progress as they are generated, and new messages as they are
//! written. Reads the store directly (no daemon needed), scoped by group.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_agents::{Role, ThreadMessage, ThreadStore};
use troupe_config::Config;

use crate::serve::open_store;

/// How long one blocking read of the delta stream waits.
const BLOCK: Duration = Duration::from_millis(500);

/// What to tail.
pub struct TailArgs {
    /// The thread.
    pub thread: String,
    /// Its group.
    pub group: String,
    /// Keep following (else print what is there and exit).
    pub follow: bool,
    /// Stop following after this long (`None`: until interrupted).
    pub max_time: Option<Duration>,
}

/// Runs `troupe tail`.
pub fn run(config: Config, args: TailArgs) -> anyhow::Result<()> {
    crate::serve::block_on(async move {
        let store = open_store(&config.store).await?;
        let threads = ThreadStore::new(store.clone(), config.daemon.thread_retention);
        let id = threads.resolve(&args.group, &args.thread).await?;
        let info = threads.info(&id).await?;
        println!(
            "# thread {} (group {}, user {}): {}",
            info.id, info.group, info.user, info.title
        );
        let started = Instant::now();
        let mut next = 0u64;
        loop {
            let (messages, total) = threads.messages(&id, next, 100).await?;
            for message in &messages {
                print_message(message);
            }
            next = total.max(next);
            if !args.follow || args.max_time.is_some_and(|max| started.elapsed() >= max) {
                return Ok(());
            }
            follow_live(&store, &id, &threads, next).await?;
        }
    })
}

/// Prints the live deltas of the turn in progress, if any, until it finishes or a new
/// message appears; else waits one block time.
async fn follow_live(
    store: &Arc<dyn troupe_runtime::store::Store>,
    id: &troupe_agents::ThreadId,
    threads: &ThreadStore,
    next: u64,
) -> anyhow::Result<()> {
    let Some(stream) = store.get(&id.live_key()).await? else {
        tokio::time::sleep(BLOCK).await;
        return Ok(());
    };
    let stream = String::from_utf8_lossy(&stream).into_owned();
    let mut after = "0".to_owned();
    print!("assistant (live): ");
    loop {
        let entries = store.xread(&stream, &after, 100, Some(BLOCK)).await?;
        for entry in &entries {
            after = entry.id.clone();
            if let Some(delta) = entry.field("delta") {
                print!("{}", String::from_utf8_lossy(delta));
            }
            if let Some(done) = entry.field("done") {
                println!(" [{}]", String::from_utf8_lossy(done));
                return Ok(());
            }
        }
        std::io::stdout().flush().ok();
        if entries.is_empty() && threads.messages(id, next, 1).await?.1 > next {
            println!();
            return Ok(());
        }
    }
}

fn print_message(m: &ThreadMessage) {
    let who = match m.message.role {
        Role::System => "system".to_owned(),
        Role::User => "user".to_owned(),
        Role::Assistant => format!(
            "assistant{}",
            m.agent
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        ),
        Role::Tool => "tool".to_owned(),
    };
    if !m.message.content.is_empty() {
        println!("[{}] {who}: {}", m.seq, m.message.content);
    }
    for call in &m.message.tool_calls {
        println!("[{}] {who} calls {}({})", m.seq, call.name, call.arguments);
    }
}
