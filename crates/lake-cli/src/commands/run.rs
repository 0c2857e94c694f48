use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use lake_core::Config;
use lake_maintain::CompactOptions;
use lake_run::{RunOptions, RunStatus, RunSummary};

use crate::cli::RunArgs;

/// Shorter than `lake ingest`'s 10 s: a record waits for the next commit
/// before a round can carry it to gold, and the run compacts what the
/// extra commits leave.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(args: RunArgs, config: Config) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(&config)?;
    let (kafka, ingest) =
        super::ingest::options(&args.ingest, &config, &pipeline, COMMIT_INTERVAL)?;
    let status = Arc::new(RunStatus::default());
    let options = RunOptions {
        ingest,
        transform: super::transform::options(&args.tuning)?,
        compact: CompactOptions {
            target_file_size: Some(args.compact_target.as_u64()),
            min_input_files: args.compact_min_files.max(2),
            ..CompactOptions::default()
        },
        compact_every: args.compact_every,
        retry_budget: args.ingest.retry_budget,
        status: status.clone(),
        ..RunOptions::default()
    };
    if let Some(addr) = config.telemetry.health_addr {
        crate::telemetry::serve_health(addr, status.clone()).await?;
    }
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;

    let stop = Arc::new(AtomicBool::new(false));
    let shutdown_timeout = args.ingest.shutdown_timeout;
    // Ingest commits what it holds and a last round carries it to gold.
    let deadline = super::stop_on_signal(
        stop.clone(),
        shutdown_timeout,
        "stopping: committing what has been read and carrying it to gold",
    );
    let summary = tokio::select! {
        result = lake_run::run(catalog, config.storage.clone(), kafka, &pipeline, options, stop) => result?,
        () = deadline => bail!(
            "stopping did not finish within {}; nothing is lost (the next run starts from \
             the last commit of each table), but the last epoch or round was not committed",
            humantime::format_duration(shutdown_timeout)
        ),
    };
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &RunSummary) {
    let routes = &summary.ingest;
    eprintln!(
        "ran {:.0}s: ingested {} records ({} rows, {} rejected, {} commits); {} transform rounds \
         ({} retried); {} compaction passes merged {} small files",
        routes.elapsed.as_secs_f64(),
        routes.consumed,
        routes.rows,
        routes.rejected,
        routes.commits,
        summary.rounds,
        summary.failed_rounds,
        summary.compactions,
        summary.files_compacted,
    );
    for (table, rows) in &summary.rows {
        let fresh = summary
            .freshness
            .iter()
            .find(|(t, _)| t == table)
            .map_or(String::new(), |(_, lag)| {
                format!(", newest record {:.1}s old", lag.as_secs_f64())
            });
        eprintln!("  {table}: {rows} rows written{fresh}");
    }
}
