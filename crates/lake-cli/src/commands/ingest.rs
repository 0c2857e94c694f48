use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use lake_core::Config;
use lake_ingest::{IngestOptions, IngestSummary, Route};

use crate::cli::IngestArgs;

/// The commit interval when `--commit-interval` is not given.
const COMMIT_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(args: IngestArgs, config: Config) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(&config)?;
    let (kafka, options) = options(&args, &config, &pipeline, COMMIT_INTERVAL)?;
    let routes = options.routes.clone();
    if let Some(addr) = config.telemetry.health_addr {
        crate::telemetry::serve_health(addr, options.status.clone()).await?;
    }
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;

    let stop = Arc::new(AtomicBool::new(false));
    let shutdown_timeout = args.shutdown_timeout;
    let deadline = super::stop_on_signal(
        stop.clone(),
        shutdown_timeout,
        "stopping: committing what has been read",
    );
    let summary = tokio::select! {
        result = lake_ingest::ingest(catalog, kafka, options, stop) => result?,
        () = deadline => bail!(
            "the final commit did not finish within {}; nothing is lost (the next run \
             starts from the last commit), but this run's last epoch was not committed",
            humantime::format_duration(shutdown_timeout)
        ),
    };
    print_summary(&routes, &summary);
    Ok(ExitCode::SUCCESS)
}

/// What `lake ingest` and `lake run` read their flags into: the Kafka client
/// settings and the ingest options.
pub(super) fn options(
    args: &IngestArgs,
    config: &Config,
    pipeline: &lake_spec::Pipeline,
    commit_interval: Duration,
) -> anyhow::Result<(rdkafka::ClientConfig, IngestOptions)> {
    let routes = lake_ingest::routes(pipeline, &args.datasets, &args.topic, &args.table)?;
    let kafka = lake_kafka::client_config(&config.kafka, &args.property);
    let options = IngestOptions {
        routes,
        group_id: args.group_id.clone(),
        group_protocol: args.group_protocol.into(),
        commit_interval: args.commit_interval.unwrap_or(commit_interval),
        commit_bytes: args.commit_bytes.map(|b| b.as_u64()),
        commit_records: args.commit_records,
        max_record_bytes: usize::try_from(args.max_record_bytes.as_u64()).unwrap_or(usize::MAX),
        until_caught_up: args.until_caught_up,
        max_records: args.max_records,
        evolve_schema: args.evolve_schema,
        kafka_timeout: args.connect_timeout,
        progress: std::io::stderr().is_terminal(),
        retry_budget: args.retry_budget,
        ..IngestOptions::default()
    };
    Ok((kafka, options))
}

pub(super) fn print_summary(routes: &[Route], summary: &IngestSummary) {
    let seconds = summary.elapsed.as_secs_f64().max(1e-3);
    let tables: Vec<String> = routes.iter().map(|r| r.table.to_string()).collect();
    let how = if summary.caught_up {
        " (caught up)"
    } else if summary.interrupted {
        " (stopped)"
    } else {
        ""
    };
    let memory = super::memory_note(summary.peak_rss_bytes);
    let waited = summary.first_record_after.map_or(String::new(), |d| {
        format!("; first record after {:.2}s", d.as_secs_f64())
    });
    eprintln!(
        "ingested {} records ({:.1} MB) in {:.2}s{how} ({:.0} records/s, {:.1} MB/s) into {}\n  \
         {} rows committed, {} rejected; {} commits, {} rewinds{waited}{memory}",
        summary.consumed,
        summary.bytes as f64 / 1e6,
        seconds,
        summary.consumed as f64 / seconds,
        summary.bytes as f64 / 1e6 / seconds,
        tables.join(", "),
        summary.rows,
        summary.rejected,
        summary.commits,
        summary.rewinds,
    );
}
