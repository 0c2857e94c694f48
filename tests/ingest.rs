//! `lake ingest` as a process against the catalog on PostgreSQL + s3s-fs and
//! librdkafka's mock cluster: exact counts and values, crashes, group
//! rebalances, a zombie, hostile input.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use arrow_array::{Array, Int32Array, Int64Array, LargeBinaryArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, KafkaMock, LakeProcess, Services, run_lake, run_lake_env,
    run_lake_ok,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const START: &str = "2026-01-01T00:00:00Z";

struct Harness {
    catalog: CatalogProcess,
    kafka: KafkaMock,
    _files: tempfile::TempDir,
    files: std::path::PathBuf,
}

impl Harness {
    async fn start() -> Result<Self> {
        let services = Services::from_env();
        let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
        let kafka = KafkaMock::start(3)?;
        let files = tempfile::tempdir()?;
        let path = files.path().to_path_buf();
        Ok(Self {
            catalog,
            kafka,
            _files: files,
            files: path,
        })
    }

    /// Produces `count` tweets to `topic` (zstd, so the mock keeps them all)
    /// and returns their payloads, as the same seed writes them to a file.
    fn produce(&self, topic: &str, count: u64, seed: u64, extra: &[&str]) -> Result<Vec<String>> {
        let (count, seed) = (count.to_string(), seed.to_string());
        let bootstrap = self.kafka.bootstrap();
        let mut common = vec![
            "generate", "tweets", "--count", &count, "--rate", "0", "--seed", &seed, "--start",
            START, "--users", "5000",
        ];
        common.extend(extra);
        let mut to_kafka = common.clone();
        to_kafka.extend([
            "--topic",
            topic,
            "--brokers",
            &bootstrap,
            "-X",
            "compression.type=zstd",
        ]);
        let out = run_lake(&to_kafka)?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.generate_file(&common, &format!("{topic}-{seed}"))
    }

    /// The tweets `seed` generates, from a file only.
    fn lines(&self, count: u64, seed: u64) -> Result<Vec<String>> {
        let (count, seed) = (count.to_string(), seed.to_string());
        let common = vec![
            "generate", "tweets", "--count", &count, "--rate", "0", "--seed", &seed, "--start",
            START, "--users", "5000",
        ];
        self.generate_file(&common, &format!("lines-{seed}"))
    }

    fn generate_file(&self, common: &[&str], name: &str) -> Result<Vec<String>> {
        let file = self.files.join(format!("{name}.jsonl"));
        let path = file.display().to_string();
        let mut to_file = common.to_vec();
        to_file.extend(["--out", &path]);
        let out = run_lake(&to_file)?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(std::fs::read_to_string(&file)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn env(&self) -> Vec<(String, String)> {
        self.catalog.lake_env(Role::Writer)
    }

    fn ingest_args<'a>(bootstrap: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "ingest",
            "tweets",
            "--brokers",
            bootstrap,
            "--group-id",
            "bronze",
        ];
        args.extend(extra);
        args
    }

    async fn table(&self, name: &str) -> Result<Table> {
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        Ok(catalog
            .load_table(&TableIdent::new(
                NamespaceIdent::new("bronze".into()),
                name.into(),
            ))
            .await?)
    }
}

async fn scan(table: &Table, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    Ok(table
        .scan()
        .select(columns.iter().copied())
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?)
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .unwrap_or_else(|| panic!("string column {name}"))
}

/// Every bronze row's (partition, offset), checked unique.
async fn coordinates(table: &Table) -> Result<BTreeMap<i32, Vec<i64>>> {
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for batch in scan(table, &["_kafka_partition", "_kafka_offset"]).await? {
        let partitions = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("int");
        let offsets = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("long");
        for i in 0..batch.num_rows() {
            by_partition
                .entry(partitions.value(i))
                .or_default()
                .push(offsets.value(i));
        }
    }
    for offsets in by_partition.values_mut() {
        offsets.sort_unstable();
        let before = offsets.len();
        offsets.dedup();
        assert_eq!(before, offsets.len(), "a Kafka record landed twice");
    }
    Ok(by_partition)
}

