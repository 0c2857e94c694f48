//! `lake run` end to end on the real stack: how long a record takes from Kafka to gold.
//!
//! tests/run --bench freshness    (LAKE_BENCH_RATES=1000,10000; LAKE_BENCH_SECONDS=600)
//!
//! Needs the services `tests/run` starts (a Kafka 4 broker, PostgreSQL, s3s-fs). For each
//! rate, a 16-partition topic on the broker and a catalog process of its own (PostgreSQL, an
//! S3 warehouse on s3s-fs); the release `lake run tweets` (its defaults: 5 s commits,
//! compaction to 128 MiB every minute) starts first, then `lake generate tweets --rate R` for
//! the duration. Once the generator is done and gold has reached the topic's end, the run's
//! CPU seconds and peak RSS are read from /proc and it is stopped with SIGTERM.
//!
//! A record is visible in gold at the commit time of the first
//! `gold.popular_hashtags_by_hour` snapshot (the "Real-time Trends" table) whose chain holds
//! it: the silver snapshot it consumed, the bronze snapshot that one consumed, and that
//! snapshot's Kafka offsets. Its latency is that time minus its Kafka timestamp (set by the
//! producing client when it sent the record). The bench prints p50/p95/p99 over every record,
//! the files per partition of bronze, silver and gold at the end, and, for contrast, the same
//! topic through the batch path (`lake ingest --until-caught-up`, then `lake transform all`):
//! its measured duration, and what a record waits under Airflow's 15-minute schedule (the
//! time to the next run, uniform over the period, plus that duration).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int32Array, Int64Array, TimestampMicrosecondArray};
use futures::TryStreamExt;
use iceberg::TableIdent;
use iceberg::table::Table;
use lake_core::config::Role;
use lake_table::files::LiveFile;
use lake_testkit::{CatalogProcess, CatalogSpec, Kafka, Services};

mod common;
use common::env_or;

const PARTITIONS: i32 = 16;
const GOLD: &str = "gold.popular_hashtags_by_hour";
const SILVER: &str = "silver.tweets_clean";
const BRONZE: &str = "bronze.tweets_raw";
/// Airflow's schedule in the seed: the batch path runs every 15 minutes.
const BATCH_EVERY: Duration = Duration::from_secs(15 * 60);

fn ident(name: &str) -> TableIdent {
    TableIdent::from_strs(name.split('.')).expect("table name")
}

async fn catalog_for(services: &Services, prefix: &str) -> CatalogProcess {
    let mut spec = CatalogSpec::postgres_s3(services)
        .await
        .expect("catalog spec");
    // A short prefix: s3s-fs names a multipart upload's metadata file after
    // the object's whole key (see peers.rs).
    spec.warehouse = Some(format!(
        "s3://{}/{}",
        services.s3_bucket,
        &Kafka::unique(prefix)[..10]
    ));
    CatalogProcess::start(spec).await.expect("catalog process")
}

