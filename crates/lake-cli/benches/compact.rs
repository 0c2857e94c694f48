//! `lake compact` on a bronze table of small files.
//!
//! cargo bench -p lake-cli --bench compact        (5 M tweets; LAKE_BENCH_TWEETS to change)
//!
//! Each run fills `bronze.tweets_raw` of an embedded catalog with a local warehouse with
//! generated tweets committed in appends of LAKE_BENCH_COMMIT_ROWS (5 000) rows, as a
//! frequently committing ingest leaves them (two days of hourly partitions, about one file
//! per append, 1 % duplicates), then times the release `lake compact bronze.tweets_raw` with
//! the default 512 MiB target. It prints files and bytes before and after, and the rate in
//! MB/s of small files read and rewritten (commits included).
//!
//! LAKE_BENCH_RUNS sets the runs (3), LAKE_BENCH_LOG the lake run's RUST_LOG,
//! LAKE_BENCH_ARGS more `lake compact` arguments (`--max-concurrent 1`).

use std::process::Command;
use std::time::Instant;

use iceberg::{Catalog, TableIdent};

mod common;
use common::median;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let tweets: u64 = env_or("LAKE_BENCH_TWEETS", 5_000_000);
    let commit_rows: u64 = env_or("LAKE_BENCH_COMMIT_ROWS", 5_000);
    let runs: usize = env_or("LAKE_BENCH_RUNS", 3);
    let extra: String = env_or("LAKE_BENCH_ARGS", String::new());
    // Late rows add a file to an earlier hour each, and rule-breaking times
    // one file per partition of their own: ~3 500 files where compaction can
    // merge ~1 000. Left out so the table is the small files compaction is for.
    let faults = lake_generate::FaultRates {
        duplicates: 0.01,
        ..lake_generate::FaultRates::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (uri, key) = common::embedded_catalog(&runtime, dir.path());
    let catalog = common::connect(&runtime, &uri, &key);
    let ident = TableIdent::from_strs(["bronze", "tweets_raw"]).expect("ident");

    let mut rates = Vec::new();
    let mut seconds = Vec::new();
    let mut memory = Vec::new();
    let mut shape = (0usize, 0u64, 0usize, 0u64);
    for run in 0..runs {
        runtime.block_on(common::fill_bronze(&catalog, tweets, commit_rows, faults));
        let table = runtime.block_on(catalog.load(&ident)).expect("bronze");
        let before = runtime
            .block_on(lake_table::files::live_files(&table, None))
            .expect("live files");
        let bytes_before: u64 = before
            .iter()
            .map(|f| f.data_file.file_size_in_bytes())
            .sum();

        let started = Instant::now();
        let out = common::lake_env(
            &mut Command::new(env!("CARGO_BIN_EXE_lake")),
            &uri,
            &key,
            dir.path(),
        )
        .args(["compact", "bronze.tweets_raw"])
        .args(extra.split_whitespace())
        .output()
        .expect("lake compact");
        let elapsed = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        eprint!("{stderr}");

        let table = runtime.block_on(catalog.load(&ident)).expect("bronze");
        let after = runtime
            .block_on(lake_table::files::live_files(&table, None))
            .expect("live files");
        let rows_before: u64 = before.iter().map(|f| f.data_file.record_count()).sum();
        let rows_after: u64 = after.iter().map(|f| f.data_file.record_count()).sum();
        assert_eq!(rows_after, rows_before, "compaction changed the row count");
        let bytes_after: u64 = after.iter().map(|f| f.data_file.file_size_in_bytes()).sum();
        shape = (before.len(), bytes_before, after.len(), bytes_after);
        let rate = bytes_before as f64 / 1e6 / elapsed;
        eprintln!(
            "run {run}: {} files ({:.0} MB) → {} files ({:.0} MB) in {elapsed:.2}s = {rate:.1} MB/s",
            before.len(),
            bytes_before as f64 / 1e6,
            after.len(),
            bytes_after as f64 / 1e6
        );
        rates.push(rate);
        seconds.push(elapsed);
        memory.push(common::peak_mb(&stderr));

        runtime
            .block_on(catalog.rest().drop_table(&ident))
            .expect("drop");
        std::fs::remove_dir_all(common::local_path(table.metadata().location()))
            .expect("delete files");
    }
    let (files_before, bytes_before, files_after, bytes_after) = shape;
    println!(
        "compact: {tweets} tweets in {files_before} files ({:.0} MB) → {files_after} files ({:.0} MB); median of {runs}: {:.2}s = {:.1} MB/s of small files, {:.0} k rows/s; peak RSS {:.0} MB",
        bytes_before as f64 / 1e6,
        bytes_after as f64 / 1e6,
        median(seconds.clone()),
        median(rates),
        tweets as f64 / 1e3 / median(seconds),
        median(memory)
    );
}
