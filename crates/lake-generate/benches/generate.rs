//! Unthrottled generation throughput: tweets generated only, into a file,
//! and into librdkafka's mock cluster (in-process, 3 brokers).
//!
//! cargo bench -p lake-generate --bench generate
//!
//! Prints the median of several runs for each target, in tweets per second.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lake_core::config::KafkaConfig;
use lake_generate::{Generator, GeneratorConfig, RunLimits, Target, run};
use lake_kafka as kafka;

const TWEETS: u64 = 1_000_000;
const START: i64 = 1_767_225_600_000_000;

fn generator(seed: u64) -> Generator {
    let mut config = GeneratorConfig::new(lake_generate::Stream::Tweets, seed, START);
    config.faults.duplicates = 0.01;
    config.faults.late = 0.01;
    config.faults.malformed = 0.001;
    Generator::new(config)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn report(name: &str, runs: Vec<Duration>, bytes: u64) {
    let count = runs.len();
    let median = median(runs);
    println!(
        "generate/{name}: {TWEETS} tweets, median of {count}: {:.3}s = {:.0} k tweets/s, {:.0} MB/s",
        median.as_secs_f64(),
        TWEETS as f64 / 1e3 / median.as_secs_f64(),
        bytes as f64 / 1e6 / median.as_secs_f64()
    );
}

fn main() {
    let limits = RunLimits {
        count: Some(TWEETS),
        ..RunLimits::default()
    };
    let stop = AtomicBool::new(false);

    // Generation alone: the ceiling for every target.
    let mut total = 0;
    let runs = (0..5)
        .map(|seed| {
            let mut generator = generator(seed);
            let started = Instant::now();
            total = (0..TWEETS)
                .map(|_| generator.next_record().payload.len() as u64)
                .sum();
            started.elapsed()
        })
        .collect();
    report("memory", runs, total);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = Target::File(Some(dir.path().join("tweets.jsonl")));
    let runs = (0..5)
        .map(|seed| {
            let mut generator = generator(seed);
            let started = Instant::now();
            run(&mut generator, &file, &limits, &stop).expect("file run");
            started.elapsed()
        })
        .collect();
    report("file", runs, total);

    let cluster = rdkafka::mocking::MockCluster::new(3).expect("mock cluster");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let runs = (0..3)
        .map(|seed| {
            let topic = format!("bench-{seed}");
            cluster.create_topic(&topic, 12, 1).expect("topic");
            let settings = KafkaConfig {
                brokers: cluster.bootstrap_servers(),
                ..KafkaConfig::default()
            };
            let config = kafka::client_config(&settings, &[]);
            runtime
                .block_on(kafka::ensure_topic(
                    &config,
                    &topic,
                    12,
                    1,
                    Duration::from_secs(10),
                ))
                .expect("topic visible");
            let target = Target::Kafka {
                config,
                topic,
                keyed: true,
            };
            let mut generator = generator(seed);
            let started = Instant::now();
            let summary = run(&mut generator, &target, &limits, &stop).expect("kafka run");
            assert_eq!(summary.delivered, TWEETS, "{summary:?}");
            started.elapsed()
        })
        .collect();
    report("mock-kafka", runs, total);
}
