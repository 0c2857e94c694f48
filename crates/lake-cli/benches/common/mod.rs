//! What the benchmarks share: an embedded catalog on a local warehouse, medians.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lake_catalog::CatalogServer;
use lake_core::config::{ServerConfig, StorageConfig};
use lake_generate::{FaultRates, Generator, GeneratorConfig};
use lake_ingest::decode::{Chunk, Coordinates, RecordDecoder};
use lake_table::{Append, LakeCatalog, TableWriter};

/// Kafka partitions the generated coordinates spread over.
const KAFKA_PARTITIONS: u64 = 16;

/// Generated event times start here (2026-01-01T00:00:00Z, in µs).
pub const START: i64 = 1_767_225_600_000_000;

/// An embedded catalog serving on a loopback port from this runtime, its
/// database and warehouse under `dir`. Returns its URI and an admin key (the transform bench drops tables).
pub fn embedded_catalog(runtime: &tokio::runtime::Runtime, dir: &Path) -> (String, String) {
    let key = lake_catalog::generate_key();
    let server = ServerConfig::embedded(dir, &key);
    let catalog = runtime
        .block_on(CatalogServer::bind(&server, &StorageConfig::default()))
        .expect("catalog");
    let uri = catalog.uri();
    runtime.spawn(catalog.serve(std::future::pending()));
    (uri, key)
}

/// The bench setting `name` from the environment, or `default` when unset or
/// not a `T`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sizes in millions of rows from the comma-separated variable `name`, else
/// `default`.
pub fn millions(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: millions, comma-separated"))
        })
        .collect()
}

/// The machine's CPU time from `/proc/stat` since a moment: how many cores
/// were busy (any process, the kernel included) while a contestant ran,
/// which tells whether it had a core to spare.
pub struct MachineCpu {
    busy: u64,
    started: std::time::Instant,
}

impl MachineCpu {
    pub fn now() -> Self {
        Self {
            busy: Self::busy_ticks(),
            started: std::time::Instant::now(),
        }
    }

    /// Cores busy on average since [`MachineCpu::now`].
    pub fn cores_busy(&self) -> f64 {
        // USER_HZ is 100 on every Linux this runs on.
        let seconds = (Self::busy_ticks() - self.busy) as f64 / 100.0;
        seconds / self.started.elapsed().as_secs_f64()
    }

