//! `lake quickstart`: generate → Kafka → bronze → silver → gold → compact on
//! this machine alone (embedded catalog, local warehouse, librdkafka's mock
//! cluster in-process), then a report of what came out.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lake_core::Config;
use lake_generate::{FaultRates, Generator, GeneratorConfig, RunLimits, Stream, Target};
use lake_ingest::{IngestOptions, Route};
use lake_maintain::CompactOptions;
use lake_query::Session;
use lake_transform::{Layers, ModelReport, TransformOptions};

use super::embedded::Embedded;
use crate::cli::QuickstartArgs;

/// Event time the generated records span, ending now: enough hours for the
/// hourly gold tables to have a "latest hour" and a history.
const EVENT_SPAN: Duration = Duration::from_secs(6 * 3600);
/// librdkafka's mock keeps about 5 MiB per partition and drops older records:
/// partitions are sized so a run's records all stay.
const MOCK_PARTITION_BYTES: u64 = 4 << 20;
/// Generous upper bound of one generated record, for sizing partitions.
const RECORD_BYTES: u64 = 1024;

pub async fn run(args: QuickstartArgs, config: Config) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let server = Embedded::start(&args.data_dir, config).await?;
    let result = pipeline(&args, &server.config, started).await;
    server.stop().await?;
    result
}

