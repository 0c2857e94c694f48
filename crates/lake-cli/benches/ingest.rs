//! `lake ingest` end to end against its ceiling.
//!
//! cargo bench -p lake-cli --bench ingest            (2 M tweets; LAKE_BENCH_TWEETS to change)
//!
//! A topic on librdkafka's mock cluster (in this process, 128 partitions, zstd) is filled
//! with generated tweets. The release `lake ingest --until-caught-up` binary then reads it
//! into an embedded catalog with a local warehouse, commits included; its wall time and
//! peak memory are its own, once per group protocol (classic, then KIP-848's consumer
//! protocol, which skips the broker's 3 s initial rebalance delay). The ceiling is the same bytes checked, decoded and written to
//! Parquet in-process, with no Kafka and no catalog, through the same code.
//!
//! In each run a Python peer reads the same topic into the same catalog and warehouse:
//! confluent-kafka, pyarrow's JSON reader and a pyiceberg append per 100 k records
//! (benches/ingest_python.py, in the venv `tests/run` installs or `LAKE_TEST_PYTHON`). Both
//! run under `/usr/bin/time` for their CPU seconds and peak RSS. LAKE_BENCH_WRAP is a
//! command the lake runs are started under, e.g. `perf record -o /tmp/ingest.perf --`.

use std::time::{Duration, Instant};

use lake_core::config::KafkaConfig;
use lake_kafka as kafka;

mod common;
use common::{env_or, median};

const PARTITIONS: i32 = 128;
const RUNS: usize = 3;

