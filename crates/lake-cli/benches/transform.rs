//! `lake transform` over bronze tweets against DuckDB on the same Parquet files.
//!
//! cargo bench -p lake-cli --bench transform        (10 M tweets; LAKE_BENCH_TWEETS to change)
//!
//! Generated tweets (two days of event time, 1 % duplicates, 1 % late, 0.1 % breaking a
//! rule) are decoded by ingest's decoder and committed to `bronze.tweets_raw` of an embedded
//! catalog with a local warehouse, in appends of 1 M rows. Each run then times, from empty
//! targets:
//! - the release `lake transform all --dataset tweets`: silver with its quarantine and the
//!   four tweet gold tables, written as zstd Parquet and committed;
//! - DuckDB (the `duckdb` Python package, `LAKE_TEST_PYTHON` or the venv `tests/run`
//!   installs) running the same model files over the same bronze Parquet files and writing
//!   zstd Parquet (benches/transform_duckdb.py).
//!
//! Both must produce the same number of rows in every output, or the run fails.
//!
//! LAKE_BENCH_RUNS sets the runs (3), LAKE_BENCH_LOG the lake run's RUST_LOG; LAKE_BENCH_WRAP a command the lake run is started
//! under, e.g. `perf record -g -o /tmp/transform.perf --`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use iceberg::{Catalog, TableIdent};
use lake_table::LakeCatalog;

mod common;
use common::{env_or, median};

/// Every table `lake transform all --dataset tweets` writes.
const OUTPUTS: [&str; 6] = [
    "silver.tweets_clean",
    "silver.tweets_quarantine",
    "gold.popular_hashtags_by_hour",
    "gold.active_users_by_day",
    "gold.tweet_volume_by_region",
    "gold.tweet_metrics_by_language",
];

/// Rows in each output table, then the tables dropped and their files
/// deleted so that the next run starts from empty targets.
async fn take_outputs(catalog: &LakeCatalog) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    for name in OUTPUTS {
        let ident = TableIdent::from_strs(name.split('.')).expect("ident");
        let table = catalog.load(&ident).await.expect("output table");
        let count = lake_table::files::live_files(&table, None)
            .await
            .expect("live files")
            .iter()
            .map(|f| f.data_file.record_count())
            .sum();
        rows.insert(name.to_string(), count);
        catalog.rest().drop_table(&ident).await.expect("drop");
        std::fs::remove_dir_all(common::local_path(table.metadata().location()))
            .expect("delete files");
    }
    rows
}

fn main() {
    let tweets: u64 = env_or("LAKE_BENCH_TWEETS", 10_000_000);
    let runs: usize = env_or("LAKE_BENCH_RUNS", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (uri, key) = common::embedded_catalog(&runtime, dir.path());
    let catalog = common::connect(&runtime, &uri, &key);
    let bronze = runtime.block_on(common::fill_bronze(
        &catalog,
        tweets,
        1_000_000,
        common::usual_faults(),
    ));

    let models = dir.path().join("models");
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["transform", "models", "--out"])
        .arg(&models)
        .output()
        .expect("lake transform models");
    assert!(out.status.success(), "{out:?}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/transform_duckdb.py");

    let mut lake_times = Vec::new();
    let mut lake_memory = Vec::new();
    let mut duck_times = Vec::new();
    let mut duck_silver = Vec::new();
    for run in 0..runs {
        let started = Instant::now();
        let mut command = common::lake_command();
        let out = common::lake_env(&mut command, &uri, &key, dir.path())
            .args(["transform", "all", "--dataset", "tweets"])
            .output()
            .expect("lake transform");
        let seconds = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        if run == 0 {
            eprint!("{stderr}");
        }
        let peak_mb: f64 = common::peak_mb(&stderr);
        let lake_rows = runtime.block_on(take_outputs(&catalog));
        eprintln!("lake, run {run}: {seconds:.2}s, peak memory {peak_mb:.0} MB");

        let duck_out = dir.path().join("duckdb");
        let out = Command::new(common::python())
            .arg(&script)
            .arg(&models)
            .arg(&duck_out)
            .args(&bronze)
            .output()
            .expect("python with duckdb (run tests/run once to install it)");
        let report = common::peer_report(&out, &duck_out);
        let duck_rows: BTreeMap<String, u64> =
            serde_json::from_value(report["rows"].clone()).expect("rows");
        assert_eq!(
            lake_rows, duck_rows,
            "lake and DuckDB disagree on row counts"
        );
        let duck_seconds = report["seconds"].as_f64().expect("seconds");
        eprintln!(
            "duckdb, run {run}: {duck_seconds:.2}s (silver {:.2}s); rows {duck_rows:?}",
            report["silver_seconds"].as_f64().unwrap_or(f64::NAN)
        );
        lake_times.push(seconds);
        lake_memory.push(peak_mb);
        duck_times.push(duck_seconds);
        duck_silver.push(report["silver_seconds"].as_f64().unwrap_or(f64::NAN));
    }

    let lake = median(lake_times);
    let duck = median(duck_times);
    println!(
        "transform/lake: {tweets} bronze tweets → silver + 4 gold, median of {runs}: {lake:.2}s = {:.0} k rows/s; peak RSS {:.0} MB",
        tweets as f64 / 1e3 / lake,
        median(lake_memory)
    );
    println!(
        "transform/duckdb: same models, same files, median of {runs}: {duck:.2}s = {:.0} k rows/s (silver {:.2}s)",
        tweets as f64 / 1e3 / duck,
        median(duck_silver)
    );
    println!(
        "transform/ratio: lake takes {:.2}× DuckDB's time",
        lake / duck
    );
}
