//! `lake quickstart`: generate → Kafka → bronze → silver → gold → compact on
//! this machine alone (embedded catalog, local warehouse, librdkafka's mock
//! cluster in-process), then the seeds' questions answered from gold.
//!
//! Every dataset of the pipeline that names a built-in generator takes part;
//! the others are reported as skipped, since nothing here can feed them.

pub mod error;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lake_core::Config;
use lake_generate::{FaultRates, Generator, GeneratorConfig, RunLimits, Stream, Target};
use lake_ingest::{IngestOptions, IngestSummary, Route};
use lake_maintain::{CompactOptions, Done, Task};
use lake_query::{QueryResult, Session, TableStatus};
use lake_spec::{DatasetSpec, Pipeline};
use lake_table::LakeCatalog;
use lake_transform::{Layers, ModelReport, TransformOptions};

pub use error::{Error, Result};

/// Event time the generated records span, ending now: enough hours for the
/// hourly gold tables to have a "latest hour" and a history.
const EVENT_SPAN: Duration = Duration::from_secs(6 * 3600);
/// librdkafka's mock keeps about 5 MiB per partition and drops older records:
/// partitions are sized so a run's records all stay.
const MOCK_PARTITION_BYTES: u64 = 4 << 20;
/// Generous upper bound of one generated record, for sizing partitions.
const RECORD_BYTES: u64 = 1024;

#[derive(Clone, Debug)]
pub struct Options {
    /// Records generated per dataset.
    pub records: u64,
    /// Where the embedded catalog's database and the warehouse live.
    pub data_dir: PathBuf,
    /// Seed of the generated data; a new one each run when `None`.
    pub seed: Option<u64>,
    /// Progress bars while generating and ingesting (for a terminal).
    pub progress: bool,
    /// The key silver hashes personal data with (`LAKE_PII_KEY`); when
    /// `None`, the one kept in `<data_dir>/pii.key`, made on the first run.
    pub pii_key: Option<String>,
}

/// The key for silver's `hash`: the one given, or the data directory's own,
/// kept across runs so that a second run hashes the same users the same way.
fn pii_key(options: &Options) -> Result<lake_transform::PiiKey> {
    let key = match &options.pii_key {
        Some(key) => key.clone(),
        None => {
            let path = options.data_dir.join("pii.key");
            match std::fs::read_to_string(&path) {
                Ok(key) => key.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let key = lake_catalog::generate_key();
                    write_private(&path, &key).map_err(|e| Error::KeyFile {
                        path: path.clone(),
                        source: e,
                    })?;
                    key
                }
                Err(e) => return Err(Error::KeyFile { path, source: e }),
            }
        }
    };
    lake_transform::PiiKey::new(&key).map_err(Error::Transform)
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(path)?.write_all(text.as_bytes())
}

/// Hears about each step as it ends, to show progress.
pub trait Observer: lake_transform::Observer + lake_maintain::Observer {
    /// A dataset without a built-in generator, left out of the run.
    fn skipped(&self, _dataset: &DatasetSpec) {}
    /// What is about to run: `records` of each of `datasets`.
    fn begin(&self, _datasets: &[Arc<DatasetSpec>], _options: &Options) {}
    fn generated(&self, _generated: &Generated) {}
    fn ingested(&self, _routes: &[Route], _summary: &IngestSummary) {}
    /// Compaction found nothing to merge in any table.
    fn nothing_to_compact(&self, _min_input_files: usize) {}
}

/// One dataset's records, written to its topic.
#[derive(Debug)]
pub struct Generated {
    pub dataset: String,
    pub topic: String,
    pub seed: u64,
    pub summary: lake_generate::Summary,
}

/// What a run left behind.
#[derive(Debug)]
pub struct Report {
    pub elapsed: Duration,
    /// Every table, in name order.
    pub statuses: Vec<TableStatus>,
    /// Removed by silver's deduplication in this run.
    pub duplicates: u64,
    /// Rows silver quarantined in this run.
    pub quarantined: u64,
    /// Records bronze turned away to its rejects tables in this run.
    pub rejected: u64,
    /// The seeds' questions whose tables this pipeline has, answered.
    pub answers: Vec<Answer>,
}

#[derive(Debug)]
pub struct Answer {
    pub question: &'static str,
    pub result: QueryResult,
}

/// A question of the seeds, asked of the gold table it reads when the
/// pipeline writes that table.
struct Question {
    stream: Stream,
    table: &'static str,
    title: &'static str,
    sql: &'static str,
}

