//! `lake transform all` on a 1 M-row bronze batch while silver grows: does a
//! run's time and memory follow the batch or the table?
//!
//! cargo bench -p lake-cli --bench growth        (silver at 10, 50, 100 M rows)
//!
//! Silver is seeded by one real run over 1 M generated tweets of 2025-01-01, then
//! grown with the table writer (not through Kafka and transform) by copies of
//! those rows, copy `k` shifted `k` days later in event time and given ids no
//! generator makes. At each size the gold tables are caught up (a backfill
//! of every hour and day added since: its time and peak memory printed), then
//! each run appends a new 1 M-row bronze batch — a later day's tweets with 1 %
//! re-sent within the batch and 1 % re-sends of the seed day's records — and
//! times `lake transform all --dataset tweets` (silver with its dedup against
//! the whole table under the default horizon, quarantine, four gold tables).
//! One more run per size adds `--exhaustive-dedup` (every existing key read),
//! for what the horizon saves. The duplicates silver reports must equal the
//! count the bench computes from every key it wrote, or the run fails.
//!
//! LAKE_BENCH_SIZES sets the silver sizes in millions of rows (10,50,100),
//! LAKE_BENCH_RUNS the timed runs per size (3), LAKE_BENCH_LOG the runs' RUST_LOG.
//! Silver at 100 M rows takes about 10 GB of the temp directory.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use iceberg::TableIdent;
use lake_generate::{FaultRates, Generator, GeneratorConfig, Stream};
use lake_table::{Append, LakeCatalog, TableWriter, WriterOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

mod common;
use common::{env_or, median};

const DAY_MICROS: i64 = 86_400_000_000;
/// 2025-01-01T00:00:00Z: a year before the other benches, so that no day
/// written here is in the future.
const SEED_DAY: i64 = common::START - 365 * DAY_MICROS;
/// Rows of the seed and of every new batch.
const BATCH: u64 = 1_000_000;
/// Batch `b` falls on this day after the seed's plus `b`, clear of the copies.
const FIRST_BATCH_DAY: i64 = 200;

/// One day of tweets from `seed`, 1 % re-sent shortly after, 1 % late by two
/// hours; none breaks a rule, so every key written reaches silver.
fn day_generator(seed: u64, day: i64) -> Generator {
    let mut config = GeneratorConfig::new(Stream::Tweets, seed, SEED_DAY + day * DAY_MICROS);
    config.events_per_second = BATCH as f64 / 86_400.0;
    config.faults = FaultRates {
        duplicates: 0.01,
        late: 0.01,
        ..FaultRates::default()
    };
    Generator::new(config)
}

fn silver_ident() -> TableIdent {
    TableIdent::from_strs(["silver", "tweets_clean"]).expect("ident")
}

async fn rows(catalog: &LakeCatalog, ident: &TableIdent) -> (iceberg::table::Table, u64) {
    let table = catalog.load(ident).await.expect("load");
    let rows = lake_table::files::live_files(&table, None)
        .await
        .expect("live files")
        .iter()
        .map(|f| f.data_file.record_count())
        .sum();
    (table, rows)
}

/// Every row of silver as it stands (the seed run's output).
async fn read_silver(catalog: &LakeCatalog) -> Vec<RecordBatch> {
    let table = catalog.load(&silver_ident()).await.expect("silver");
    let mut batches = Vec::new();
    for file in lake_table::files::live_files(&table, None)
        .await
        .expect("live files")
    {
        let path = common::local_path(file.path());
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).expect("silver file"),
        )
        .expect("parquet")
        .with_batch_size(64 * 1024)
        .build()
        .expect("reader");
        for batch in reader {
            batches.push(batch.expect("batch"));
        }
    }
    batches
}