async fn pipeline(
    args: &QuickstartArgs,
    config: &Config,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(config)?;
    // The datasets a built-in generator writes; the others have nothing to
    // feed them here.
    let generated: Vec<(Stream, std::sync::Arc<lake_spec::DatasetSpec>)> = pipeline
        .datasets
        .iter()
        .filter_map(|d| Some((d.generator.as_deref().and_then(Stream::parse)?, d.clone())))
        .collect();
    for dataset in &pipeline.datasets {
        if !generated.iter().any(|(_, d)| d.name == dataset.name) {
            eprintln!(
                "quickstart: skipping dataset `{}`: it names no built-in generator (feed it with \
                 `lake generate {} --from FILE`)",
                dataset.name, dataset.name
            );
        }
    }
    if generated.is_empty() {
        bail!(
            "{} has no dataset a built-in generator writes (generator = \"tweets\" or \
             \"speedtest\"); quickstart has nothing to generate",
            pipeline.source
        );
    }
    let catalog = lake_table::LakeCatalog::connect(config)
        .await
        .context("connecting to the embedded catalog")?;
    let kafka = rdkafka::mocking::MockCluster::new(1).context("starting the mock Kafka cluster")?;
    let mut kafka_config = config.kafka.clone();
    kafka_config.brokers = kafka.bootstrap_servers();

    // The mock cluster starts empty on every run while bronze remembers the
    // offsets it read, per topic: each run reads topics of its own.
    let run_id = jiff::Timestamp::now().as_second();
    let partitions = i32::try_from((args.records * RECORD_BYTES).div_ceil(MOCK_PARTITION_BYTES))
        .unwrap_or(i32::MAX)
        .max(1);
    let mut routes = Vec::new();
    for (_, dataset) in &generated {
        let mut route = Route::for_dataset(dataset);
        route.topic = format!("quickstart-{}-{run_id}", dataset.topic);
        kafka
            .create_topic(&route.topic, partitions, 1)
            .with_context(|| format!("creating topic {}", route.topic))?;
        routes.push(route);
    }

    let names: Vec<String> = generated
        .iter()
        .map(|(_, d)| format!("{} {}", args.records, d.name))
        .collect();
    eprintln!(
        "lake quickstart: {} → Kafka (mock, in-process) → bronze → silver → gold, catalog and \
         warehouse in {}",
        names.join(" and "),
        args.data_dir.display()
    );
    let client = lake_kafka::client_config(&kafka_config, &[]);
    let seed = args.seed.unwrap_or_else(|| run_id.unsigned_abs());
    for (route, (stream, _)) in routes.iter().zip(&generated) {
        // Each stream's seed follows from the run's, whatever order the
        // pipeline lists its datasets in.
        let offset = Stream::ALL.iter().position(|s| s == stream).unwrap_or(0);
        generate(
            *stream,
            route,
            &client,
            args.records,
            seed.wrapping_add(offset as u64),
        )
        .await?;
    }

    let options = IngestOptions {
        routes: routes.clone(),
        group_id: "lake-quickstart".into(),
        // The in-process mock speaks KIP-848: no 3 s wait for the group to form.
        group_protocol: lake_ingest::GroupProtocol::Consumer,
        until_caught_up: true,
        progress: std::io::stderr().is_terminal(),
        ..IngestOptions::default()
    };
    let ingested = lake_ingest::ingest(
        catalog.clone(),
        client.clone(),
        options,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .context("ingesting")?;
    super::ingest::print_summary(&routes, &ingested);
    let expected = generated.len() as u64 * args.records;
    if ingested.consumed != expected {
        bail!(
            "ingest read {} of the {expected} generated records",
            ingested.consumed
        );
    }

    let datasets: Vec<_> = generated.iter().map(|(_, d)| d.clone()).collect();
    let reports = lake_transform::run_layers(
        &catalog,
        &datasets,
        Layers::All,
        &TransformOptions::default(),
        &super::transform::Progress::new(),
    )
    .await?;

    let compaction = CompactOptions::default();
    let mut compacted = 0;
    for ident in catalog.tables().await? {
        let report = lake_maintain::compact(&catalog, &ident, &compaction)
            .await
            .with_context(|| format!("compacting {ident}"))?;
        if report.committed > 0 {
            super::compact::print(&report, false);
            compacted += 1;
        }
    }
    if compacted == 0 {
        eprintln!(
            "compact: nothing to merge yet (a partition needs {} small files)",
            compaction.min_input_files
        );
    }

    report(
        args,
        &catalog,
        ingested.rejected,
        &reports,
        started.elapsed(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `count` records of the route's dataset into its topic, as fast as the
/// mock takes them, with event times spread over the last [`EVENT_SPAN`].
async fn generate(
    stream: Stream,
    route: &Route,
    client: &rdkafka::ClientConfig,
    count: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let span = EVENT_SPAN.as_secs_f64();
    let start = jiff::Timestamp::now().as_microsecond() - EVENT_SPAN.as_micros() as i64;
    let mut config = GeneratorConfig::new(stream, seed, start);
    config.events_per_second = count as f64 / span;
    config.faults = FaultRates {
        duplicates: 0.01,
        malformed: 0.005,
        late: 0.01,
        invalid: 0.005,
    };
    let target = Target::Kafka {
        config: client.clone(),
        topic: route.topic.clone(),
        keyed: true,
    };
    let limits = RunLimits {
        count: Some(count),
        duration: None,
        rate: 0,
        progress: std::io::stderr().is_terminal(),
    };
    let dataset = route.dataset.name.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(config);
        lake_generate::run(
            &mut generator,
            &target,
            &limits,
            &Arc::new(AtomicBool::new(false)),
        )
    })
    .await
    .context("generator thread")??;
    super::generate::print_summary(&dataset, &route.topic, seed, &summary);
    if summary.failed > 0 {
        bail!(
            "{} records were not delivered to the mock cluster: {}",
            summary.failed,
            summary.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Report queries: the seeds' questions, answered from gold.
const TOP_HASHTAGS: &str = "\
SELECT hashtag, tweet_count, unique_users
FROM gold.popular_hashtags_by_hour
WHERE \"hour\" = (SELECT max(\"hour\") FROM gold.popular_hashtags_by_hour)
ORDER BY tweet_count DESC, hashtag
LIMIT 5";
const VOLUME_BY_REGION: &str = "\
SELECT region, sum(tweet_count) AS tweets, round(avg(avg_sentiment), 3) AS avg_sentiment
FROM gold.tweet_volume_by_region
GROUP BY region
ORDER BY tweets DESC, region";
const SPEED_BY_LOCATION: &str = "\
SELECT location, sum(test_count) AS tests,
       round(sum(avg_download_speed * test_count) / sum(test_count), 1) AS avg_download_mbps,
       round(sum(avg_upload_speed * test_count) / sum(test_count), 1) AS avg_upload_mbps
FROM gold.speedtest_agg
GROUP BY location
ORDER BY tests DESC, location
LIMIT 8";

async fn report(
    args: &QuickstartArgs,
    catalog: &lake_table::LakeCatalog,
    rejected: u64,
    reports: &[ModelReport],
    elapsed: Duration,
) -> anyhow::Result<()> {
    let statuses = super::query::statuses(catalog).await?;
    let session = Session::open(catalog, None).await?;
    let mut out = String::new();
    out.push_str(&format!(
        "\nDone in {:.1}s. Rows per table:\n",
        elapsed.as_secs_f64()
    ));
    for status in &statuses {
        out.push_str(&format!(
            "  {:<40} {:>10} rows {:>5} files\n",
            status.table, status.rows, status.files
        ));
    }
    let silver: Vec<&ModelReport> = reports
        .iter()
        .filter(|r| r.target.starts_with("silver."))
        .collect();
    out.push_str(&format!(
        "\nThis run: {} duplicates removed, {} rows quarantined (silver), {} records rejected (bronze dead letters)\n",
        silver.iter().map(|r| r.duplicates).sum::<u64>(),
        silver.iter().map(|r| r.quarantined_total()).sum::<u64>(),
        rejected
    ));
    for (title, sql) in [
        ("Top hashtags of the latest hour", TOP_HASHTAGS),
        ("Tweet volume by region", VOLUME_BY_REGION),
        ("Download and upload speed by location", SPEED_BY_LOCATION),
    ] {
        let result = session.query(sql).await?;
        let mut table = Vec::new();
        lake_query::write_batches(
            &mut table,
            &result.schema,
            &result.batches,
            lake_query::Format::Table,
        )?;
        out.push_str(&format!("\n{title}:\n{}", String::from_utf8_lossy(&table)));
    }
    let embedded = if args.data_dir == std::path::Path::new("./lake-data") {
        "--embedded".to_string()
    } else {
        format!("--embedded={}", args.data_dir.display())
    };
    // As this process was started (`cargo run` runs target/release/lake),
    // so the lines can be pasted.
    let lake = std::env::args()
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "lake".into());
    out.push_str(&format!(
        "\nNext:\n  \
         {lake} sql {embedded} \"SELECT hashtag, sum(tweet_count) AS n FROM gold.popular_hashtags_by_hour GROUP BY 1 ORDER BY n DESC LIMIT 10\"\n  \
         {lake} sql {embedded} \"SELECT region, count(*) FROM silver.tweets_clean GROUP BY 1\"\n  \
         {lake} status {embedded}\n  \
         {lake} snapshots {embedded} silver.tweets_clean\n  \
         {lake} quickstart{}    # another batch into the same tables\n",
        if embedded == "--embedded" {
            String::new()
        } else {
            format!(" --data-dir {}", args.data_dir.display())
        }
    ));
    print!("{out}");
    Ok(())
}
