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
//! Side by side in each run, DuckDB (the `duckdb` Python package, `LAKE_TEST_PYTHON` or the
//! venv `tests/run` installs) rewrites the same small files, each partition of five or more
//! into one file, with `COPY … TO … (FORMAT parquet)` at the table's zstd level
//! (benches/compact_duckdb.py); it must write as many rows as those files hold.
//!
//! LAKE_BENCH_RUNS sets the runs (3), LAKE_BENCH_LOG the lake run's RUST_LOG,
//! LAKE_BENCH_ARGS more `lake compact` arguments (`--max-concurrent 1`), LAKE_BENCH_WRAP a
//! command the lake run is started under, e.g. `perf record -g -o /tmp/compact.perf --`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use iceberg::{Catalog, TableIdent};

mod common;
use common::{env_or, median};

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
    let mut duck_seconds = Vec::new();
    let mut level = 1;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compact_duckdb.py");
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

        // DuckDB writes at the level lake's compaction takes from the table.
        level = match lake_table::writer::compression(&table).expect("codec") {
            parquet::basic::Compression::ZSTD(level) => level.compression_level(),
            other => panic!("the bench compares zstd; bronze is {other:?}"),
        };
        let started = Instant::now();
        let out = common::lake_env(&mut common::lake_command(), &uri, &key, dir.path())
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

        // DuckDB merges the same small files, partition by partition, as
        // lake did (partitions of fewer than --min-input-files are left).
        let mut partitions: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for file in &before {
            let path = common::local_path(file.path());
            let partition = path.parent().expect("partition directory").to_path_buf();
            partitions.entry(partition).or_default().push(path);
        }
        let groups: Vec<Vec<PathBuf>> = partitions
            .into_values()
            .filter(|files| files.len() >= 5)
            .collect();
        let grouped_rows: u64 = before
            .iter()
            .filter(|f| {
                groups
                    .iter()
                    .any(|g| g.contains(&common::local_path(f.path())))
            })
            .map(|f| f.data_file.record_count())
            .sum();
        let duck_out = dir.path().join("duckdb");
        let mut child = Command::new(common::python())
            .arg(&script)
            .arg(&duck_out)
            .env("LEVEL", level.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python with duckdb (run tests/run once to install it)");
        serde_json::to_writer(child.stdin.take().expect("stdin"), &groups).expect("groups");
        let out = child.wait_with_output().expect("duckdb");
        let report = common::peer_report(&out, &duck_out);
        assert_eq!(report["rows"].as_u64(), Some(grouped_rows), "DuckDB's rows");
        let duck = report["seconds"].as_f64().expect("seconds");
        eprintln!(
            "duckdb, run {run}: {} groups ({grouped_rows} rows) in {duck:.2}s = {:.1} MB/s",
            groups.len(),
            bytes_before as f64 / 1e6 / duck
        );
        duck_seconds.push(duck);

        runtime
            .block_on(catalog.rest().drop_table(&ident))
            .expect("drop");
        std::fs::remove_dir_all(common::local_path(table.metadata().location()))
            .expect("delete files");
    }
    let (files_before, bytes_before, files_after, bytes_after) = shape;
    let lake = median(seconds);
    println!(
        "compact: {tweets} tweets in {files_before} files ({:.0} MB) → {files_after} files ({:.0} MB); median of {runs}: {:.2}s = {:.1} MB/s of small files, {:.0} k rows/s; peak RSS {:.0} MB",
        bytes_before as f64 / 1e6,
        bytes_after as f64 / 1e6,
        lake,
        median(rates),
        tweets as f64 / 1e3 / lake,
        median(memory)
    );
    let duck = median(duck_seconds);
    println!(
        "compact/duckdb: the same partitions' files, one COPY each at zstd level {level}, median of {runs}: {duck:.2}s = {:.1} MB/s",
        bytes_before as f64 / 1e6 / duck
    );
    println!("compact/ratio: lake at {:.2}× DuckDB's rate", duck / lake);
}