const QUESTIONS: [Question; 3] = [
    Question {
        stream: Stream::Tweets,
        table: "gold.popular_hashtags_by_hour",
        title: "Top hashtags of the latest hour",
        sql: "\
SELECT hashtag, tweet_count, unique_users
FROM gold.popular_hashtags_by_hour
WHERE \"hour\" = (SELECT max(\"hour\") FROM gold.popular_hashtags_by_hour)
ORDER BY tweet_count DESC, hashtag
LIMIT 5",
    },
    Question {
        stream: Stream::Tweets,
        table: "gold.tweet_volume_by_region",
        title: "Tweet volume by region",
        sql: "\
SELECT region, sum(tweet_count) AS tweets, round(avg(avg_sentiment), 3) AS avg_sentiment
FROM gold.tweet_volume_by_region
GROUP BY region
ORDER BY tweets DESC, region",
    },
    Question {
        stream: Stream::Speedtest,
        table: "gold.speedtest_agg",
        title: "Download and upload speed by location",
        sql: "\
SELECT location, sum(test_count) AS tests,
       round(sum(avg_download_speed * test_count) / sum(test_count), 1) AS avg_download_mbps,
       round(sum(avg_upload_speed * test_count) / sum(test_count), 1) AS avg_upload_mbps
FROM gold.speedtest_agg
GROUP BY location
ORDER BY tests DESC, location
LIMIT 8",
    },
];

/// Runs the pipeline of `config` (its `pipeline.dir`, or the built-in
/// datasets) into the embedded catalog under `options.data_dir`.
pub async fn run(config: Config, options: &Options, observer: &dyn Observer) -> Result<Report> {
    let started = Instant::now();
    let pipeline = Pipeline::resolve(config.pipeline.dir.as_deref())?;
    let server = lake_catalog::Embedded::start(&options.data_dir, config).await?;
    let result = quickstart(&pipeline, &server.config, options, observer, started).await;
    server.stop().await?;
    result
}

