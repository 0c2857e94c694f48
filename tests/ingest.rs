//! `lake ingest` as a process against the catalog on PostgreSQL + s3s-fs and
//! the Kafka broker of `tests/run`: exact counts and values, crashes, group
//! rebalances, a zombie, hostile input — each under both group protocols,
//! `classic` and KIP-848's `consumer`, which the broker runs for real.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use arrow_array::{Array, Int32Array, Int64Array, LargeBinaryArray, RecordBatch, StringArray};
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, Kafka, LakeProcess, Services, run_lake_env, run_lake_ok,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::scan;

const START: &str = "2026-01-01T00:00:00Z";

/// Runs a scenario once per group protocol, as two tests:
/// `<scenario>::classic` and `<scenario>::consumer`.
macro_rules! with_each_group_protocol {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn classic() -> anyhow::Result<()> {
                super::$scenario("classic").await
            }

            #[tokio::test]
            async fn consumer() -> anyhow::Result<()> {
                super::$scenario("consumer").await
            }
        }
    )*};
}

with_each_group_protocol!(
    a_hundred_thousand_tweets_land_exactly_once,
    killing_ingest_a_dozen_times_loses_and_doubles_nothing,
    two_processes_in_one_group_survive_a_kill_and_a_zombie,
    members_joining_and_leaving_move_partitions_without_loss_or_doubles,
    hostile_records_go_to_the_dead_letter_table_with_their_reason,
    until_caught_up_takes_exactly_what_was_there_at_start,
    evolve_schema_adds_new_fields_as_columns,
);

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// One test's catalog, and its own topic and consumer group on the shared
/// broker.
struct Harness {
    catalog: CatalogProcess,
    kafka: Kafka,
    topic: String,
    group: String,
    protocol: &'static str,
    _files: tempfile::TempDir,
    files: std::path::PathBuf,
}

impl Harness {
    async fn start(protocol: &'static str) -> Result<Self> {
        let services = Services::from_env();
        let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
        let files = tempfile::tempdir()?;
        let path = files.path().to_path_buf();
        Ok(Self {
            catalog,
            kafka: Kafka::from_env(),
            topic: Kafka::unique("tweets"),
            group: Kafka::unique("bronze"),
            protocol,
            _files: files,
            files: path,
        })
    }

