//! `troupe workflow`: start runs, show their status, send them events, cancel and restart
//! them. Everything goes through the store, so these commands work against running daemons
//! (with the Redis store, any daemon sharing it adopts a started run). With the memory store
//! nothing is shared, so `start` runs the workflow in this process on its own actor tree.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use troupe_config::{Config, StoreSettings};
use troupe_runtime::Exit;
use troupe_workflow::{RunRecord, RunView, Runs, Submit};

use crate::serve::open_store;
use troupe::Daemon;

/// `troupe workflow …`
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start a run of `[workflows.NAME]` and print its id (`run <id>`).
    Start {
        /// The workflow.
        name: String,
        /// The tenant group.
        #[arg(long)]
        group: String,
        /// The submitting user.
        #[arg(long, default_value = "cli")]
        user: String,
        /// The run's input.
        #[arg(long, default_value = "")]
        input: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Wait for the run to end and print its status and output.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print a run's status, its steps and its output or error.
    Status {
        /// The run id.
        run: String,
        /// The run's group.
        #[arg(long)]
        group: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send an event to a run (a `wait_event` step waiting for NAME resumes).
    Event {
        /// The run id.
        run: String,
        /// The event's name.
        name: String,
        /// The run's group.
        #[arg(long)]
        group: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// JSON data (the waiting step's output).
        #[arg(long, default_value = "null")]
        data: String,
    },
    /// Cancel a run.
    Cancel {
        /// The run id.
        run: String,
        /// The run's group.
        #[arg(long)]
        group: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Restart a finished run from one of its steps (earlier results are kept).
    Restart {
        /// The run id.
        run: String,
        /// The step to run again, and everything after it.
        #[arg(long)]
        from: String,
        /// The run's group.
        #[arg(long)]
        group: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs a `troupe workflow` command.
pub fn run(command: WorkflowCommand) -> anyhow::Result<()> {
    let system = actix::System::new();
    let result = system.block_on(async move {
        match command {
            WorkflowCommand::Start {
                name,
                group,
                user,
                input,
                config,
                wait,
                timeout,
            } => {
                let config = load(&config)?;
                let submit = Submit {
                    workflow: name,
                    group: group.clone(),
                    user,
                    input,
                };
                start(&config, submit, wait, timeout).await
            }
            WorkflowCommand::Status { run, group, config } => {
                let runs = runs(&load(&config)?).await?;
                print_view(&runs.status(&group, &run).await?);
                Ok(())
            }
            WorkflowCommand::Event {
                run,
                name,
                group,
                config,
                data,
            } => {
                let data: serde_json::Value =
                    serde_json::from_str(&data).context("--data must be JSON")?;
                let runs = runs(&load(&config)?).await?;
                runs.send_event(&group, &run, &name, &data).await?;
                println!("event {name} sent to run {run}");
                Ok(())
            }
            WorkflowCommand::Cancel { run, group, config } => {
                let runs = runs(&load(&config)?).await?;
                let record = runs.cancel(&group, &run).await?;
                if record.status.is_terminal() {
                    println!("run {run} already ended: {}", record.status.as_str());
                } else {
                    println!("cancel requested for run {run}");
                }
                Ok(())
            }
            WorkflowCommand::Restart {
                run,
                from,
                group,
                config,
            } => {
                let runs = runs(&load(&config)?).await?;
                runs.restart(&group, &run, &from).await?;
                println!("run {run} restarts from step {from}");
                Ok(())
            }
        }
    });
    actix::System::current().stop();
    result
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))
}

async fn runs(config: &Config) -> anyhow::Result<Runs> {
    let store = open_store(&config.store).await?;
    Ok(Runs::new(store, config.workflows.clone()))
}

async fn start(
    config: &Config,
    submit: Submit,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let group = submit.group.clone();
    if matches!(config.store, StoreSettings::Memory) {
        // Nothing is shared with a daemon: run it here, to the end.
        let store = open_store(&config.store).await?;
        let tree = Daemon::builder(config, store).start()?;
        let id = tree.router.submit(submit).await?;
        println!("run {id}");
        let record = tree.router.runs().wait(&group, &id, timeout).await;
        let view = tree.router.runs().status(&group, &id).await;
        let exit = tree.shutdown(config.daemon.shutdown_grace).await;
        let (record, view) = (record?, view?);
        print_view(&view);
        if exit != Exit::Stopped {
            bail!("the actor tree stopped with {exit:?}");
        }
        return outcome(&record);
    }
    let runs = runs(config).await?;
    let id = runs.submit(submit).await?;
    println!("run {id}");
    if !wait {
        return Ok(());
    }
    let record = runs.wait(&group, &id, timeout).await?;
    print_view(&runs.status(&group, &id).await?);
    outcome(&record)
}

fn outcome(record: &RunRecord) -> anyhow::Result<()> {
    match record.status.as_str() {
        "completed" => Ok(()),
        "running" | "waiting" => bail!("run {} has not ended yet", record.id),
        other => bail!("run {} {other}", record.id),
    }
}

fn print_view(view: &RunView) {
    let r = &view.record;
    println!(
        "run {} workflow {} group {} status {} (definition {}, {} journal entries)",
        r.id,
        r.workflow,
        r.group,
        r.status.as_str(),
        r.definition_hash,
        view.journal_len
    );
    for step in &view.steps {
        println!("  {:<10} {}", step.state, step.name);
    }
    if let Some(output) = &r.output {
        println!("output: {output}");
    }
    if let Some(error) = &r.error {
        println!("error: {error}");
    }
}