async fn quickstart(
    pipeline: &Pipeline,
    config: &Config,
    options: &Options,
    observer: &dyn Observer,
    started: Instant,
) -> Result<Report> {
    // The datasets a built-in generator writes; the others have nothing to
    // feed them here.
    let mut generated: Vec<(Stream, Arc<DatasetSpec>)> = Vec::new();
    for dataset in &pipeline.datasets {
        match dataset.generator.as_deref().and_then(Stream::parse) {
            Some(stream) => generated.push((stream, dataset.clone())),
            None => observer.skipped(dataset),
        }
    }
    if generated.is_empty() {
        return Err(Error::NothingToGenerate {
            source_dir: pipeline.source.to_string(),
        });
    }
    let datasets: Vec<Arc<DatasetSpec>> = generated.iter().map(|(_, d)| d.clone()).collect();
    // Every model plans before a record is generated.
    let problems = lake_transform::validate(&Pipeline {
        source: pipeline.source.clone(),
        datasets: datasets.clone(),
    })
    .await;
    if !problems.is_empty() {
        return Err(Error::Transform(lake_transform::Error::Pipeline(problems)));
    }
    let catalog = LakeCatalog::connect(config).await.map_err(Error::Connect)?;
    let kafka = rdkafka::mocking::MockCluster::new(1).map_err(|source| Error::Mock {
        what: "starting".into(),
        source,
    })?;
    let mut kafka_config = config.kafka.clone();
    kafka_config.brokers = kafka.bootstrap_servers();

    // The mock cluster starts empty on every run while bronze remembers the
    // offsets it read, per topic: each run reads topics of its own.
    let run_id = jiff::Timestamp::now().as_second();
    let partitions = i32::try_from((options.records * RECORD_BYTES).div_ceil(MOCK_PARTITION_BYTES))
        .unwrap_or(i32::MAX)
        .max(1);
    let mut routes = Vec::new();
    for dataset in &datasets {
        let mut route = Route::for_dataset(dataset);
        route.topic = format!("quickstart-{}-{run_id}", dataset.topic);
        kafka
            .create_topic(&route.topic, partitions, 1)
            .map_err(|source| Error::Mock {
                what: format!("creating topic {}", route.topic),
                source,
            })?;
        routes.push(route);
    }
    observer.begin(&datasets, options);

    let client = lake_kafka::client_config(&kafka_config, &[]);
    let seed = options.seed.unwrap_or_else(|| run_id.unsigned_abs());
    for (route, (stream, _)) in routes.iter().zip(&generated) {
        // Each stream's seed follows from the run's, whatever order the
        // pipeline lists its datasets in.
        let offset = Stream::ALL.iter().position(|s| s == stream).unwrap_or(0);
        let stream_seed = seed.wrapping_add(offset as u64);
        let summary = generate(*stream, route, &client, options, stream_seed).await?;
        let generated = Generated {
            dataset: route.dataset.name.clone(),
            topic: route.topic.clone(),
            seed: stream_seed,
            summary,
        };
        observer.generated(&generated);
        if generated.summary.failed > 0 {
            return Err(Error::NotDelivered {
                failed: generated.summary.failed,
                first_error: generated
                    .summary
                    .first_error
                    .unwrap_or_else(|| "no error given".into()),
            });
        }
    }

    let ingest = IngestOptions {
        routes: routes.clone(),
        group_id: "lake-quickstart".into(),
        // The in-process mock speaks KIP-848: no 3 s wait for the group to form.
        group_protocol: lake_ingest::GroupProtocol::Consumer,
        until_caught_up: true,
        progress: options.progress,
        ..IngestOptions::default()
    };
    let ingested = lake_ingest::ingest(
        catalog.clone(),
        client,
        ingest,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .map_err(Error::Ingest)?;
    observer.ingested(&routes, &ingested);
    let expected = datasets.len() as u64 * options.records;
    if ingested.consumed != expected {
        return Err(Error::Lost {
            consumed: ingested.consumed,
            expected,
        });
    }

    let transform = TransformOptions {
        pii_key: Some(pii_key(options)?),
        ..TransformOptions::default()
    };
    let reports =
        lake_transform::run_layers(&catalog, &datasets, Layers::All, &transform, observer)
            .await
            .map_err(Error::Transform)?;

    let compaction = CompactOptions::default();
    let counter = Compactions {
        observer,
        committed: std::cell::Cell::new(0),
    };
    let outcome = lake_maintain::policy::run(
        &catalog,
        &config.storage,
        None,
        &Task::Compact(compaction.clone()),
        &counter,
    )
    .await
    .map_err(Error::Maintain)?;
    if outcome.failed > 0 {
        return Err(Error::Compaction(outcome.failed));
    }
    if counter.committed.get() == 0 {
        observer.nothing_to_compact(compaction.min_input_files);
    }

    let statuses = lake_query::statuses(&catalog).await?;
    let session = Session::open(&catalog, None).await?;
    let gold: Vec<String> = datasets
        .iter()
        .flat_map(|d| d.gold.iter().map(|g| g.table.to_string()))
        .collect();
    let mut answers = Vec::new();
    for question in &QUESTIONS {
        let asked = generated.iter().any(|(s, _)| *s == question.stream)
            && gold.iter().any(|t| t == question.table);
        if asked {
            answers.push(Answer {
                question: question.title,
                result: session.query(question.sql).await?,
            });
        }
    }
    let silver = reports.iter().filter(|r| r.target.starts_with("silver."));
    Ok(Report {
        elapsed: started.elapsed(),
        statuses,
        duplicates: silver.clone().map(|r| r.duplicates).sum(),
        quarantined: silver.map(ModelReport::quarantined_total).sum(),
        rejected: ingested.rejected,
        answers,
    })
}

/// Passes compaction reports on, counting those that committed: only the
/// tables a run actually merged are worth a line.
struct Compactions<'a> {
    observer: &'a dyn Observer,
    committed: std::cell::Cell<usize>,
}

impl lake_maintain::Observer for Compactions<'_> {
    fn done(&self, step: &Done) {
        if let Done::Compact(report) = step
            && report.committed > 0
        {
            self.committed.set(self.committed.get() + 1);
            self.observer.done(step);
        }
    }

    fn failed(&self, table: &iceberg::TableIdent, error: &lake_maintain::Error) {
        self.observer.failed(table, error);
    }
}

/// `options.records` records of the route's dataset into its topic, as
/// fast as the mock takes them, with event times spread over the last
/// [`EVENT_SPAN`].
async fn generate(
    stream: Stream,
    route: &Route,
    client: &rdkafka::ClientConfig,
    options: &Options,
    seed: u64,
) -> Result<lake_generate::Summary> {
    let count = options.records;
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
        progress: options.progress,
        ..RunLimits::default()
    };
    let summary = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(config);
        lake_generate::run(
            &mut generator,
            &target,
            &limits,
            &Arc::new(AtomicBool::new(false)),
        )
    })
    .await?;
    summary.map_err(|source| Error::Generate {
        dataset: route.dataset.name.clone(),
        source,
    })
}
