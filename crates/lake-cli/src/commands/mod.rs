//! One module per subcommand; each only wires configuration to a library call.

mod catalog;
mod compact;
mod config;
mod embedded;
mod generate;
mod ingest;
mod init;
mod maintain;
mod query;
mod quickstart;
mod run;
mod transform;
mod validate;

use std::process::ExitCode;

use lake_core::Config;
use lake_core::config::Sources;

use crate::cli::{Command, CompletionsArgs, TableSelection};

/// `; peak memory N MB` for a summary line, or nothing when unknown.
fn memory_note(peak_rss_bytes: Option<u64>) -> String {
    peak_rss_bytes.map_or(String::new(), |b| {
        format!("; peak memory {:.0} MB", b as f64 / 1e6)
    })
}

/// The configured pipeline (`pipeline.dir`, `./pipeline`, or the built-in
/// datasets), checked as it is read.
fn pipeline(config: &Config) -> anyhow::Result<lake_spec::Pipeline> {
    Ok(lake_spec::Pipeline::resolve(
        config.pipeline.dir.as_deref(),
    )?)
}

/// The tables a command was given, or every table with `--all`.
async fn selected_tables(
    catalog: &lake_table::LakeCatalog,
    selection: &TableSelection,
) -> anyhow::Result<Vec<iceberg::TableIdent>> {
    if selection.all {
        return Ok(catalog.tables().await?);
    }
    Ok(selection
        .tables
        .iter()
        .map(|t| lake_ingest::bronze::parse_table(t))
        .collect::<Result<Vec<_>, _>>()?)
}

pub async fn run(command: Command, config: Config, sources: Sources) -> anyhow::Result<ExitCode> {
    let long_running = matches!(
        command,
        Command::Ingest(_)
            | Command::Run(_)
            | Command::Generate(_)
            | Command::Catalog(crate::cli::CatalogCommand::Serve(_))
    );
    if config.telemetry.health_addr.is_some() && !long_running {
        tracing::warn!(
            "telemetry.health_addr is served only by long-running commands \
             (ingest, run, catalog serve, generate into Kafka); this one ignores it"
        );
    }
    match command {
        Command::Catalog(command) => catalog::run(command, config).await,
        Command::Config(command) => config::run(command, &config, &sources),
        Command::Init(args) => init::run(args),
        Command::Validate => validate::run(&config).await,
        Command::Generate(args) => generate::run(*args, config).await,
        Command::Ingest(args) => ingest::run(*args, config).await,
        Command::Run(args) => run::run(*args, config).await,
        Command::Transform(args) => transform::run(args, config).await,
        Command::Compact(args) => compact::run(args, config).await,
        Command::Maintain(command) => maintain::run(command, config).await,
        Command::Quickstart(args) => quickstart::run(args, config).await,
        Command::Sql(args) => query::sql(args, config, &sources).await,
        Command::Tables(args) => query::list(args, config, &sources, false).await,
        Command::Snapshots(args) => query::snapshots(args, config, &sources).await,
        Command::Status(args) => query::list(args, config, &sources, true).await,
        Command::Completions(args) => Ok(completions(&args)),
    }
}

/// `lake completions SHELL`: the script on standard output.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(
        args.shell,
        &mut crate::cli::Cli::command(),
        "lake",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// Completes `timeout` after the first Ctrl-C or SIGTERM, which sets `stop`
/// (a clean stop: the command commits what it holds); logs `what` then. A
/// command selects on its work and this, and fails when this wins.
pub async fn stop_on_signal(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    timeout: std::time::Duration,
    what: &'static str,
) {
    shutdown_signal().await;
    tracing::info!("{what}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(timeout).await;
}

/// Completes on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
