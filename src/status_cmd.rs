//! `troupe status`: what the shared store says about the deployment — the ingress stream
//! (length, lag, pending per consumer), results and dead letters, open work items per pool,
//! unfinished workflow runs, and the daemons seen (the consumers of the ingress group, with
//! the time since each last read).

use std::collections::BTreeMap;
use std::time::Duration;

use troupe_config::Config;
use troupe_runtime::pool::open_items;
use troupe_workflow::open_runs;

use crate::serve::open_store;

/// A consumer idle longer than this is listed as gone quiet rather than as live.
const QUIET: Duration = Duration::from_secs(60);

/// Runs `troupe status`.
pub fn run(config: Config) -> anyhow::Result<()> {
    crate::serve::block_on(async move {
        let store = open_store(&config.store).await?;
        let ingress = &config.ingress;
        let p = store.key_prefix().to_owned();
        println!("store: {} (key prefix {p:?})", store.backend());

        let length = store.xlen(&ingress.stream).await?;
        println!("ingress stream {p}{}: {length} entries", ingress.stream);
        let groups = store.xgroups(&ingress.stream).await?;
        if groups.is_empty() {
            println!("  no consumer group yet (no daemon has read it)");
        }
        let mut daemons = Vec::new();
        for group in &groups {
            let lag = group
                .lag
                .map_or_else(|| "unknown".to_owned(), |l| l.to_string());
            println!(
                "  group {}: lag {lag}, pending {}, last delivered {}",
                group.name, group.pending, group.last_delivered
            );
            if group.name == ingress.group {
                daemons = store.xconsumers(&ingress.stream, &group.name).await?;
            }
        }
        println!(
            "results stream {p}{}: {} entries",
            ingress.results,
            store.xlen(&ingress.results).await?
        );
        println!(
            "dead letters {p}{}: {} entries (troupe dead-letters list)",
            ingress.dead,
            store.xlen(&ingress.dead).await?
        );

        println!("daemons seen (consumers of group {}):", ingress.group);
        if daemons.is_empty() {
            println!("  none");
        }
        for d in &daemons {
            let state = if d.idle > QUIET { "quiet" } else { "live" };
            println!(
                "  {}: {state}, last read {:.1?} ago, {} pending",
                d.name, d.idle, d.pending
            );
        }

        println!("pools (open work items):");
        if config.pools.is_empty() {
            println!("  none configured");
        }
        for name in config.pools.keys() {
            println!("  {name}: {}", open_items(store.as_ref(), name).await?);
        }

        let runs = open_runs(store.as_ref()).await?;
        let mut by_group: BTreeMap<String, usize> = BTreeMap::new();
        for (_, group) in &runs {
            *by_group.entry(group.clone()).or_default() += 1;
        }
        println!("workflow runs not finished: {}", runs.len());
        for (group, n) in by_group {
            println!("  group {group}: {n}");
        }
        Ok(())
    })
}