/// Asserts bronze holds each of `expected` payloads exactly once, with the
/// typed columns equal to the JSON they came from.
async fn assert_bronze_equals(table: &Table, expected: &[String]) -> Result<()> {
    let mut raw: Vec<String> = Vec::with_capacity(expected.len());
    for batch in scan(table, &["_raw", "tweet_id", "lang", "user"]).await? {
        let raws = strings(&batch, "_raw");
        let ids = strings(&batch, "tweet_id");
        let langs = strings(&batch, "lang");
        for i in 0..batch.num_rows() {
            let json: serde_json::Value = serde_json::from_str(raws.value(i))?;
            assert_eq!(json["tweet_id"], ids.value(i));
            assert_eq!(json["lang"], langs.value(i));
            raw.push(raws.value(i).to_string());
        }
    }
    let ids: HashSet<String> = raw
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).map(|v| v["tweet_id"].to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), raw.len(), "tweet ids are unique");
    let mut expected = expected.to_vec();
    raw.sort();
    expected.sort();
    assert_eq!(raw.len(), expected.len(), "row count");
    assert!(raw == expected, "bronze holds exactly the produced records");
    Ok(())
}

#[tokio::test]
async fn a_hundred_thousand_tweets_land_exactly_once() -> Result<()> {
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", 3)?;
    let produced = harness.produce("tweets", 100_000, 1, &[])?;
    assert_eq!(produced.len(), 100_000);

    let bootstrap = harness.kafka.bootstrap();
    let args = Harness::ingest_args(
        &bootstrap,
        &["--until-caught-up", "--commit-records", "30000"],
    );
    let out = run_lake_env(&args, harness.env())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Reads may exceed 100 000 when a rebalance discards an epoch; what
    // counts is what was committed.
    assert!(
        stderr.contains("100000 rows committed, 0 rejected"),
        "{stderr}"
    );

    let bronze = harness.table("tweets_raw").await?;
    assert_bronze_equals(&bronze, &produced).await?;
    let by_partition = coordinates(&bronze).await?;
    assert_eq!(by_partition.values().map(Vec::len).sum::<usize>(), 100_000);
    // The snapshot records where each partition ends.
    let offsets = lake_table::files::summary_lookup(&bronze, "lake.kafka.tweets").expect("offsets");
    let offsets: BTreeMap<String, i64> = serde_json::from_str(&offsets.1)?;
    for (partition, seen) in &by_partition {
        assert_eq!(
            offsets[&partition.to_string()],
            seen.last().expect("rows") + 1
        );
    }
    // A second run finds nothing new and commits nothing.
    let snapshots = bronze.metadata().snapshots().count();
    run_lake_ok(&args, harness.env())?;
    let again = harness.table("tweets_raw").await?;
    assert_eq!(again.metadata().snapshots().count(), snapshots);
    Ok(())
}

/// Asserts every partition holds each offset from 0 up to its end exactly
/// once, and returns the total.
async fn assert_complete(
    table: &Table,
    partitions: i32,
    per_partition_end: &BTreeMap<i32, i64>,
) -> Result<usize> {
    let by_partition = coordinates(table).await?;
    for partition in 0..partitions {
        let offsets = by_partition.get(&partition).cloned().unwrap_or_default();
        let end = per_partition_end[&partition];
        let present: HashSet<i64> = offsets.iter().copied().collect();
        let mut missing = Vec::new();
        let mut o = 0;
        while o < end {
            if present.contains(&o) {
                o += 1;
                continue;
            }
            let from = o;
            while o < end && !present.contains(&o) {
                o += 1;
            }
            missing.push(format!("{from}..{o}"));
        }
        assert!(
            missing.is_empty(),
            "partition {partition} lacks offsets {missing:?} (of 0..{end})"
        );
        assert_eq!(
            offsets.len() as i64,
            end,
            "partition {partition}: no offsets past its end"
        );
    }
    Ok(by_partition.values().map(Vec::len).sum())
}

