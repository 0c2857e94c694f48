//! `lake generate` as a process: into the Kafka broker of `tests/run` and
//! into files, and failing fast when Kafka is not there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use lake_testkit::{Kafka, run_lake};

const START: &str = "2026-01-01T00:00:00Z";

fn file_lines(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    Ok(std::fs::read(path)?
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[test]
fn two_hundred_thousand_tweets_reach_kafka_and_all_come_back() -> Result<()> {
    let kafka = Kafka::from_env();
    let topic = Kafka::unique("tweets");
    let common = [
        "generate",
        "tweets",
        "--count",
        "200000",
        "--rate",
        "0",
        "--seed",
        "11",
        "--start",
        START,
        "--duplicates",
        "0.01",
        "--malformed",
        "0.001",
        "--late",
        "0.01",
        "-X",
        "compression.type=zstd",
    ];
    // The topic does not exist: generate creates it through the admin API.
    let mut args = common.to_vec();
    args.extend([
        "--brokers",
        kafka.brokers(),
        "--topic",
        &topic,
        "--partitions",
        "8",
    ]);
    let out = run_lake(&args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("generated 200000 tweets"), "{stderr}");
    assert!(stderr.contains("delivered 200000, failed 0"), "{stderr}");
    assert_eq!(kafka.partitions(&topic)?, 8);
    assert_eq!(
        kafka.end_offsets(&topic)?.values().sum::<i64>(),
        200_000,
        "the broker holds each record once: the idempotent producer sent no doubles"
    );

    let consumed = kafka.consume_all(&topic, 200_000, Duration::from_secs(120))?;
    assert_eq!(consumed.len(), 200_000, "every record once, no more");

    // One user's records stay on one partition (key = user id)…
    let mut partition_of: HashMap<&[u8], i32> = HashMap::new();
    for message in &consumed {
        let partition = *partition_of
            .entry(&message.key)
            .or_insert(message.partition);
        assert_eq!(partition, message.partition);
    }
    assert_eq!(
        consumed
            .iter()
            .map(|m| m.partition)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        8
    );
    // …and the records are exactly the ones the same seed writes to a file.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tweets.jsonl");
    let mut args = common.to_vec();
    let path = file.display().to_string();
    args.extend(["--out", &path]);
    assert!(run_lake(&args)?.status.success());
    let mut from_file = file_lines(&file)?;
    let mut from_kafka: Vec<Vec<u8>> = consumed.into_iter().map(|m| m.payload).collect();
    from_file.sort();
    from_kafka.sort();
    assert!(
        from_file == from_kafka,
        "Kafka and the file hold the same records"
    );
    Ok(())
}

#[test]
fn the_same_seed_writes_byte_identical_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, seed: &str, dataset: &str| -> Result<Vec<u8>> {
        let path = dir.path().join(name).display().to_string();
        let out = run_lake(&[
            "generate",
            dataset,
            "--count",
            "20000",
            "--rate",
            "0",
            "--seed",
            seed,
            "--start",
            START,
            "--duplicates",
            "0.01",
            "--malformed",
            "0.01",
            "--late",
            "0.01",
            "--invalid",
            "0.01",
            "--out",
            &path,
        ])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(std::fs::read(&path)?)
    };
    for dataset in ["tweets", "speedtest"] {
        let a = write("a", "5", dataset)?;
        let b = write("b", "5", dataset)?;
        let c = write("c", "6", dataset)?;
        assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 20_000);
        assert!(a == b, "{dataset}: same seed, same bytes");
        assert!(a != c, "{dataset}: another seed, other bytes");
    }
    Ok(())
}

#[test]
fn an_unreachable_broker_fails_fast_with_a_clear_message() -> Result<()> {
    let port = lake_testkit::free_port().to_string();
    let brokers = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = run_lake(&[
        "generate",
        "tweets",
        "--count",
        "10",
        "--brokers",
        &brokers,
        "--connect-timeout",
        "2s",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("no Kafka broker at {brokers}")),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// A continuous `lake generate` into Kafka answers /health and /ready on
/// --health-addr: ready once the broker acknowledged its records.
#[tokio::test]
async fn continuous_generate_is_ready_while_kafka_acknowledges() -> Result<()> {
    let kafka = Kafka::from_env();
    let topic = Kafka::unique("tweets");
    let port = lake_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut generate = lake_testkit::LakeProcess::spawn(
        &[
            "generate",
            "tweets",
            "--rate",
            "200",
            "--brokers",
            kafka.brokers(),
            "--topic",
            &topic,
            "--health-addr",
            &addr,
        ],
        Vec::<(String, String)>::new(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        assert!(generate.running(), "{}", generate.log());
        if let Ok(response) = reqwest::get(format!("http://{addr}/ready")).await {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await?;
            assert_eq!(status == 200, body["ready"] == true, "{body}");
            if body["ready"] == true {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s:\n{}",
            generate.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let checks = body["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["brokers", "deliveries"], "{body}");
    assert!(
        checks[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("failed") && d.starts_with("last record acknowledged")),
        "{body}"
    );
    let health = reqwest::get(format!("http://{addr}/health")).await?;
    assert_eq!(health.status().as_u16(), 200);
    generate.signal("TERM")?;
    assert!(
        generate.wait(Duration::from_secs(30))?.success(),
        "{}",
        generate.log()
    );
    Ok(())
}