    /// Ticks spent in anything but idle and I/O wait, over all cores.
    fn busy_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .expect("/proc/stat's cpu line")
            .split_whitespace()
            .map(|t| t.parse().expect("ticks"))
            .collect();
        // user nice system idle iowait irq softirq steal …
        ticks.iter().take(8).sum::<u64>() - ticks[3] - ticks[4]
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Points a `lake` command at the bench catalog with the bench's log level
/// (`LAKE_BENCH_LOG`, default warn), run from `dir`.
pub fn lake_env<'a>(
    command: &'a mut std::process::Command,
    uri: &str,
    key: &str,
    dir: &Path,
) -> &'a mut std::process::Command {
    command
        .env("LAKE_CATALOG__URI", uri)
        .env("LAKE_CATALOG__TOKEN", key)
        .env("LAKE_PII_KEY", "lake-bench-pii-key-0123456789")
        .env(
            "RUST_LOG",
            std::env::var("LAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(dir)
}

/// The release `lake`, started under the command `LAKE_BENCH_WRAP` gives
/// when set (e.g. `perf record -g -o /tmp/lake.perf --`).
pub fn lake_command() -> std::process::Command {
    let wrap: Vec<String> = std::env::var("LAKE_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    match wrap.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(env!("CARGO_BIN_EXE_lake"));
            command
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_lake")),
    }
}

/// `command` started under `/usr/bin/time`, which appends a line with the
/// process's CPU seconds, peak RSS and page faults to its stderr (see
/// [`time_report`] and [`kernel_report`]):
/// the same measurement for lake and its peers. Takes the program,
/// arguments, environment and directory of `command` (not its stdio).
pub fn timed(command: &std::process::Command) -> std::process::Command {
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .args(["-f", "\nTIMED %U %S %M %R"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    timed
}

/// The numbers on [`timed`]'s line in `stderr`: user and system seconds,
/// peak RSS in KB, minor page faults.
fn timed_fields(stderr: &str) -> Vec<f64> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("TIMED "))
        .expect("a TIMED line from /usr/bin/time (is GNU time installed?)");
    line.split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect()
}

/// The CPU seconds (user + system) and peak RSS in MB that [`timed`]'s
/// line in `stderr` reports.
pub fn time_report(stderr: &str) -> (f64, f64) {
    let fields = timed_fields(stderr);
    (fields[0] + fields[1], fields[2] * 1024.0 / 1e6)
}

/// Of [`timed`]'s line in `stderr`: the seconds spent in the kernel (part
/// of [`time_report`]'s CPU seconds) and the minor page faults, most of
/// them first touches of pages the allocator took from the system (again).
pub fn kernel_report(stderr: &str) -> (f64, f64) {
    let fields = timed_fields(stderr);
    (fields[1], fields[3])
}

/// Seconds `lake ingest` waited for its first record (joining the group,
/// the first fetch), from the summary line it prints; 0 without one.
pub fn first_record_wait(stderr: &str) -> f64 {
    stderr
        .split("first record after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

/// The `peak memory N MB` a lake summary line reports.
pub fn peak_mb(stderr: &str) -> f64 {
    stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|mb| mb.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A lake-table client of the bench catalog.
pub fn connect(runtime: &tokio::runtime::Runtime, uri: &str, key: &str) -> LakeCatalog {
    let config = lake_core::Config {
        catalog: lake_core::config::CatalogConfig {
            uri: uri.to_string(),
            token: Some(lake_core::Secret::new(key)),
            ..lake_core::config::CatalogConfig::default()
        },
        ..lake_core::Config::default()
    };
    runtime
        .block_on(LakeCatalog::connect(&config))
        .expect("connect")
}

/// The Python with DuckDB: `LAKE_TEST_PYTHON`, else the venv `tests/run` installs.
pub fn python() -> PathBuf {
    std::env::var_os("LAKE_TEST_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/lake/venv/bin/python")
        },
        PathBuf::from,
    )
}

/// The JSON report a peer script printed, once it exited successfully;
/// `out_dir`, where it wrote its files, is deleted.
pub fn peer_report(out: &std::process::Output, out_dir: &Path) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    std::fs::remove_dir_all(out_dir).expect("delete the peer's output");
    report
}

pub fn local_path(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// The faults of a stream as ingest meets it: 1 % duplicates, 1 % late,
/// 0.1 % breaking a rule.
pub fn usual_faults() -> FaultRates {
    FaultRates {
        duplicates: 0.01,
        late: 0.01,
        invalid: 0.001,
        ..FaultRates::default()
    }
}

/// Fills `bronze.tweets_raw` with `tweets` generated tweets (two days of event
/// time, with `faults`), decoded by ingest's decoder and committed in appends
/// of `commit_rows`; returns its files.
pub async fn fill_bronze(
    catalog: &LakeCatalog,
    tweets: u64,
    commit_rows: u64,
    faults: FaultRates,
) -> Vec<PathBuf> {
    let mut config = GeneratorConfig::new(lake_generate::Stream::Tweets, 42, START);
    config.events_per_second = tweets as f64 / (2.0 * 86_400.0);
    config.faults = faults;
    let mut generator = Generator::new(config);
    let payloads = (0..tweets).map(|_| generator.next_record().payload.to_vec());
    let started = Instant::now();
    let table = append_tweets(catalog, payloads, 0, commit_rows, None).await;
    let files = lake_table::files::live_files(&table, None)
        .await
        .expect("live files");
    let bytes: u64 = files.iter().map(|f| f.data_file.file_size_in_bytes()).sum();
    eprintln!(
        "bronze: {tweets} tweets in {} files, {:.0} MB, written in {:.1}s",
        files.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    files.iter().map(|f| local_path(f.path())).collect()
}

/// Appends tweet payloads to `bronze.tweets_raw` (created if missing) as
/// ingest decodes them, committing every `commit_rows`. Payload `i` sits at
/// the Kafka coordinates of record `first + i` of a 16-partition topic. When
/// `keys` is given, the `tweet_id` of every bronze row written is pushed to it
/// (records ingest would reject write no row).
pub async fn append_tweets(
    catalog: &LakeCatalog,
    payloads: impl Iterator<Item = Vec<u8>>,
    first: u64,
    commit_rows: u64,
    mut keys: Option<&mut Vec<Option<String>>>,
) -> iceberg::table::Table {
    let route = lake_ingest::Route::for_dataset(&tweets_spec());
    let mut table = lake_ingest::bronze::ensure_bronze(catalog, &route)
        .await
        .expect("bronze table");
    let arrow = Arc::new(
        iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).expect("arrow"),
    );
    let decoder = RecordDecoder::new(&tweets_spec(), "tweets", arrow, false);
    let distinct = lake_ingest::bronze::distinct_columns(&tweets_spec());
    let chunk_records = lake_ingest::IngestOptions::default().chunk_records;
    let mut chunk = Chunk::sized_for(chunk_records);
    let mut payloads = payloads.peekable();
    let mut index = first;
    while payloads.peek().is_some() {
        let mut writer = TableWriter::new(&table, lake_ingest::bronze_writer_options(&distinct))
            .await
            .expect("writer");
        let mut in_commit = 0;
        while in_commit < commit_rows {
            let payload = payloads.next();
            if let Some(payload) = &payload {
                let at = Coordinates {
                    partition: (index % KAFKA_PARTITIONS) as i32,
                    offset: (index / KAFKA_PARTITIONS) as i64,
                    timestamp_ms: Some(0),
                };
                chunk.push(Some(payload.as_slice()), at, 1 << 20);
                index += 1;
                in_commit += 1;
            }
            let last = payload.is_none() || in_commit == commit_rows;
            if chunk.len() == chunk_records || (last && !chunk.is_empty()) {
                let decoded = decoder
                    .decode(&chunk, lake_core::now_micros())
                    .expect("decode");
                for batch in &decoded.bronze {
                    if let Some(keys) = keys.as_deref_mut() {
                        let ids = batch.column_by_name("tweet_id").expect("tweet_id column");
                        let ids = arrow_cast::cast(ids, &arrow_schema::DataType::Utf8)
                            .expect("tweet_id as text");
                        let ids = ids
                            .as_any()
                            .downcast_ref::<arrow_array::StringArray>()
                            .expect("strings");
                        keys.extend(ids.iter().map(|id| id.map(str::to_string)));
                    }
                    writer.write(batch).await.expect("write");
                }
                chunk.clear();
            }
            if payload.is_none() {
                break;
            }
        }
        let files = writer.close().await.expect("close");
        table = Append::new()
            .add_files(files)
            .commit(catalog, &table)
            .await
            .expect("append");
    }
    table
}

/// Produces `tweets` records of `generator` to `topic` (unkeyed) and
/// returns their payload bytes; every one must be delivered.
pub fn produce_tweets(
    generator: &mut Generator,
    config: rdkafka::ClientConfig,
    topic: &str,
    tweets: u64,
) -> u64 {
    let produced = lake_generate::run(
        generator,
        &lake_generate::Target::Kafka {
            config,
            topic: topic.to_string(),
            keyed: false,
        },
        &lake_generate::RunLimits {
            count: Some(tweets),
            ..lake_generate::RunLimits::default()
        },
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("produce");
    assert_eq!(produced.delivered, tweets, "tweets delivered");
    produced.bytes
}

/// The built-in tweets dataset.
pub fn tweets_spec() -> std::sync::Arc<lake_spec::DatasetSpec> {
    lake_spec::Pipeline::built_in()
        .expect("the built-in pipeline")
        .dataset("tweets")
        .expect("tweets")
        .clone()
}

/// The generated tweets every ingest bench puts on its topic: seed 42 from
/// [`START`], an hour's worth whatever their number.
pub fn tweets_generator(tweets: u64) -> Generator {
    let mut config = GeneratorConfig::new(lake_generate::Stream::Tweets, 42, START);
    config.events_per_second = tweets as f64 / 3600.0;
    Generator::new(config)
}

/// The payloads of [`tweets_generator`], back to back, for the in-process
/// ceiling.
pub struct TweetPayloads {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl TweetPayloads {
    pub fn generate(tweets: u64) -> Self {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(usize::try_from(tweets).unwrap_or(0));
        let mut generator = tweets_generator(tweets);
        for _ in 0..tweets {
            bytes.extend_from_slice(generator.next_record().payload);
            ends.push(bytes.len());
        }
        Self { bytes, ends }
    }

    /// Seconds to check, decode and write every payload to a new local
    /// bronze table under `dir` in this process, through ingest's decoder and
    /// writer settings, in ingest's chunks (`IngestOptions::chunk_records`)
    /// spread over `partitions`: no Kafka, no catalog, one thread. What
    /// ingest could reach at best.
    pub fn ceiling(&self, runtime: &tokio::runtime::Runtime, dir: &Path, partitions: i32) -> f64 {
        let spec = tweets_spec();
        let (schema, partitioning) = lake_ingest::bronze::bronze_definition(&spec).expect("schema");
        let table = runtime
            .block_on(lake_table::testing::local_table(
                dir,
                "tweets_raw",
                schema,
                partitioning,
            ))
            .expect("local table");
        let arrow = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .expect("arrow"),
        );
        let decoder = RecordDecoder::new(&spec, "tweets", arrow, false);
        let started = Instant::now();
        let rows = runtime.block_on(async {
            let distinct = lake_ingest::bronze::distinct_columns(&spec);
            let mut writer =
                TableWriter::new(&table, lake_ingest::bronze_writer_options(&distinct))
                    .await
                    .expect("writer");
            let chunk_records = lake_ingest::IngestOptions::default().chunk_records;
            let mut chunk = Chunk::sized_for(chunk_records);
            let mut start = 0;
            let mut rows = 0;
            for (i, &end) in self.ends.iter().enumerate() {
                let at = Coordinates {
                    partition: (i % partitions.max(1) as usize) as i32,
                    offset: i as i64,
                    timestamp_ms: Some(0),
                };
                chunk.push(Some(&self.bytes[start..end]), at, 1 << 20);
                start = end;
                if chunk.len() == chunk_records || i + 1 == self.ends.len() {
                    let decoded = decoder.decode(&chunk, 0).expect("decode");
                    for batch in &decoded.bronze {
                        writer.write(batch).await.expect("write");
                    }
                    rows += decoded.rows();
                    chunk.clear();
                }
            }
            writer.close().await.expect("close");
            rows
        });
        assert_eq!(rows, self.ends.len(), "the ceiling's rows");
        started.elapsed().as_secs_f64()
    }
}