fn main() {
    let tweets: u64 = env_or("LAKE_BENCH_TWEETS", 2_000_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    let (uri, key) = common::embedded_catalog(&runtime, dir.path());

    // The topic, filled.
    let cluster = rdkafka::mocking::MockCluster::new(3).expect("mock cluster");
    cluster
        .create_topic("tweets", PARTITIONS, 1)
        .expect("topic");
    let settings = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..KafkaConfig::default()
    };
    let config = kafka::client_config(&settings, &[("compression.type".into(), "zstd".into())]);
    runtime
        .block_on(kafka::ensure_topic(
            &config,
            "tweets",
            PARTITIONS,
            1,
            Duration::from_secs(10),
        ))
        .expect("topic visible");
    let started = Instant::now();
    let bytes = common::produce_tweets(
        &mut common::tweets_generator(tweets),
        config,
        "tweets",
        tweets,
    );
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("consumer");
        let mut held = Vec::new();
        for partition in 0..PARTITIONS {
            let (low, high) = consumer
                .fetch_watermarks("tweets", partition, Duration::from_secs(10))
                .expect("watermarks");
            held.push(high - low);
        }
        eprintln!(
            "partitions hold {} records (fullest {}, emptiest {})",
            held.iter().sum::<i64>(),
            held.iter().max().unwrap_or(&0),
            held.iter().min().unwrap_or(&0)
        );
    }
    eprintln!(
        "filled the topic: {tweets} tweets, {:.0} MB in {:.1}s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // How fast a bare consumer reads the topic, for reference.
    {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "bench-read")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&["tweets"]).expect("subscribe");
        let mut read = 0u64;
        let mut first: Option<Instant> = None;
        while read < tweets {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
                first.get_or_insert_with(Instant::now);
                read += message.payload().map_or(0, |p| p.len().min(1)) as u64;
            }
        }
        let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        eprintln!(
            "a bare consumer reads it in {seconds:.2}s ({:.0} k records/s)",
            tweets as f64 / 1e3 / seconds
        );
    }

    // End to end: the release binary, a fresh table and group per run, the
    // two group protocols taking turns so that both see the same noise.
    let protocols = ["classic", "consumer"];
    let mut measured: Vec<Measured> = protocols.iter().map(|_| Measured::default()).collect();
    let mut python = Measured::default();
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ingest_python.py");
    for run_number in 0..RUNS {
        for (protocol, measured) in protocols.iter().zip(&mut measured) {
            let table = format!("tweets=bronze.tweets_{protocol}{run_number}");
            let group = format!("bench-{protocol}-{run_number}");
            let started = Instant::now();
            let mut command = common::timed(&common::lake_command());
            let out = common::lake_env(&mut command, &uri, &key, dir.path())
                .args([
                    "ingest",
                    "tweets",
                    "--until-caught-up",
                    "--brokers",
                    &cluster.bootstrap_servers(),
                ])
                .args(["--table", &table, "--group-id", &group])
                .args(["--group-protocol", protocol])
                .args(
                    std::env::var("LAKE_BENCH_ARGS")
                        .unwrap_or_default()
                        .split_whitespace(),
                )
                .output()
                .expect("lake ingest");
            let elapsed = started.elapsed().as_secs_f64();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                stderr.contains(&format!("{tweets} rows committed, 0 rejected")),
                "{stderr}"
            );
            if std::env::var_os("LAKE_BENCH_LOG").is_some() {
                eprintln!("{stderr}");
            }
            let peak_mb: f64 = common::peak_mb(&stderr);
            let waited = common::first_record_wait(&stderr);
            eprintln!(
                "end to end ({protocol}), run {run_number}: {elapsed:.2}s, of which {waited:.2}s before the first record; peak memory {peak_mb:.0} MB"
            );
            measured.steady.push(elapsed - waited);
            measured.e2e.push(elapsed);
            let (cpu, peak) = common::time_report(&stderr);
            measured.memory.push(peak);
            measured.cpu.push(cpu);
        }

        // The Python peer on the same topic, same catalog and warehouse.
        let started = Instant::now();
        let out = common::timed(&std::process::Command::new(common::python()))
            .arg(&peer)
            .args([
                &cluster.bootstrap_servers(),
                "tweets",
                &format!("bench-python-{run_number}"),
                &format!("bronze.tweets_python{run_number}"),
                &tweets.to_string(),
            ])
            .env("LAKE_PY_URI", &uri)
            .env("LAKE_PY_TOKEN", &key)
            .current_dir(dir.path())
            .output()
            .expect(
                "python with confluent-kafka and pyiceberg (run tests/run once to install them)",
            );
        let elapsed = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["rows"].as_u64(), Some(tweets), "the peer's rows");
        let (cpu, peak) = common::time_report(&stderr);
        eprintln!(
            "python peer, run {run_number}: {elapsed:.2}s, {cpu:.1} CPU-s, peak memory {peak:.0} MB, {} files",
            report["files"]
        );
        python.e2e.push(elapsed);
        python.cpu.push(cpu);
        python.memory.push(peak);
    }

    // The ceiling: the same payloads through the same decode and write path.
    let payloads = common::TweetPayloads::generate(tweets);
    let ceiling: Vec<f64> = (0..RUNS)
        .map(|run_number| {
            let elapsed = payloads.ceiling(
                &runtime,
                &dir.path().join(format!("ceiling{run_number}")),
                PARTITIONS,
            );
            eprintln!("ceiling, run {run_number}: {elapsed:.2}s");
            elapsed
        })
        .collect();

    let ceiling = median(ceiling);
    let mb = bytes as f64 / 1e6;
    let classic = (
        median(measured[0].e2e.clone()),
        median(measured[0].cpu.clone()),
        median(measured[0].memory.clone()),
    );
    let peer = (
        median(python.e2e),
        median(python.cpu),
        median(python.memory),
    );
    println!(
        "ingest/python: confluent-kafka + pyarrow + pyiceberg, same topic and catalog, median of {RUNS}: {:.2}s = {:.0} k tweets/s; {:.1} CPU-s; peak RSS {:.0} MB",
        peer.0,
        tweets as f64 / 1e3 / peer.0,
        peer.1,
        peer.2
    );
    println!(
        "ingest/vs-python (classic): lake {:.2}× the throughput at {:.2}× the CPU-seconds ({:.1} s) and {:.2}× the memory",
        peer.0 / classic.0,
        classic.1 / peer.1,
        classic.1,
        classic.2 / peer.2
    );
    for (protocol, measured) in protocols.iter().zip(measured) {
        let e2e = median(measured.e2e);
        let steady = median(measured.steady);
        println!(
            "ingest/end-to-end ({protocol}): {tweets} tweets ({mb:.0} MB), median of {RUNS}: {e2e:.2}s = {:.0} k tweets/s, {:.1} MB/s; {:.1} CPU-s; peak RSS {:.0} MB; {:.0} % of the ceiling",
            tweets as f64 / 1e3 / e2e,
            mb / e2e,
            median(measured.cpu),
            median(measured.memory),
            100.0 * ceiling / e2e,
        );
        println!(
            "ingest/after-first-record ({protocol}): median of {RUNS}: {steady:.2}s = {:.0} k tweets/s, {:.1} MB/s; {:.0} % of the ceiling",
            tweets as f64 / 1e3 / steady,
            mb / steady,
            100.0 * ceiling / steady
        );
    }
    println!(
        "ingest/ceiling: median of {RUNS}: {ceiling:.2}s = {:.0} k tweets/s, {:.1} MB/s",
        tweets as f64 / 1e3 / ceiling,
        mb / ceiling,
    );
}

/// One group protocol's end-to-end runs.
#[derive(Default)]
struct Measured {
    e2e: Vec<f64>,
    /// User + system CPU seconds of the process.
    cpu: Vec<f64>,
    steady: Vec<f64>,
    memory: Vec<f64>,
}