    /// The generator's arguments for `count` tweets from `seed`.
    fn generate_args(count: u64, seed: u64, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "generate",
            "tweets",
            "--count",
            &count.to_string(),
            "--rate",
            "0",
            "--seed",
            &seed.to_string(),
            "--start",
            START,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--users") {
            args.extend(["--users".to_string(), "5000".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Produces `count` tweets to the topic and returns their payloads, as
    /// the same seed writes them to a file.
    fn produce(&self, count: u64, seed: u64, extra: &[&str]) -> Result<Vec<String>> {
        let mut to_kafka = Self::generate_args(count, seed, extra);
        to_kafka.extend([
            "--topic".into(),
            self.topic.clone(),
            "--brokers".into(),
            self.kafka.brokers().into(),
        ]);
        run_lake_ok(&strs(&to_kafka), Vec::<(String, String)>::new())?;
        self.lines(count, seed, extra)
    }

    /// The tweets `seed` generates, from a file only.
    fn lines(&self, count: u64, seed: u64, extra: &[&str]) -> Result<Vec<String>> {
        let file = self.files.join(format!("{seed}-{count}.jsonl"));
        let mut to_file = Self::generate_args(count, seed, extra);
        to_file.extend(["--out".into(), file.display().to_string()]);
        run_lake_ok(&strs(&to_file), Vec::<(String, String)>::new())?;
        Ok(std::fs::read_to_string(&file)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn env(&self) -> Vec<(String, String)> {
        self.catalog.lake_env(Role::Writer)
    }

    /// `lake ingest tweets` from this test's topic, in its group, with its
    /// group protocol.
    fn ingest_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "ingest",
            "tweets",
            "--brokers",
            self.kafka.brokers(),
            "--topic",
            &format!("tweets={}", self.topic),
            "--group-id",
            &self.group,
            "--group-protocol",
            self.protocol,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Settings that let the group hand a dead member's partitions on within
    /// seconds: the session timeout is the client's under the classic
    /// protocol and the broker's under KIP-848 (tests/run sets it to 6 s).
    fn fast_failover(&self, classic_session_ms: u32) -> Vec<String> {
        if self.protocol == "classic" {
            vec![
                "-X".into(),
                format!("session.timeout.ms={classic_session_ms}"),
                "-X".into(),
                "heartbeat.interval.ms=500".into(),
            ]
        } else {
            Vec::new()
        }
    }

    fn producer(&self) -> Result<BaseProducer> {
        Ok(self
            .kafka
            .client_config()
            .set("message.max.bytes", "20000000")
            .set("compression.type", "zstd")
            .create()?)
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

    /// Every partition's next offset as the bronze table records it.
    async fn table_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let bronze = self.table("tweets_raw").await?;
        let key = format!("lake.kafka.{}", self.topic);
        let (_, offsets) = lake_table::files::summary_lookup(&bronze, &key)
            .ok_or_else(|| anyhow::anyhow!("no {key} in the bronze snapshots"))?;
        let offsets: BTreeMap<String, i64> = serde_json::from_str(&offsets)?;
        offsets
            .into_iter()
            .map(|(p, o)| Ok((p.parse()?, o)))
            .collect()
    }

    /// Kafka's view of the group, through Kafka's own admin client, agrees
    /// with the table: the broker ran it with this test's protocol, and the
    /// offsets committed to Kafka are the ones the table recorded.
    async fn assert_kafka_agrees(&self) -> Result<()> {
        let view = self.kafka.group(&self.group)?;
        assert_eq!(view.protocol.to_lowercase(), self.protocol, "{view:?}");
        assert_eq!(
            view.offsets_of(&self.topic),
            self.table_offsets().await?,
            "committed offsets in Kafka against the bronze snapshot"
        );
        Ok(())
    }
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

async fn a_hundred_thousand_tweets_land_exactly_once(protocol: &'static str) -> Result<()> {
    let harness = Harness::start(protocol).await?;
    // No topic yet: `lake generate` creates it through the admin API.
    let produced = harness.produce(100_000, 1, &["--partitions", "3"])?;
    assert_eq!(produced.len(), 100_000);
    assert_eq!(harness.kafka.partitions(&harness.topic)?, 3);

    let args = harness.ingest_args(&["--until-caught-up", "--commit-records", "30000"]);
    let out = run_lake_env(&strs(&args), harness.env())?;
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
    // The snapshot records where each partition ends…
    let offsets = harness.table_offsets().await?;
    for (partition, seen) in &by_partition {
        assert_eq!(offsets[partition], seen.last().expect("rows") + 1);
    }
    assert_eq!(offsets, harness.kafka.end_offsets(&harness.topic)?);
    // …and Kafka holds the same offsets for the group.
    harness.assert_kafka_agrees().await?;

    // Kafka's offsets fall behind the table (a process killed between its
    // table commit and its Kafka commit leaves them so; here an operator's
    // reset). A second run finds nothing new and commits nothing to the
    // table, and brings Kafka's view back to the table's.
    let rewound = harness.kafka.rewind_group(&harness.group, &harness.topic)?;
    assert!(rewound.offsets_of(&harness.topic).values().all(|&o| o == 0));
    let snapshots = bronze.metadata().snapshots().count();
    run_lake_ok(&strs(&args), harness.env())?;
    let again = harness.table("tweets_raw").await?;
    assert_eq!(again.metadata().snapshots().count(), snapshots);
    harness.assert_kafka_agrees().await?;
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

/// Waits until `process` logs an assignment holding at least one partition
/// (under KIP-848 a member may first be assigned nothing while a dead
/// member's partitions wait for its session to expire).
fn wait_for_partitions(process: &mut LakeProcess, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = process.log();
        if log
            .lines()
            .any(|line| line.contains("assigned;") && line.contains('@'))
        {
            return Ok(());
        }
        anyhow::ensure!(process.running(), "ingest exited:\n{log}");
        anyhow::ensure!(
            Instant::now() < deadline,
            "no partitions assigned within {timeout:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn killing_ingest_a_dozen_times_loses_and_doubles_nothing(
    protocol: &'static str,
) -> Result<()> {
    const RECORDS: u64 = 500_000;
    const PARTITIONS: i32 = 40;
    let harness = Harness::start(protocol).await?;
    harness
        .kafka
        .create_topic(&harness.topic, PARTITIONS)
        .await?;
    harness.produce(RECORDS, 2, &["--users", "50000"])?;
    let end = harness.kafka.end_offsets(&harness.topic)?;
    assert_eq!(end.values().sum::<i64>(), RECORDS as i64);

    let mut args = harness.ingest_args(&["--commit-records", "20000", "--commit-interval", "1s"]);
    args.extend(harness.fast_failover(3000));
    let mut moments = Moments(0x5eed_1234_abcd);
    for _ in 0..10 {
        let mut process = LakeProcess::spawn(&strs(&args), harness.env())?;
        wait_for_partitions(&mut process, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(moments.next_millis(200, 2500)));
        assert!(process.running(), "ingest ended early:\n{}", process.log());
        process.kill()?;
    }
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
    finish.push("--until-caught-up".into());
    run_lake_ok(&strs(&finish), harness.env())?;
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
    harness.assert_kafka_agrees().await?;
    Ok(())
}

/// Waits until the ingest process serving metrics on `port` has read at
/// least `records` records.
async fn wait_for_records_read(port: u16, records: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let url = format!("http://127.0.0.1:{port}/metrics");
    loop {
        let read: f64 = match reqwest::get(&url).await {
            Ok(response) => response
                .text()
                .await?
                .lines()
                .filter(|line| line.starts_with(lake_core::metrics::INGEST_RECORDS_TOTAL))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
            Err(_) => 0.0,
        };
        if read >= records as f64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{read} of {records} records read within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

async fn two_processes_in_one_group_survive_a_kill_and_a_zombie(
    protocol: &'static str,
) -> Result<()> {
    const RECORDS: u64 = 90_000;
    let harness = Harness::start(protocol).await?;
    harness.kafka.create_topic(&harness.topic, 3).await?;
    harness.produce(RECORDS, 3, &[])?;
    let end = harness.kafka.end_offsets(&harness.topic)?;
    // Sessions of 6 s: the client's (classic) or the broker's (KIP-848).
    let mut args = harness.ingest_args(&["--commit-interval", "1s", "--commit-records", "5000"]);
    args.extend(harness.fast_failover(6000));
    let args = strs(&args);
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
    harness.assert_kafka_agrees().await?;
    Ok(())
}

/// Members join and leave while one holds an open epoch: under the classic
/// protocol every rebalance revokes everything (eager), under KIP-848 only
/// the partitions that move, and the member reads the partitions it keeps
/// again from the table. Either way, every offset lands once.
async fn members_joining_and_leaving_move_partitions_without_loss_or_doubles(
    protocol: &'static str,
) -> Result<()> {
    const FIRST: u64 = 30_000;
    const MORE: u64 = 120_000;
    const PARTITIONS: i32 = 6;
    let harness = Harness::start(protocol).await?;
    harness
        .kafka
        .create_topic(&harness.topic, PARTITIONS)
        .await?;
    harness.produce(FIRST, 7, &[])?;
    // Epochs end at 50 000 records or at shutdown: A's first one, holding
    // all of the first 30 000, is still open when B arrives.
    let args = harness.ingest_args(&["--commit-interval", "10m", "--commit-records", "50000"]);
    let args = strs(&args);
    let env = harness.env();

    let metrics = lake_testkit::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let mut with_metrics = args.clone();
    with_metrics.extend(["--metrics-addr", &metrics_addr]);
    let mut a = LakeProcess::spawn(&with_metrics, env.clone())?;
    wait_for_partitions(&mut a, Duration::from_secs(60))?;
    wait_for_records_read(metrics, FIRST, Duration::from_secs(60)).await?;
    // B joins: A hands over some partitions, drops its epoch and reads the
    // partitions it keeps again from the table.
    let mut b = LakeProcess::spawn(&args, env.clone())?;
    wait_for_partitions(&mut b, Duration::from_secs(60))?;
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
    harness.produce(MORE, 8, &[])?;
    // A leaves: B takes its partitions on top of its own, mid-epoch; A
    // comes back and takes some again.
    stop(&mut a)?;
    let mut a = LakeProcess::spawn(&args, env.clone())?;
    wait_for_partitions(&mut a, Duration::from_secs(60))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for process in [&mut a, &mut b] {
        stop(process)?;
    }
    // Whatever is left, then every offset exactly once.
    let mut finish = args.clone();
    finish.push("--until-caught-up");
    run_lake_ok(&finish, env)?;
    let end = harness.kafka.end_offsets(&harness.topic)?;
    let bronze = harness.table("tweets_raw").await?;
    assert_eq!(
        assert_complete(&bronze, PARTITIONS, &end).await?,
        (FIRST + MORE) as usize
    );
    harness.assert_kafka_agrees().await?;
    Ok(())
}

async fn hostile_records_go_to_the_dead_letter_table_with_their_reason(
    protocol: &'static str,
) -> Result<()> {
    let harness = Harness::start(protocol).await?;
    // The broker takes records up to 1 MiB unless the topic allows more.
    harness
        .kafka
        .create_topic_with(&harness.topic, 1, &[("max.message.bytes", "20000000")])
        .await?;
    let good = harness.lines(50, 4, &[])?;
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
    let producer = harness.producer()?;
    let mut expected_rejects = BTreeMap::new();
    let mut expected_good = Vec::new();
    let mut offset = 0i64;
    for (i, line) in good.iter().enumerate() {
        producer
            .send(
                BaseRecord::<str, [u8]>::to(&harness.topic)
                    .key("k")
                    .payload(line.as_bytes()),
            )
            .map_err(|(e, _)| e)?;
        expected_good.push(line.clone());
        offset += 1;
        if let Some((payload, reason)) = hostile.get(i) {
            let record = BaseRecord::<str, [u8]>::to(&harness.topic).key("k");
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

    let args = harness.ingest_args(&["--until-caught-up"]);
    let out = run_lake_env(&strs(&args), harness.env())?;
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

async fn until_caught_up_takes_exactly_what_was_there_at_start(
    protocol: &'static str,
) -> Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.kafka.create_topic(&harness.topic, 3).await?;
    harness.produce(60_000, 5, &[])?;
    let at_start = harness.kafka.end_offsets(&harness.topic)?;
    let args = harness.ingest_args(&["--until-caught-up", "--commit-records", "10000"]);
    let mut ingest = LakeProcess::spawn(&strs(&args), harness.env())?;
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
            "--topic",
            &harness.topic,
            "--brokers",
            harness.kafka.brokers(),
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

async fn evolve_schema_adds_new_fields_as_columns(protocol: &'static str) -> Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.kafka.create_topic(&harness.topic, 1).await?;
    let lines = harness.lines(200, 7, &[])?;
    let producer = harness.producer()?;
    // The second half carries a field the table does not have yet.
    for (i, line) in lines.iter().enumerate() {
        let payload = if i >= 100 {
            line.replacen('{', &format!(r#"{{"client":"app-{}","#, i % 3), 1)
        } else {
            line.clone()
        };
        producer
            .send(
                BaseRecord::<str, str>::to(&harness.topic)
                    .key("k")
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let args = harness.ingest_args(&["--until-caught-up", "--evolve-schema"]);
    let out = run_lake_env(&strs(&args), harness.env())?;
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

/// Where the brokers should be, nothing listens (a stopped broker): ingest
/// gives up within --connect-timeout and names the brokers it tried.
#[tokio::test]
async fn a_stopped_broker_fails_ingest_within_the_connect_timeout() -> Result<()> {
    let harness = Harness::start("classic").await?;
    let brokers = format!("127.0.0.1:{}", lake_testkit::free_port());
    let started = Instant::now();
    let out = run_lake_env(
        &[
            "ingest",
            "tweets",
            "--brokers",
            &brokers,
            "--connect-timeout",
            "3s",
            "--until-caught-up",
        ],
        harness.env(),
    )?;
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no Kafka broker at {brokers} answered within 3s")),
        "{stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(3 + 5),
        "gave up after {elapsed:?}"
    );
    Ok(())
}

/// A continuous ingest started before its topic exists (compose starts it
/// beside the generators that create the topics) says so once, keeps running,
/// and takes every record once the topic appears. `--until-caught-up` still
/// fails at once: there a missing topic is a mistake in the arguments.
#[tokio::test]
async fn continuous_ingest_waits_for_its_topic_to_exist() -> Result<()> {
    let harness = Harness::start("classic").await?;
    let batch = run_lake_env(
        &strs(&harness.ingest_args(&["--until-caught-up"])),
        harness.env(),
    )?;
    let stderr = String::from_utf8_lossy(&batch.stderr);
    assert_eq!(batch.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("topic `{}` does not exist", harness.topic)),
        "{stderr}"
    );

    let args = harness.ingest_args(&["--commit-interval", "1s"]);
    let mut ingest = LakeProcess::spawn(&strs(&args), harness.env())?;
    ingest.wait_for_log("waiting for it", Duration::from_secs(60))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(ingest.running(), "ingest exited:\n{}", ingest.log());

    let expected = harness.produce(5_000, 11, &[])?;
    let rows = wait_for_rows(&harness, expected.len(), Duration::from_secs(90)).await?;
    assert_eq!(rows, expected.len(), "{}", ingest.log());
    stop(&mut ingest)?;
    assert_bronze_equals(&harness.table("tweets_raw").await?, &expected).await?;
    let log = ingest.log();
    assert_eq!(log.matches("waiting for it").count(), 1, "{log}");
    assert!(log.contains("topic exists now"), "{log}");
    Ok(())
}

/// `/ready` of a process serving health on `port`, as JSON (`None` while
/// nothing answers).
async fn readiness(port: u16) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// The check named `name` in a `/ready` body: whether it holds, and why.
fn check(body: &serde_json::Value, name: &str) -> (bool, String) {
    let check = body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {body}"));
    (
        check["ok"].as_bool().expect("ok is a bool"),
        check["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits until `/ready` says `ready` (200 or 503 to match) and, when not
/// ready, the check `failing` is the one that fails; returns the body.
async fn wait_for_readiness(
    process: &mut LakeProcess,
    port: u16,
    ready: bool,
    failing: Option<&str>,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        anyhow::ensure!(process.running(), "exited:\n{}", process.log());
        if let Some((status, body)) = readiness(port).await {
            assert_eq!(status == 200, body["ready"] == true, "{body}");
            let matches =
                body["ready"] == ready && failing.is_none_or(|name| !check(&body, name).0);
            if matches {
                return Ok(body);
            }
            last = Some(body);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "/ready not {ready} (failing: {failing:?}) within {timeout:?}; last: {last:?}\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// /health answers while the process runs; /ready is true with every check
/// holding, false naming the brokers while the broker is down, true again
/// after it restarts, and the same for the catalog. The broker is the test's
/// own: the shared one must stay up.
#[tokio::test]
async fn ready_goes_false_while_the_broker_or_the_catalog_is_down() -> Result<()> {
    let mut broker = lake_testkit::OwnBroker::start()?;
    let mut harness = Harness::start("classic").await?;
    harness.kafka = broker.kafka();
    harness.kafka.create_topic(&harness.topic, 2).await?;
    let first = harness.produce(2_000, 21, &[])?;

    let port = lake_testkit::free_port();
    let mut args = harness.ingest_args(&["--commit-interval", "1s"]);
    args.extend([
        "--health-addr".into(),
        format!("127.0.0.1:{port}"),
        "-X".into(),
        "statistics.interval.ms=500".into(),
    ]);
    let mut ingest = LakeProcess::spawn(&strs(&args), harness.env())?;
    let body = wait_for_readiness(&mut ingest, port, true, None, Duration::from_secs(60)).await?;
    for name in ["group", "commits", "brokers", "catalog"] {
        let (ok, detail) = check(&body, name);
        assert!(ok, "{name}: {detail}");
    }
    assert!(
        check(&body, "group").1.contains("2 partitions assigned"),
        "{body}"
    );
    assert!(
        check(&body, "brokers").1.contains("1 of 1 brokers up"),
        "{body}"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await?;
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await?;
    assert_eq!(health["status"], "alive");
    assert_eq!(
        wait_for_rows(&harness, first.len(), Duration::from_secs(60)).await?,
        first.len()
    );

    broker.kill()?;
    let body = wait_for_readiness(
        &mut ingest,
        port,
        false,
        Some("brokers"),
        Duration::from_secs(60),
    )
    .await?;
    assert!(
        check(&body, "brokers").1.contains("0 of 1 brokers up"),
        "{body}"
    );
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await?
            .status(),
        200,
        "alive while not ready"
    );
    broker.start_again()?;
    wait_for_readiness(&mut ingest, port, true, None, Duration::from_secs(120)).await?;

    harness.catalog.kill().await?;
    let body = wait_for_readiness(
        &mut ingest,
        port,
        false,
        Some("catalog"),
        Duration::from_secs(60),
    )
    .await?;
    assert!(
        check(&body, "catalog").1.contains("did not answer"),
        "{body}"
    );
    harness.catalog.start_again().await?;
    wait_for_readiness(&mut ingest, port, true, None, Duration::from_secs(60)).await?;

    // Still ingesting, exactly: records produced after both outages land.
    let second = harness.produce(2_000, 22, &[])?;
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        wait_for_rows(&harness, all.len(), Duration::from_secs(90)).await?,
        all.len()
    );
    stop(&mut ingest)?;
    assert_bronze_equals(&harness.table("tweets_raw").await?, &all).await?;
    Ok(())
}

/// The catalog dies twice under a running ingest and comes back on the same
/// port: once between commits (mid-epoch), once with a commit request in
/// flight (frozen, then killed: the answer never comes). The process never
/// exits, logs each retry, and the table holds every record exactly once.
#[tokio::test]
async fn a_catalog_restart_mid_epoch_and_mid_commit_is_ridden_out() -> Result<()> {
    let mut harness = Harness::start("classic").await?;
    harness.kafka.create_topic(&harness.topic, 4).await?;
    let first = harness.produce(40_000, 31, &[])?;
    let args = harness.ingest_args(&["--commit-records", "5000", "--commit-interval", "1s"]);
    let mut ingest = LakeProcess::spawn(&strs(&args), harness.env())?;
    wait_for_partitions(&mut ingest, Duration::from_secs(60))?;
    let rows = wait_for_rows(&harness, 5_000, Duration::from_secs(60)).await?;
    assert!(rows >= 5_000, "{}", ingest.log());

    // Mid-epoch: down for a few seconds while records keep arriving.
    harness.catalog.kill().await?;
    let second = harness.produce(20_000, 32, &[])?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(ingest.running(), "ingest exited:\n{}", ingest.log());
    harness.catalog.start_again().await?;
    let so_far: Vec<String> = first.iter().chain(&second).cloned().collect();
    let rows = wait_for_rows(&harness, so_far.len(), Duration::from_secs(120)).await?;
    assert_eq!(rows, so_far.len(), "{}", ingest.log());

    // Mid-commit: frozen, the catalog takes the next commit's request and
    // never answers; then it dies with the request unanswered.
    harness.catalog.signal("STOP")?;
    let third = harness.produce(20_000, 33, &[])?;
    // A commit is due within a second of the records arriving; its request
    // goes into the frozen catalog.
    tokio::time::sleep(Duration::from_secs(4)).await;
    harness.catalog.kill().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ingest.running(), "ingest exited:\n{}", ingest.log());
    harness.catalog.start_again().await?;

    let all: Vec<String> = so_far.iter().chain(&third).cloned().collect();
    let rows = wait_for_rows(&harness, all.len(), Duration::from_secs(120)).await?;
    assert_eq!(rows, all.len(), "{}", ingest.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ingest.running(), "ingest exited:\n{}", ingest.log());
    stop(&mut ingest)?;
    let bronze = harness.table("tweets_raw").await?;
    assert_bronze_equals(&bronze, &all).await?;
    assert_eq!(
        assert_complete(&bronze, 4, &harness.kafka.end_offsets(&harness.topic)?).await?,
        all.len()
    );
    let log = ingest.log();
    assert!(
        log.contains("commit outcome unknown"),
        "a commit was in flight:\n{log}"
    );
    let retries = log
        .matches("starting over from the tables' offsets")
        .count();
    assert!(retries >= 2, "each outage logged its retries:\n{log}");
    assert!(
        log.contains(harness.catalog.uri()),
        "retries name the catalog:\n{log}"
    );
    Ok(())
}

/// With a small budget and the catalog gone for good, ingest exits 1 once
/// the budget is spent, naming the catalog and what failed in plain words.
#[tokio::test]
async fn ingest_gives_up_after_its_retry_budget_naming_the_catalog() -> Result<()> {
    let mut harness = Harness::start("classic").await?;
    harness.kafka.create_topic(&harness.topic, 1).await?;
    harness.produce(1_000, 41, &[])?;
    let args = harness.ingest_args(&["--commit-interval", "1s", "--retry-budget", "6s"]);
    let mut ingest = LakeProcess::spawn(&strs(&args), harness.env())?;
    assert_eq!(
        wait_for_rows(&harness, 1_000, Duration::from_secs(60)).await?,
        1_000
    );
    harness.catalog.kill().await?;
    harness.produce(1_000, 42, &[])?;
    let status = ingest.wait(Duration::from_secs(60))?;
    let log = ingest.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let uri = harness.catalog.uri();
    assert!(
        log.contains(&format!(
            "of retries (--retry-budget): the catalog at {uri} or its storage failed: \
             nothing answers at {uri}"
        )),
        "{log}"
    );
    Ok(())
}