/// The newest value of `key` along the ancestry of `snapshot` (compaction's
/// replace snapshots carry none of lake's keys).
fn lookup_from(table: &Table, snapshot: i64, key: &str) -> Option<String> {
    let metadata = table.metadata();
    let mut at = metadata.snapshot_by_id(snapshot);
    while let Some(snap) = at {
        if let Some(value) = snap.summary().additional_properties.get(key) {
            return Some(value.clone());
        }
        at = snap
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    None
}

/// The Kafka offsets (partition → next offset) each gold snapshot has
/// reached through silver and bronze, with its commit time, oldest first.
fn reached(
    gold: &Table,
    silver: &Table,
    bronze: &Table,
    topic: &str,
) -> Vec<(i64, BTreeMap<i32, i64>)> {
    let silver_key = lake_table::files::source_key(silver.identifier());
    let bronze_key = lake_table::files::source_key(bronze.identifier());
    let offsets_key = lake_table::files::offsets_key(topic);
    let mut points: Vec<(i64, BTreeMap<i32, i64>)> = gold
        .metadata()
        .snapshots()
        .filter_map(|snapshot| {
            let summary = &snapshot.summary().additional_properties;
            let s: i64 = summary.get(&silver_key)?.parse().ok()?;
            let b: i64 = lookup_from(silver, s, &bronze_key)?.parse().ok()?;
            let json = lookup_from(bronze, b, &offsets_key)?;
            let offsets = lake_ingest::bronze::parse_offsets(&json).ok()?;
            Some((snapshot.timestamp_ms(), offsets.into_iter().collect()))
        })
        .collect();
    points.sort_by_key(|(at, _)| *at);
    points
}

/// Every bronze record's (partition, offset, Kafka timestamp in ms).
async fn records(bronze: &Table) -> Vec<(i32, i64, i64)> {
    let batches: Vec<arrow_array::RecordBatch> = bronze
        .scan()
        .select(["_kafka_partition", "_kafka_offset", "_kafka_timestamp"])
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("arrow")
        .try_collect()
        .await
        .expect("batches");
    let mut out = Vec::new();
    for batch in &batches {
        let column = |name: &str| batch.column_by_name(name).expect("column").clone();
        let partitions = column("_kafka_partition");
        let offsets = column("_kafka_offset");
        let times = column("_kafka_timestamp");
        let partitions = partitions
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("int");
        let offsets = offsets.as_any().downcast_ref::<Int64Array>().expect("long");
        let times = times
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("timestamp");
        for i in 0..batch.num_rows() {
            out.push((partitions.value(i), offsets.value(i), times.value(i) / 1000));
        }
    }
    out
}

/// Each record's latency (ms) to the first point that holds it.
fn latencies(records: &[(i32, i64, i64)], points: &[(i64, BTreeMap<i32, i64>)]) -> Vec<f64> {
    let mut by_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for (at, offsets) in points {
        for (partition, next) in offsets {
            by_partition
                .entry(*partition)
                .or_default()
                .push((*next, *at));
        }
    }
    records
        .iter()
        .map(|(partition, offset, produced)| {
            let visible = by_partition
                .get(partition)
                .and_then(|steps| steps.iter().find(|(next, _)| next > offset))
                .map(|(_, at)| *at)
                .expect("every record reached gold");
            (visible - produced) as f64
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Most and mean live files per partition.
fn files_per_partition(files: &[LiveFile]) -> (usize, f64) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for file in files {
        *counts
            .entry(format!("{:?}", file.data_file.partition()))
            .or_default() += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    let mean = files.len() as f64 / counts.len().max(1) as f64;
    (most, mean)
}

/// CPU seconds (user + system) and peak RSS (MB) of a running process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(") ").expect("stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    // USER_HZ is 100 on Linux.
    (ticks / 100.0, hwm_kb * 1024.0 / 1e6)
}

/// A child killed when dropped, so that a failing bench leaves no `lake run`
/// behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Figures {
    rate: u64,
    records: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    cpu: f64,
    wall: f64,
    peak_mb: f64,
    files: [(usize, f64); 3],
    batch_seconds: f64,
}

fn lake(catalog: &CatalogProcess) -> Command {
    let mut command = common::lake_command();
    command.envs(catalog.lake_env(Role::Writer));
    command
}

fn one_rate(
    runtime: &tokio::runtime::Runtime,
    services: &Services,
    kafka: &Kafka,
    rate: u64,
    seconds: u64,
) -> Figures {
    let topic = Kafka::unique("fresh");
    runtime
        .block_on(kafka.create_topic(&topic, PARTITIONS))
        .expect("topic");
    let catalog = runtime.block_on(catalog_for(services, "f"));
    let log = tempfile::NamedTempFile::new().expect("log file");
    let route = format!("tweets={topic}");
    let started = Instant::now();
    let mut run = Guard(
        lake(&catalog)
            .args([
                "run",
                "tweets",
                "--brokers",
                kafka.brokers(),
                "--topic",
                &route,
            ])
            .args(["--group-id", &Kafka::unique("run")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("lake run"),
    );
    let count = (rate * seconds).to_string();
    let generated = lake(&catalog)
        .args([
            "generate",
            "tweets",
            "--brokers",
            kafka.brokers(),
            "--topic",
            &topic,
        ])
        .args(["--rate", &rate.to_string(), "--count", &count])
        .stdout(Stdio::null())
        .output()
        .expect("lake generate");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let end: BTreeMap<i32, i64> = kafka.end_offsets(&topic).expect("end offsets");
    let total: i64 = end.values().sum();
    eprintln!("  generated {total} tweets at {rate}/s; waiting for gold to reach them");

    // Until gold has reached every record of the topic.
    let deadline = Instant::now() + Duration::from_secs(600);
    let lake_catalog = runtime
        .block_on(catalog.lake_catalog(Role::Reader))
        .expect("catalog");
    let tables = loop {
        let tables = runtime.block_on(async {
            let gold = lake_catalog.load(&ident(GOLD)).await.ok()?;
            let silver = lake_catalog.load(&ident(SILVER)).await.ok()?;
            let bronze = lake_catalog.load(&ident(BRONZE)).await.ok()?;
            Some((gold, silver, bronze))
        });
        if let Some((gold, silver, bronze)) = &tables
            && reached(gold, silver, bronze, &topic)
                .last()
                .is_some_and(|(_, offsets)| {
                    end.iter()
                        .all(|(p, o)| offsets.get(p).copied().unwrap_or(0) >= *o)
                })
        {
            break tables.expect("tables");
        }
        assert!(
            Instant::now() < deadline,
            "gold did not reach the topic's end within 10 minutes; lake run's log:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let wall = started.elapsed().as_secs_f64();
    let (cpu, peak_mb) = usage(run.0.id());
    Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .expect("kill");
    let status = run.0.wait().expect("lake run exits");
    let run_log = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(status.success(), "lake run: {run_log}");
    // Its summary: commits, rounds, compaction passes.
    if let Some(line) = run_log.lines().find(|l| l.starts_with("ran ")) {
        eprintln!("  {line}");
    }

    let (gold, silver, bronze) = tables;
    let points = reached(&gold, &silver, &bronze, &topic);
    let records = runtime.block_on(records(&bronze));
    assert_eq!(
        records.len() as i64,
        total,
        "bronze holds every record once"
    );
    let mut latency = latencies(&records, &points);
    latency.sort_by(f64::total_cmp);
    let files = runtime.block_on(async {
        let mut out = [(0, 0.0); 3];
        for (i, name) in [BRONZE, SILVER, GOLD].iter().enumerate() {
            let table = lake_catalog.load(&ident(name)).await.expect("table");
            let live = lake_table::files::live_files(&table, None)
                .await
                .expect("files");
            out[i] = files_per_partition(&live);
        }
        out
    });

    // The batch path on the same topic, into a catalog of its own.
    let batch = runtime.block_on(catalog_for(services, "b"));
    let started = Instant::now();
    for args in [
        vec![
            "ingest",
            "tweets",
            "--until-caught-up",
            "--brokers",
            kafka.brokers(),
            "--topic",
            &route,
        ],
        vec!["transform", "all"],
    ] {
        let group = Kafka::unique("batch");
        let mut command = lake(&batch);
        command.args(&args);
        if args[0] == "ingest" {
            command.args(["--group-id", &group]);
        }
        let out = command
            .env("RUST_LOG", "warn")
            .output()
            .expect("batch step");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let batch_seconds = started.elapsed().as_secs_f64();

    Figures {
        rate,
        records: records.len(),
        p50: percentile(&latency, 0.50) / 1000.0,
        p95: percentile(&latency, 0.95) / 1000.0,
        p99: percentile(&latency, 0.99) / 1000.0,
        max: latency.last().copied().unwrap_or(f64::NAN) / 1000.0,
        cpu,
        wall,
        peak_mb,
        files,
        batch_seconds,
    }
}

fn main() {
    let rates: Vec<u64> = std::env::var("LAKE_BENCH_RATES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|r| r.trim().parse().expect("LAKE_BENCH_RATES: numbers"))
        .collect();
    let seconds: u64 = env_or("LAKE_BENCH_SECONDS", 600);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let services = Services::from_env();
    let kafka = Kafka::from_env();
    let mut all = Vec::new();
    for rate in rates {
        eprintln!("lake run at {rate} tweets/s for {seconds} s");
        let figures = one_rate(&runtime, &services, &kafka, rate, seconds);
        eprintln!(
            "  p50 {:.1}s p95 {:.1}s p99 {:.1}s (max {:.1}s) over {} records",
            figures.p50, figures.p95, figures.p99, figures.max, figures.records
        );
        all.push(figures);
    }
    println!(
        "\n| tweets/s | records | record → gold p50 | p95 | p99 | max | lake run CPU-s (share of 2 cores) | peak RSS | files per partition, most (mean): bronze / silver / gold | batch path once | batch every 15 min: p50 / p95 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        let period = BATCH_EVERY.as_secs_f64();
        let batch = |q: f64| (q * period + f.batch_seconds) / 60.0;
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.0} s ({:.0} %) | {:.0} MB | {} ({:.1}) / {} ({:.1}) / {} ({:.1}) | {:.1} s | {:.1} / {:.1} / {:.1} min |",
            f.rate,
            f.records,
            f.p50,
            f.p95,
            f.p99,
            f.max,
            f.cpu,
            100.0 * f.cpu / f.wall / 2.0,
            f.peak_mb,
            f.files[0].0,
            f.files[0].1,
            f.files[1].0,
            f.files[1].1,
            f.files[2].0,
            f.files[2].1,
            f.batch_seconds,
            batch(0.5),
            batch(0.95),
            batch(0.99),
        );
    }
}