/// End offset of every partition of `topic`.
fn ends(bootstrap: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    (0..partitions)
        .map(|p| {
            Ok((
                p,
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1,
            ))
        })
        .collect()
}

/// A small deterministic generator for kill moments.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, min: u64, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        min + self.0 % (max - min)
    }
}

#[tokio::test]
async fn killing_ingest_a_dozen_times_loses_and_doubles_nothing() -> Result<()> {
    const RECORDS: u64 = 500_000;
    const PARTITIONS: i32 = 40;
    let harness = Harness::start().await?;
    // The mock drops a partition's oldest records past 5 MiB (about 32 000
    // zstd tweets); 40 partitions and 50 000 users keep each far below.
    harness.kafka.create_topic("tweets", PARTITIONS)?;
    let bootstrap = harness.kafka.bootstrap();
    let count = RECORDS.to_string();
    let out = run_lake(&[
        "generate",
        "tweets",
        "--count",
        &count,
        "--rate",
        "0",
        "--seed",
        "2",
        "--start",
        START,
        "--users",
        "50000",
        "--brokers",
        &bootstrap,
        "-X",
        "compression.type=zstd",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = ends(&bootstrap, "tweets", PARTITIONS)?;
    assert_eq!(end.values().sum::<i64>(), RECORDS as i64);
    let fullest = end.values().max().copied().unwrap_or_default();
    assert!(
        fullest < 26_000,
        "a partition holds {fullest}: the mock would drop some"
    );

    // A short session timeout lets the group hand a killed process's
    // partitions to its successor in seconds.
    let args = Harness::ingest_args(
        &bootstrap,
        &[
            "--commit-records",
            "20000",
            "--commit-interval",
            "1s",
            "-X",
            "session.timeout.ms=3000",
            "-X",
            "heartbeat.interval.ms=500",
        ],
    );
    let mut moments = Moments(0x5eed_1234_abcd);
    let mut kills = 0;
    for _ in 0..10 {
        let mut process = LakeProcess::spawn(&args, harness.env())?;
        process.wait_for_log("assigned", Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(moments.next_millis(200, 2500)));
        assert!(process.running(), "ingest ended early:\n{}", process.log());
        process.kill()?;
        kills += 1;
    }
    assert!(kills >= 10);
    let bronze = harness.table("tweets_raw").await?;
    let before = coordinates(&bronze)
        .await?
        .values()
        .map(Vec::len)
        .sum::<usize>();
    assert!(
        before > 0 && before < RECORDS as usize,
        "kills happened mid-run ({before} rows)"
    );

    let mut finish = args.clone();
    finish.push("--until-caught-up");
    run_lake_ok(&finish, harness.env())?;
    let bronze = harness.table("tweets_raw").await?;
    let total = assert_complete(&bronze, PARTITIONS, &end).await?;
    assert_eq!(total, RECORDS as usize);
    let ids: HashSet<String> = scan(&bronze, &["tweet_id"])
        .await?
        .iter()
        .flat_map(|b| {
            let ids = strings(b, "tweet_id");
            (0..b.num_rows())
                .map(|i| ids.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids.len(), RECORDS as usize, "no tweet twice");
    Ok(())
}

/// SIGTERM, and the process must commit what it holds and exit 0.
fn stop(process: &mut LakeProcess) -> Result<()> {
    process.signal("TERM")?;
    let status = process.wait(Duration::from_secs(40))?;
    assert!(status.success(), "{}", process.log());
    Ok(())
}

/// Polls the bronze row count until it reaches `want` or `timeout` passes.
async fn wait_for_rows(harness: &Harness, want: usize, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = match harness.table("tweets_raw").await {
            Ok(table) => coordinates(&table).await?.values().map(Vec::len).sum(),
            Err(_) => 0,
        };
        if rows >= want || Instant::now() >= deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn two_processes_in_one_group_survive_a_kill_and_a_zombie() -> Result<()> {
    const RECORDS: u64 = 90_000;
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", 3)?;
    harness.produce("tweets", RECORDS, 3, &[])?;
    let bootstrap = harness.kafka.bootstrap();
    let end = ends(&bootstrap, "tweets", 3)?;
    let args = Harness::ingest_args(
        &bootstrap,
        &[
            "--commit-interval",
            "1s",
            "--commit-records",
            "5000",
            "-X",
            "session.timeout.ms=6000",
        ],
    );
    let env = harness.env();

    let mut a = LakeProcess::spawn(&args, env.clone())?;
    let mut b = LakeProcess::spawn(&args, env.clone())?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A dies mid-run; B takes its partitions after the session times out.
    a.kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut a = LakeProcess::spawn(&args, env.clone())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // B freezes with an uncommitted epoch: the group moves on without it,
    // then it wakes up believing it still owns its partitions.
    b.signal("STOP")?;
    tokio::time::sleep(Duration::from_secs(9)).await;
    b.signal("CONT")?;

    let rows = wait_for_rows(&harness, RECORDS as usize, Duration::from_secs(120)).await?;
    assert_eq!(rows, RECORDS as usize, "A:\n{}\nB:\n{}", a.log(), b.log());
    for process in [&mut a, &mut b] {
        stop(process)?;
    }
    let bronze = harness.table("tweets_raw").await?;
    assert_eq!(assert_complete(&bronze, 3, &end).await?, RECORDS as usize);
    Ok(())
}

/// KIP-848's consumer protocol moves a few partitions at a time: a member
/// keeps reading the partitions it keeps while others leave and join.
#[tokio::test]
async fn the_consumer_group_protocol_moves_partitions_without_loss_or_doubles() -> Result<()> {
    const FIRST: u64 = 30_000;
    const MORE: u64 = 120_000;
    const PARTITIONS: i32 = 6;
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", PARTITIONS)?;
    harness.produce("tweets", FIRST, 7, &[])?;
    let bootstrap = harness.kafka.bootstrap();
    // Epochs end at 50 000 records or at shutdown: A's first one, holding
    // all of the first 30 000, is still open when B arrives.
    let args = Harness::ingest_args(
        &bootstrap,
        &[
            "--group-protocol",
            "consumer",
            "--commit-interval",
            "10m",
            "--commit-records",
            "50000",
        ],
    );
    let env = harness.env();

    let mut a = LakeProcess::spawn(&args, env.clone())?;
    a.wait_for_log("assigned", Duration::from_secs(60))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // B joins: A hands over some partitions, drops its epoch and reads the
    // partitions it keeps again from the table.
    let mut b = LakeProcess::spawn(&args, env.clone())?;
    b.wait_for_log("assigned", Duration::from_secs(60))?;
    let a_log = a.log();
    let dropped = a_log
        .lines()
        .find(|line| line.contains("partitions revoked"))
        .and_then(|line| line.split("records=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        dropped.is_some_and(|n| n > 0) && a.running(),
        "A dropped an epoch when it gave up partitions, and went on:\n{a_log}"
    );
    harness.produce("tweets", MORE, 8, &[])?;
    // A leaves: B takes its partitions on top of its own, mid-epoch; A
    // comes back and takes some again.
    stop(&mut a)?;
    let mut a = LakeProcess::spawn(&args, env.clone())?;
    a.wait_for_log("assigned", Duration::from_secs(60))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for process in [&mut a, &mut b] {
        stop(process)?;
    }
    // Whatever is left, then every offset exactly once.
    let mut finish = args.clone();
    finish.push("--until-caught-up");
    run_lake_ok(&finish, env)?;
    let end = ends(&bootstrap, "tweets", PARTITIONS)?;
    let bronze = harness.table("tweets_raw").await?;
    assert_eq!(
        assert_complete(&bronze, PARTITIONS, &end).await?,
        (FIRST + MORE) as usize
    );
    Ok(())
}

#[tokio::test]
async fn hostile_records_go_to_the_dead_letter_table_with_their_reason() -> Result<()> {
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", 1)?;
    let good = harness.lines(50, 4)?;
    let huge = format!(
        r#"{{"tweet_id":"x","pad":"{}"}}"#,
        "a".repeat(5 * 1024 * 1024)
    );
    let deep = format!(
        r#"{{"tweet_id":"deep","text":{}"x"{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let wrong_type = good[0].replace(r#""like_count":"#, r#""like_count":"many","was":"#);
    let no_id = good[1].replacen(r#""tweet_id":"#, r#""not_the_id":"#, 1);
    let truncated = &good[2][..good[2].len() / 2];
    let hostile: Vec<(Option<Vec<u8>>, &str)> = vec![
        (Some(truncated.as_bytes().to_vec()), "invalid JSON"),
        (Some(wrong_type.clone().into_bytes()), "like_count"),
        (Some(huge.clone().into_bytes()), "exceeds"),
        (
            Some(b"{\"tweet_id\":\"\xff\xfe\"}".to_vec()),
            "invalid UTF-8",
        ),
        (Some(Vec::new()), "empty record"),
        (None, "empty record"),
        (
            Some(b"{\"tweet_id\":\"a\x00b\"}".to_vec()),
            "control character",
        ),
        (Some(b"\x00\x00\x00\x00".to_vec()), "not a JSON object"),
        (Some(deep.clone().into_bytes()), "nested deeper than"),
        (Some(no_id.clone().into_bytes()), "tweet_id"),
        (Some(b"[1,2,3]".to_vec()), "not a JSON object"),
        (Some(b"{} {}".to_vec()), "invalid JSON"),
    ];
    // Good and bad interleaved on one partition, so offsets tell them apart.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", harness.kafka.bootstrap())
        .set("message.max.bytes", "20000000")
        .set("compression.type", "zstd")
        .create()?;
    let mut expected_rejects = BTreeMap::new();
    let mut expected_good = Vec::new();
    let mut offset = 0i64;
    for (i, line) in good.iter().enumerate() {
        producer
            .send(
                BaseRecord::<str, [u8]>::to("tweets")
                    .key("k")
                    .payload(line.as_bytes()),
            )
            .map_err(|(e, _)| e)?;
        expected_good.push(line.clone());
        offset += 1;
        if let Some((payload, reason)) = hostile.get(i) {
            let record = BaseRecord::<str, [u8]>::to("tweets").key("k");
            let record = match payload {
                Some(bytes) => record.payload(bytes.as_slice()),
                None => record,
            };
            producer.send(record).map_err(|(e, _)| e)?;
            expected_rejects.insert(offset, *reason);
            offset += 1;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    assert_eq!(expected_rejects.len(), hostile.len());

    let bootstrap = harness.kafka.bootstrap();
    let args = Harness::ingest_args(&bootstrap, &["--until-caught-up"]);
    let out = run_lake_env(&args, harness.env())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} rows committed, {} rejected",
            good.len(),
            hostile.len()
        )),
        "{stderr}"
    );

    let bronze = harness.table("tweets_raw").await?;
    assert_bronze_equals(&bronze, &expected_good).await?;
    let rejects = harness.table("tweets_raw_rejects").await?;
    let mut seen = BTreeMap::new();
    for batch in scan(&rejects, &["_kafka_offset", "error", "_raw"]).await? {
        let offsets = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("long");
        let errors = strings(&batch, "error");
        let raws = batch
            .column(2)
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .expect("binary");
        for i in 0..batch.num_rows() {
            seen.insert(
                offsets.value(i),
                (errors.value(i).to_string(), raws.value(i).len()),
            );
        }
    }
    assert_eq!(seen.len(), expected_rejects.len());
    for (offset, reason) in &expected_rejects {
        let (error, _) = &seen[offset];
        assert!(
            error.contains(reason),
            "offset {offset}: `{error}` should say `{reason}`"
        );
    }
    // The raw bytes are kept whole, even the 5 MB one.
    assert!(seen.values().any(|(_, len)| *len == huge.len()));
    // Both tables moved in one atomic transaction: one snapshot each.
    assert_eq!(bronze.metadata().snapshots().count(), 1);
    assert_eq!(rejects.metadata().snapshots().count(), 1);
    Ok(())
}

#[tokio::test]
async fn until_caught_up_takes_exactly_what_was_there_at_start() -> Result<()> {
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", 3)?;
    harness.produce("tweets", 60_000, 5, &[])?;
    let bootstrap = harness.kafka.bootstrap();
    let at_start = ends(&bootstrap, "tweets", 3)?;
    let args = Harness::ingest_args(
        &bootstrap,
        &["--until-caught-up", "--commit-records", "10000"],
    );
    let mut ingest = LakeProcess::spawn(&args, harness.env())?;
    // Ingest reads the end offsets before joining the group; from its
    // assignment on, whatever arrives is past them.
    ingest.wait_for_log("assigned", Duration::from_secs(60))?;
    let mut more = std::process::Command::new(lake_testkit::lake_bin())
        .args([
            "generate",
            "tweets",
            "--count",
            "50000",
            "--rate",
            "5000",
            "--seed",
            "6",
            "--brokers",
            &bootstrap,
            "-X",
            "compression.type=zstd",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let status = ingest.wait(Duration::from_secs(120))?;
    let _ = more.kill();
    let _ = more.wait();
    assert!(status.success(), "{}", ingest.log());
    assert!(ingest.log().contains("(caught up)"), "{}", ingest.log());
    let bronze = harness.table("tweets_raw").await?;
    assert_eq!(assert_complete(&bronze, 3, &at_start).await?, 60_000);
    Ok(())
}

#[tokio::test]
async fn evolve_schema_adds_new_fields_as_columns() -> Result<()> {
    let harness = Harness::start().await?;
    harness.kafka.create_topic("tweets", 1)?;
    let lines = harness.lines(200, 7)?;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", harness.kafka.bootstrap())
        .create()?;
    // The second half carries a field the table does not have yet.
    for (i, line) in lines.iter().enumerate() {
        let payload = if i >= 100 {
            line.replacen('{', &format!(r#"{{"client":"app-{}","#, i % 3), 1)
        } else {
            line.clone()
        };
        producer
            .send(
                BaseRecord::<str, str>::to("tweets")
                    .key("k")
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let bootstrap = harness.kafka.bootstrap();
    let args = Harness::ingest_args(&bootstrap, &["--until-caught-up", "--evolve-schema"]);
    let out = run_lake_env(&args, harness.env())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("200 rows committed, 0 rejected"),
        "{stderr}"
    );

    let bronze = harness.table("tweets_raw").await?;
    let client = bronze
        .metadata()
        .current_schema()
        .field_by_name("client")
        .expect("a client column")
        .clone();
    assert!(!client.required);
    let mut values: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for batch in scan(&bronze, &["_kafka_offset", "client"]).await? {
        let offsets = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("long");
        let clients = strings(&batch, "client");
        for i in 0..batch.num_rows() {
            values.insert(
                offsets.value(i),
                clients.is_valid(i).then(|| clients.value(i).to_string()),
            );
        }
    }
    assert_eq!(values.len(), 200);
    for (offset, value) in values {
        let want = (offset >= 100).then(|| format!("app-{}", offset % 3));
        assert_eq!(value, want, "offset {offset}");
    }
    Ok(())
}