/// `batch` as copy `k`: ids start with `k` and seven digits (never hex, so
/// never a generated id) and event times are `k` days later.
fn copy_of(batch: &RecordBatch, k: i64) -> RecordBatch {
    let schema = batch.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.name().as_str() {
            "tweet_id" => {
                let ids = arrow_cast::cast(column, &arrow_schema::DataType::Utf8).expect("ids");
                let prefix = format!("k{k:07}");
                let ids: StringArray = ids
                    .as_string::<i32>()
                    .iter()
                    .map(|id| id.map(|id| format!("{prefix}{}", id.get(8..).unwrap_or(""))))
                    .collect();
                arrow_cast::cast(&ids, field.data_type()).expect("ids back")
            }
            "created_at" => {
                let times = column.as_primitive::<TimestampMicrosecondType>();
                let timezone = times.timezone().map(Arc::<str>::from);
                Arc::new(
                    times
                        .unary::<_, TimestampMicrosecondType>(|t| t + k * DAY_MICROS)
                        .with_timezone_opt(timezone),
                ) as ArrayRef
            }
            _ => column.clone(),
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("copy")
}

/// Appends copies `from..to` of `seed` to silver, one commit per five copies.
async fn grow(catalog: &LakeCatalog, seed: &[RecordBatch], from: i64, to: i64) {
    let distinct = common::tweets_spec().silver.distinct.clone();
    let mut k = from;
    while k < to {
        let table = catalog.load(&silver_ident()).await.expect("silver");
        let mut writer = TableWriter::new(
            &table,
            WriterOptions {
                distinct_columns: distinct.clone(),
                ..WriterOptions::default()
            },
        )
        .await
        .expect("writer");
        let end = (k + 5).min(to);
        for copy in k..end {
            for batch in seed {
                let batch = lake_table::writer::conform(&copy_of(batch, copy), writer.schema())
                    .expect("conform");
                writer.write(&batch).await.expect("write");
            }
        }
        let files = writer.close().await.expect("close");
        Append::new()
            .add_files(files)
            .commit(catalog, &table)
            .await
            .expect("append");
        k = end;
    }
}

/// Runs `lake` with `args` against the bench catalog; returns its stderr and
/// wall seconds.
fn lake(uri: &str, key: &str, dir: &std::path::Path, args: &[&str]) -> (String, f64) {
    let started = Instant::now();
    let out = common::lake_env(&mut Command::new(env!("CARGO_BIN_EXE_lake")), uri, key, dir)
        .args(args)
        .output()
        .expect("lake");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "lake {args:?}: {stderr}");
    (stderr, seconds)
}

/// A new 1 M-record bronze batch `b`: day `FIRST_BATCH_DAY + b` from its own
/// seed, with every hundredth record a re-send of a seed-day record. Returns
/// the `tweet_id` of every bronze row written.
async fn append_batch(catalog: &LakeCatalog, b: u64, resends: Vec<Vec<u8>>) -> Vec<Option<String>> {
    let mut generator = day_generator(1000 + b, FIRST_BATCH_DAY + b as i64);
    let mut resends = resends.into_iter();
    let payloads = (0..BATCH).map(move |i| {
        let old = if i % 100 == 50 { resends.next() } else { None };
        old.unwrap_or_else(|| generator.next_record().payload.to_vec())
    });
    let mut keys = Vec::new();
    common::append_tweets(
        catalog,
        payloads,
        b * BATCH + BATCH,
        1_000_000,
        Some(&mut keys),
    )
    .await;
    keys
}

