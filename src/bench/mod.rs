//! `troupe bench …`: load generators that print figures (not tests, not criterion).
//! - `workflows`: runs of a workflow on this process's own actor tree (memory store or a
//!   Redis), [`workflows`].
//! - `ingress`: tasks through a daemon's public Redis interface, as any client sends them,
//!   with the daemon's CPU and memory and the Redis commands per task, [`ingress`].

mod ingress;
mod process;
mod workflows;

use clap::Subcommand;

pub use ingress::IngressArgs;
pub use workflows::WorkflowArgs;

/// `troupe bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Runs of a workflow on this process's actor tree: runs/s, wall time, latency, CPU per
    /// run, peak RSS.
    Workflows(WorkflowArgs),
    /// Agent or workflow tasks through a daemon's ingress stream (a `troupe serve` it starts,
    /// or one already running): throughput, latency, the daemon's CPU and memory, and Redis
    /// commands and CPU per task.
    Ingress(IngressArgs),
}

/// Runs `troupe bench …`.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Workflows(args) => workflows::run(args),
        BenchCommand::Ingress(args) => ingress::run(args),
    }
}

/// The `p` quantile (0..=1) of `sorted`, which is not empty.
fn quantile<T: Copy>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
