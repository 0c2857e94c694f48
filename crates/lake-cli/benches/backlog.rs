//! `lake transform silver` over a bronze backlog — a first run after a long
//! ingest — in one commit and in the default steps: does its memory follow
//! the backlog or the step?
//!
//! cargo bench -p lake-cli --bench backlog       (backlogs of 4 and 12 M rows)
//!
//! Bronze is filled with the table writer (not through Kafka), 1 M rows per
//! bronze snapshot as a 10 s ingest commit at ~100 k tweets/s would make
//! them, from the ingest benches' generator (an hour of tweets, none
//! re-sent). At each size silver is built twice from nothing, each time
//! over the whole bronze table: once with `--silver-rows-per-commit` above
//! the backlog (one step), once with the default; silver and its
//! quarantine are dropped before each. Both runs must write the same rows.
//!
//! LAKE_BENCH_BACKLOG sets the sizes in millions of rows (4,12).

use std::process::Command;
use std::time::Instant;

use iceberg::{Catalog, TableIdent};

mod common;

const SILVER: &str = "silver.tweets_clean";
const QUARANTINE: &str = "silver.tweets_quarantine";

/// Runs `lake transform silver` with `args` on a silver built from nothing;
/// returns its wall seconds, peak RSS (MB) and the rows silver holds after.
fn silver_from_nothing(
    runtime: &tokio::runtime::Runtime,
    catalog: &lake_table::LakeCatalog,
    (uri, key, dir): (&str, &str, &std::path::Path),
    args: &[&str],
) -> (f64, f64, u64) {
    for name in [SILVER, QUARANTINE] {
        let ident = TableIdent::from_strs(name.split('.')).expect("ident");
        if runtime
            .block_on(catalog.rest().table_exists(&ident))
            .expect("exists")
        {
            runtime
                .block_on(catalog.rest().drop_table(&ident))
                .expect("drop");
        }
    }
    let started = Instant::now();
    let out = common::lake_env(&mut Command::new(env!("CARGO_BIN_EXE_lake")), uri, key, dir)
        .args(["transform", "silver", "--dataset", "tweets"])
        .args(args)
        .output()
        .expect("lake");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ident = TableIdent::from_strs(SILVER.split('.')).expect("ident");
    let table = runtime
        .block_on(catalog.rest().load_table(&ident))
        .expect("silver");
    let rows = table
        .metadata()
        .current_snapshot()
        .and_then(|s| s.summary().additional_properties.get("total-records"))
        .and_then(|n| n.parse().ok())
        .expect("silver's total-records");
    (seconds, common::peak_mb(&stderr), rows)
}

fn main() {
    let sizes = common::millions("LAKE_BENCH_BACKLOG", "4,12");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (uri, key) = common::embedded_catalog(&runtime, dir.path());
    let catalog = common::connect(&runtime, &uri, &key);
    let last = sizes.iter().copied().max().unwrap_or(0) * 1_000_000;
    let mut generator = common::tweets_generator(last);
    let mut written = 0u64;
    for size in sizes {
        let rows = size * 1_000_000;
        let started = Instant::now();
        let payloads = (written..rows).map(|_| generator.next_record().payload.to_vec());
        runtime.block_on(common::append_tweets(
            &catalog, payloads, written, 1_000_000, None,
        ));
        eprintln!(
            "bronze: {} more rows in {:.1}s",
            rows - written,
            started.elapsed().as_secs_f64()
        );
        written = rows;
        let lake = (uri.as_str(), key.as_str(), dir.path());
        let above = (rows + 1).to_string();
        let (one_time, one_peak, one_rows) = silver_from_nothing(
            &runtime,
            &catalog,
            lake,
            &["--silver-rows-per-commit", &above],
        );
        let (time, peak, stepped_rows) = silver_from_nothing(&runtime, &catalog, lake, &[]);
        assert_eq!(stepped_rows, one_rows, "the same silver rows either way");
        println!(
            "backlog/{size}M/one-step: silver from {rows} bronze rows in one commit: \
             {one_time:.2}s; peak RSS {one_peak:.0} MB; {one_rows} silver rows"
        );
        println!(
            "backlog/{size}M/steps: the same in steps of {} rows: {time:.2}s ({:.2}× the time); \
             peak RSS {peak:.0} MB ({:.2}× the memory)",
            lake_transform::DEFAULT_SILVER_ROWS_PER_COMMIT,
            time / one_time,
            peak / one_peak
        );
    }
}