fn main() {
    let sizes = common::millions("LAKE_BENCH_SIZES", "10,50,100");
    let runs: u64 = env_or("LAKE_BENCH_RUNS", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (uri, key) = common::embedded_catalog(&runtime, dir.path());
    let catalog = common::connect(&runtime, &uri, &key);
    let lake = |args: &[&str]| lake(&uri, &key, dir.path(), args);

    // The seed day, through bronze and a real transform run.
    let started = Instant::now();
    let mut seed_keys = Vec::new();
    let mut generator = day_generator(42, 0);
    let payloads = (0..BATCH).map(|_| generator.next_record().payload.to_vec());
    runtime.block_on(common::append_tweets(
        &catalog,
        payloads,
        0,
        1_000_000,
        Some(&mut seed_keys),
    ));
    let mut known: HashSet<String> = seed_keys.into_iter().flatten().collect();
    lake(&["transform", "all", "--dataset", "tweets"]);
    let seed = runtime.block_on(read_silver(&catalog));
    let seed_rows: u64 = seed.iter().map(|b| b.num_rows() as u64).sum();
    assert_eq!(
        seed_rows,
        known.len() as u64,
        "seed silver holds every key once"
    );
    eprintln!(
        "seed: {seed_rows} silver rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut copies = 0i64;
    let mut batch = 0u64;
    let mut results = Vec::new();
    for size in sizes {
        let started = Instant::now();
        let (_, mut silver_rows) = runtime.block_on(rows(&catalog, &silver_ident()));
        let missing = (size * 1_000_000).saturating_sub(silver_rows);
        let more = missing.div_ceil(seed_rows) as i64;
        runtime.block_on(grow(&catalog, &seed, copies + 1, copies + 1 + more));
        copies += more;
        let (stderr, catch_up) = lake(&["transform", "gold", "--dataset", "tweets"]);
        silver_rows = runtime.block_on(rows(&catalog, &silver_ident())).1;
        eprintln!(
            "silver at {silver_rows} rows ({copies} copies); grown and gold caught up in {:.1}s \
             (the gold catch-up {catch_up:.1}s, peak memory {:.0} MB)",
            started.elapsed().as_secs_f64(),
            common::peak_mb(&stderr)
        );

        let mut times = Vec::new();
        let mut memory = Vec::new();
        let mut duplicates = Vec::new();
        // The first size warms up once, untimed, so that no size pays for
        // the first reads of the binary and the seed files.
        let warm_up = u64::from(batch == 0);
        let mut exhaustive = None;
        // After the timed runs, one more with --exhaustive-dedup: what the
        // horizon saves.
        for run in 0..runs + warm_up + 1 {
            let all_keys = run == runs + warm_up;
            // Re-sends of the seed day: each batch its own hundredth of it.
            let mut old = day_generator(42, 0);
            let resends: Vec<Vec<u8>> = (0..BATCH)
                .filter_map(|j| {
                    let payload = old.next_record().payload.to_vec();
                    (j % 100 == batch % 100).then_some(payload)
                })
                .collect();
            let keys = runtime.block_on(append_batch(&catalog, batch, resends));
            let mut in_batch = HashSet::new();
            let (mut old_copies, mut new_copies) = (0u64, 0u64);
            for key in keys.iter().flatten() {
                if known.contains(key) {
                    old_copies += 1;
                } else if !in_batch.insert(key.as_str()) {
                    new_copies += 1;
                }
            }
            let expected = old_copies + new_copies;
            let fresh: Vec<String> = in_batch.into_iter().map(str::to_string).collect();
            known.extend(fresh);
            batch += 1;

            let mut args = vec!["transform", "all", "--dataset", "tweets"];
            if all_keys {
                args.push("--exhaustive-dedup");
            }
            let (stderr, seconds) = lake(&args);
            let peak = common::peak_mb(&stderr);
            let (silver, _) = runtime.block_on(rows(&catalog, &silver_ident()));
            let summary = &silver
                .metadata()
                .current_snapshot()
                .expect("silver snapshot")
                .summary()
                .additional_properties;
            let reported: u64 = summary["lake.transform.duplicates"]
                .parse()
                .expect("duplicates");
            let rows_in: u64 = summary["lake.transform.rows-in"].parse().expect("rows-in");
            assert_eq!(rows_in, keys.len() as u64, "rows in");
            assert_eq!(
                reported, expected,
                "duplicates: {old_copies} re-sent from the seed day and {new_copies} within the batch"
            );
            let label = if all_keys {
                "run with --exhaustive-dedup".to_string()
            } else if run < warm_up {
                "warm-up".to_string()
            } else {
                format!("run {}", run - warm_up)
            };
            eprintln!(
                "{size} M, {label}: {seconds:.2}s, peak memory {peak:.0} MB, \
                 {reported} duplicates ({old_copies} old, {new_copies} within the batch)"
            );
            if all_keys {
                exhaustive = Some((seconds, peak));
            } else if run >= warm_up {
                times.push(seconds);
                memory.push(peak);
                duplicates.push(reported);
            }
        }
        let time = median(times);
        let peak = memory.iter().copied().fold(f64::NAN, f64::max);
        println!(
            "growth/{size}M: silver {silver_rows} rows + 1 M bronze → transform all, median of {runs}: \
             {time:.2}s; peak RSS {peak:.0} MB (max); duplicates removed exactly ({duplicates:?})"
        );
        if let Some((seconds, peak)) = exhaustive {
            println!(
                "growth/{size}M/exhaustive: the same with --exhaustive-dedup, one run: {seconds:.2}s; peak RSS {peak:.0} MB"
            );
        }
        results.push((size, time, peak));
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        let worst = results.iter().map(|r| r.2).fold(f64::NAN, f64::max);
        println!(
            "growth/ratio: time at {} M is {:.2}× time at {} M; peak RSS at most {worst:.0} MB",
            last.0,
            last.1 / first.1,
            first.0
        );
    }
}
