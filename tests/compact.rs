//! `lake compact` as a process on a bronze table of hundreds of small files,
//! while `lake ingest` keeps appending to it, against the catalog on
//! PostgreSQL + s3s-fs and the Kafka broker of `tests/run`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use arrow_array::StringArray;
use futures::TryStreamExt;
use iceberg::spec::Operation;
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, Kafka, LakeProcess, Services, run_lake_env, run_lake_ok,
};

/// The first batch: about four hours of event time from here, and 30 % of
/// its records two hours late (bronze is partitioned by the Kafka record
/// time, so all of it lands in the hour or two the test runs in).
const OLD: &str = "2026-01-01T00:00:00Z";
/// The second batch, ingested during compaction, into the same partitions.
const NEW: &str = "2026-01-03T00:00:00Z";
const OLD_TWEETS: u64 = 60_000;
const NEW_TWEETS: u64 = 30_000;
/// The last batch, produced once compaction has committed, so the running
/// ingest appends on top of the replace however long compaction took.
const LAST: &str = "2026-01-05T00:00:00Z";
const LAST_TWEETS: u64 = 2_000;
/// Partitions of the topic: each ingest commit of a few hundred records
/// spreads over many of them.
const PARTITIONS: i32 = 24;

struct Setup {
    catalog: CatalogProcess,
    kafka: Kafka,
    topic: String,
    group: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn lake(&self, args: &[&str]) -> Result<String> {
        let out = run_lake_ok(args, self.catalog.lake_env(Role::Writer))?;
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// The generator's arguments for `count` tweets from `seed` at `start`.
    fn generate_args(count: u64, seed: u64, start: &str) -> Vec<String> {
        [
            "generate",
            "tweets",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--start",
            start,
            "--events-per-second",
            "4",
            "--users",
            "500",
            "--duplicates",
            "0",
            "--late",
            "0.3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The ids of the tweets the generator makes from these arguments (the
    /// same run, written to a file).
    fn tweet_ids_of(&self, count: u64, seed: u64, start: &str) -> Result<HashSet<String>> {
        let file = self.dir.path().join(format!("tweets-{seed}.jsonl"));
        let mut args = Self::generate_args(count, seed, start);
        args.extend([
            "--rate".into(),
            "0".into(),
            "--out".into(),
            file.display().to_string(),
        ]);
        self.lake(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        std::fs::read_to_string(&file)?
            .lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line)?;
                Ok(json["tweet_id"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// Arguments producing those tweets into the topic at `rate` per second.
    fn to_kafka(&self, count: u64, seed: u64, start: &str, rate: u64) -> Vec<String> {
        let mut args = Self::generate_args(count, seed, start);
        args.extend([
            "--rate".into(),
            rate.to_string(),
            "--topic".into(),
            self.topic.clone(),
            "--brokers".into(),
            self.kafka.brokers().into(),
        ]);
        args
    }

    async fn bronze(&self) -> Result<Table> {
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        Ok(catalog
            .load_table(&TableIdent::from_strs(["bronze", "tweets_raw"])?)
            .await?)
    }
}

/// Every tweet id in `table`, in scan order.
async fn tweet_ids(table: &Table) -> Result<Vec<String>> {
    let batches: Vec<arrow_array::RecordBatch> = table
        .scan()
        .select(["tweet_id"])
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?;
    let mut ids = Vec::new();
    for batch in batches {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        ids.extend(column.iter().map(|v| v.unwrap_or_default().to_string()));
    }
    Ok(ids)
}

/// Live data files per partition (the hour number of `created_at`).
async fn files_per_hour(table: &Table) -> Result<BTreeMap<String, usize>> {
    let mut per = BTreeMap::new();
    for file in lake_table::files::live_files(table, None).await? {
        *per.entry(format!("{:?}", file.data_file.partition()))
            .or_default() += 1;
    }
    Ok(per)
}

#[tokio::test]
async fn compaction_while_ingest_appends_keeps_every_row() -> Result<()> {
    let services = Services::from_env();
    let setup = Setup {
        catalog: CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?,
        kafka: Kafka::from_env(),
        topic: Kafka::unique("tweets"),
        group: Kafka::unique("small-files"),
        dir: tempfile::tempdir()?,
    };
    setup.kafka.create_topic(&setup.topic, PARTITIONS).await?;
    let bootstrap = setup.kafka.brokers();
    let route = format!("tweets={}", setup.topic);

    // Hundreds of small files: a commit every few hundred records (ingest
    // checks the record trigger every 256 records).
    let started = Instant::now();
    let mut expected = setup.tweet_ids_of(OLD_TWEETS, 1, OLD)?;
    let args = setup.to_kafka(OLD_TWEETS, 1, OLD, 0);
    setup.lake(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    setup.lake(&[
        "ingest",
        "tweets",
        "--until-caught-up",
        "--brokers",
        bootstrap,
        "--topic",
        &route,
        "--group-id",
        &setup.group,
        "--commit-records",
        "50",
    ])?;
    eprintln!("small files ingested after {:?}", started.elapsed());
    let before = setup.bronze().await?;
    let old_partitions = files_per_hour(&before).await?;
    let small_files: usize = old_partitions.values().sum();
    assert_eq!(
        tweet_ids(&before).await?.len(),
        OLD_TWEETS as usize,
        "bronze before compaction"
    );
    ensure!(
        small_files >= 200,
        "expected at least 200 small files, got {small_files}"
    );
    let small: HashSet<String> = lake_table::files::live_files(&before, None)
        .await?
        .iter()
        .map(|f| f.path().to_string())
        .collect();

    // Ingest keeps appending (later hours) while compaction runs: the new
    // tweets arrive at a set rate, and compaction starts once the first of
    // them has been committed.
    expected.extend(setup.tweet_ids_of(NEW_TWEETS, 2, NEW)?);
    let mut ingest = LakeProcess::spawn(
        &[
            "ingest",
            "tweets",
            "--brokers",
            bootstrap,
            "--topic",
            &route,
            "--group-id",
            &setup.group,
            "--commit-records",
            "1000",
            "--commit-interval",
            "1s",
        ],
        setup.catalog.lake_env(Role::Writer),
    )?;
    ingest.wait_for_log("assigned", Duration::from_secs(60))?;
    let generate = setup.to_kafka(NEW_TWEETS, 2, NEW, NEW_TWEETS / 30);
    let mut generator = LakeProcess::spawn(
        &generate.iter().map(String::as_str).collect::<Vec<_>>(),
        setup.catalog.lake_env(Role::Writer),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.bronze().await?.metadata().snapshots().count()
        == before.metadata().snapshots().count()
    {
        ensure!(
            Instant::now() < deadline,
            "ingest committed nothing new:\n{}",
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dry = setup.lake(&[
        "compact",
        "bronze.tweets_raw",
        "--dry-run",
        "--min-input-files",
        "2",
    ])?;
    ensure!(dry.contains("would rewrite"), "{dry}");
    let mut env = setup.catalog.lake_env(Role::Writer);
    env.push((
        "RUST_LOG".into(),
        "lake_maintain=debug,lake_table=debug".into(),
    ));
    let out = run_lake_env(
        &[
            "compact",
            "bronze.tweets_raw",
            "--min-input-files",
            "2",
            "--target-file-size",
            "64MiB",
        ],
        env,
    )?;
    let out = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(out.contains("groups committed"), "{out}");
    eprintln!("compacted after {:?}:\n{out}", started.elapsed());
    let status = generator.wait(Duration::from_secs(120))?;
    ensure!(status.success(), "{}", generator.log());
    // On a loaded machine the second batch may all be in before compaction
    // commits; this one comes after it, so ingest's next commit must rebase
    // onto the replace.
    expected.extend(setup.tweet_ids_of(LAST_TWEETS, 3, LAST)?);
    let last = setup.to_kafka(LAST_TWEETS, 3, LAST, 0);
    setup.lake(&last.iter().map(String::as_str).collect::<Vec<_>>())?;

    let total = expected.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = setup.bronze().await?;
        let rows: u64 = lake_table::files::live_files(&table, None)
            .await?
            .iter()
            .map(|f| f.data_file.record_count())
            .sum();
        if rows as usize >= total || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ingest.signal("TERM")?;
    let status = ingest.wait(Duration::from_secs(40))?;
    ensure!(status.success(), "{}", ingest.log());

    let after = setup.bronze().await?;
    let ids = tweet_ids(&after).await?;
    assert_eq!(ids.len(), total, "row count after compaction");
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique.len(), total, "no row doubled");
    assert!(unique == expected, "exactly the produced tweets");

    // Every small file was rewritten, into at most two files per partition
    // (ingest's appends since then sit beside them).
    let live = lake_table::files::live_files(&after, None).await?;
    assert!(
        live.iter().all(|f| !small.contains(f.path())),
        "a small file survived compaction"
    );
    let added: usize = after
        .metadata()
        .snapshots()
        .filter(|s| s.summary().operation == Operation::Replace)
        .map(|s| {
            s.summary().additional_properties["lake.compact.files-added"]
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(
        (1..=2 * old_partitions.len()).contains(&added),
        "{added} files written for {} partitions",
        old_partitions.len()
    );

    // Ingest committed after the compaction's replace snapshots: they rebased.
    let mut operations: Vec<(i64, Operation)> = after
        .metadata()
        .snapshots()
        .map(|s| (s.sequence_number(), s.summary().operation.clone()))
        .collect();
    operations.sort_by_key(|(sequence, _)| *sequence);
    let first_replace = operations
        .iter()
        .position(|(_, op)| *op == Operation::Replace)
        .expect("a replace snapshot");
    assert!(
        operations[first_replace..]
            .iter()
            .any(|(_, op)| *op == Operation::Append),
        "an append after the replace: {operations:?}"
    );

    // The appends since left one manifest each; rewriting merges them all,
    // and the table reads the same.
    let out = setup.lake(&["maintain", "rewrite-manifests", "bronze.tweets_raw"])?;
    ensure!(out.contains(" → 1 in "), "{out}");
    let merged = setup.bronze().await?;
    let ids: HashSet<String> = tweet_ids(&merged).await?.into_iter().collect();
    assert!(ids == expected, "the same tweets after rewriting manifests");
    Ok(())
}
