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
        .env(
            "RUST_LOG",
            std::env::var("LAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(dir)
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
            warehouse: None,
        },
        ..lake_core::Config::default()
    };
    runtime
        .block_on(LakeCatalog::connect(&config))
        .expect("connect")
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
    let route = lake_ingest::Route::for_dataset(&tweets_spec());
    let mut table = lake_ingest::bronze::ensure_bronze(catalog, &route)
        .await
        .expect("bronze table");
    let arrow = Arc::new(
        iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).expect("arrow"),
    );
    let decoder = RecordDecoder::new(&tweets_spec(), "tweets", arrow, false);
    let distinct = lake_ingest::bronze::distinct_columns(&tweets_spec());
    let mut chunk = Chunk::with_capacity(4096, 4096 * 600);
    let mut written = 0u64;
    let started = Instant::now();
    while written < tweets {
        let mut writer = TableWriter::new(&table, lake_ingest::bronze_writer_options(&distinct))
            .await
            .expect("writer");
        let end = (written + commit_rows).min(tweets);
        for i in written..end {
            let at = Coordinates {
                partition: (i % KAFKA_PARTITIONS) as i32,
                offset: (i / KAFKA_PARTITIONS) as i64,
                timestamp_ms: Some(0),
            };
            chunk.push(Some(generator.next_record().payload), at, 1 << 20);
            if chunk.len() == 4096 || i + 1 == end {
                let decoded = decoder.decode(&chunk, lake_core::now_micros());
                for batch in &decoded.expect("decode").bronze {
                    writer.write(batch).await.expect("write");
                }
                chunk.clear();
            }
        }
        let files = writer.close().await.expect("close");
        table = Append::new()
            .add_files(files)
            .commit(catalog, &table)
            .await
            .expect("append");
        written = end;
    }
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

/// The built-in tweets dataset.
pub fn tweets_spec() -> std::sync::Arc<lake_spec::DatasetSpec> {
    lake_spec::Pipeline::built_in()
        .expect("the built-in pipeline")
        .dataset("tweets")
        .expect("tweets")
        .clone()
}
