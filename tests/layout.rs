//! Bronze's layout against the Kafka broker of `tests/run` and the catalog on
//! PostgreSQL + s3s-fs: partitions follow the Kafka record time, whatever
//! times the payloads claim, and a table made when bronze was partitioned by
//! event time evolves without a rebuild.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use arrow_array::{Array, Int64Array};
use arrow_schema::DataType;
use iceberg::spec::{Literal, PrimitiveLiteral, Transform};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use lake_core::config::Role;
use lake_table::{Append, TableWriter, WriterOptions};
use lake_testkit::{CatalogProcess, CatalogSpec, Kafka, Services, Trino, run_lake_ok};
use serde_json::Value;

const HOUR_MICROS: i64 = 3_600_000_000;

struct Setup {
    catalog: CatalogProcess,
    kafka: Kafka,
    topic: String,
    group: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(partitions: i32) -> Result<Self> {
        let services = Services::from_env();
        let setup = Setup {
            catalog: CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?,
            kafka: Kafka::from_env(),
            topic: Kafka::unique("tweets"),
            group: Kafka::unique("layout"),
            dir: tempfile::tempdir()?,
        };
        setup.kafka.create_topic(&setup.topic, partitions).await?;
        Ok(setup)
    }

    fn lake(&self, args: &[&str]) -> Result<String> {
        let out = run_lake_ok(args, self.catalog.lake_env(Role::Writer))?;
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// Produces `args`' tweets into the topic and writes the same records to
    /// a file, returning them in the order produced.
    fn produce(&self, args: &[&str]) -> Result<Vec<String>> {
        let file = self.dir.path().join("tweets.jsonl");
        let mut to_file = vec!["generate", "tweets", "--rate", "0"];
        to_file.extend(args);
        let path = file.display().to_string();
        to_file.extend(["--out", &path]);
        self.lake(&to_file)?;
        let mut to_kafka = vec!["generate", "tweets", "--rate", "0"];
        to_kafka.extend(args);
        to_kafka.extend(["--topic", &self.topic, "--brokers", self.kafka.brokers()]);
        self.lake(&to_kafka)?;
        Ok(std::fs::read_to_string(&file)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn ingest(&self) -> Result<String> {
        let route = format!("tweets={}", self.topic);
        self.lake(&[
            "ingest",
            "tweets",
            "--until-caught-up",
            "--brokers",
            self.kafka.brokers(),
            "--topic",
            &route,
            "--group-id",
            &self.group,
            "--commit-records",
            "20000",
        ])
    }

    async fn bronze(&self) -> Result<Table> {
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        Ok(catalog
            .load_table(&TableIdent::from_strs(["bronze", "tweets_raw"])?)
            .await?)
    }
}

/// Live files of `table` per (spec id, partition).
async fn files_per_partition(table: &Table) -> Result<BTreeMap<(i32, String), usize>> {
    let mut per = BTreeMap::new();
    for file in lake_table::files::live_files(table, None).await? {
        *per.entry((
            file.partition_spec_id,
            format!("{:?}", file.data_file.partition()),
        ))
        .or_default() += 1;
    }
    Ok(per)
}

/// Every non-null value of an integer or timestamp column (timestamps in
/// microseconds), in scan order.
async fn longs(table: &Table, column: &str) -> Result<Vec<i64>> {
    let mut all = Vec::new();
    for batch in support::scan(table, &[column]).await? {
        let values = arrow_cast::cast(batch.column(0), &DataType::Int64)?;
        let values = values
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("a column of longs")?;
        all.extend(values.iter().flatten());
    }
    Ok(all)
}

/// Every Kafka offset in `table`, sorted.
async fn offsets(table: &Table) -> Result<Vec<i64>> {
    let mut all = longs(table, "_kafka_offset").await?;
    all.sort_unstable();
    Ok(all)
}

fn hours(micros: &[i64]) -> BTreeSet<i64> {
    micros.iter().map(|m| m.div_euclid(HOUR_MICROS)).collect()
}

fn micros(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

/// The rows under `rule` in the quarantine.
fn quarantined(setup: &Setup, rule: &str) -> Result<i64> {
    let out = run_lake_ok(
        &[
            "sql",
            &format!("SELECT count(*) AS n FROM silver.tweets_quarantine WHERE rule = '{rule}'"),
            "--format",
            "jsonl",
        ],
        setup.catalog.lake_env(Role::Reader),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Value = serde_json::from_str(text.lines().next().context("no row")?)?;
    row["n"].as_i64().context("a count")
}

#[tokio::test]
async fn impossible_event_times_do_not_shape_bronze() -> Result<()> {
    let setup = Setup::start(6).await?;
    let records = setup.produce(&[
        "--count",
        "200000",
        "--seed",
        "23",
        "--start",
        "2026-06-01T00:00:00Z",
        "--invalid",
        "0.01",
        "--late",
        "0.01",
    ])?;
    assert_eq!(records.len(), 200_000);
    // What the payloads claim: a partition per event hour would be hundreds.
    let event_hours: BTreeSet<i64> = records
        .iter()
        .map(|line| {
            let tweet: Value = serde_json::from_str(line).unwrap();
            micros(tweet["created_at"].as_str().unwrap()).div_euclid(HOUR_MICROS)
        })
        .collect();
    ensure!(
        event_hours.len() > 300,
        "the generator made only {} event hours",
        event_hours.len()
    );
    let now = jiff::Timestamp::now().as_microsecond();
    let impossible = records
        .iter()
        .filter(|line| {
            let tweet: Value = serde_json::from_str(line).unwrap();
            let at = micros(tweet["created_at"].as_str().unwrap());
            at < micros("2006-01-01T00:00:00Z") || at > now
        })
        .count();
    ensure!(impossible > 100, "only {impossible} impossible times");

    setup.ingest()?;
    let bronze = setup.bronze().await?;
    let kafka_hours = hours(&longs(&bronze, "_kafka_timestamp").await?);
    let spanned = kafka_hours.last().unwrap() - kafka_hours.first().unwrap() + 1;
    let before = files_per_partition(&bronze).await?;
    assert!(
        before.len() as i64 <= spanned + 1,
        "{} partitions for Kafka timestamps spanning {spanned} hours: {before:?}",
        before.len()
    );
    assert!(
        before.values().sum::<usize>() > before.len(),
        "several commits, so several files in a partition: {before:?}"
    );
    // The event time is still a column, its range in each file's statistics.
    assert_eq!(longs(&bronze, "created_at").await?.len(), 200_000);
    assert_eq!(offsets(&bronze).await?.len(), 200_000);

    let out = setup.lake(&["compact", "bronze.tweets_raw", "--min-input-files", "2"])?;
    let compacted = setup.bronze().await?;
    let after = files_per_partition(&compacted).await?;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{out}"
    );
    assert!(after.values().all(|files| *files == 1), "{after:?}\n{out}");
    assert_eq!(offsets(&compacted).await?.len(), 200_000);

    // Impossible times still go to the quarantine, each under its rule.
    setup.lake(&["transform", "silver"])?;
    assert_eq!(
        quarantined(&setup, "created_at_out_of_range")?,
        impossible as i64
    );
    Ok(())
}

/// The partition value (hours since the epoch) of a one-field tuple.
fn hour_of(partition: &iceberg::spec::Struct) -> Option<i64> {
    match partition.fields().first()? {
        Some(Literal::Primitive(PrimitiveLiteral::Int(n))) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Writes `lines` (the topic's first records, offsets from 0 on its one
/// partition) into a bronze table made the way lake made them before: by
/// the hour of `created_at`, with the offsets in the snapshot summary.
async fn old_layout_bronze(
    setup: &Setup,
    lines: &[String],
    kafka_time: i64,
    dir: &Path,
) -> Result<()> {
    let catalog = setup.catalog.lake_catalog(Role::Writer).await?;
    let pipeline = lake_spec::Pipeline::built_in()?;
    let dataset = pipeline.dataset("tweets")?;
    let schema = lake_ingest::bronze::bronze_schema(dataset)?;
    let spec = lake_table::partition_by(&schema, "created_at", Transform::Hour)?;
    let ident = TableIdent::from_strs(["bronze", "tweets_raw"])?;
    let table = catalog
        .ensure_table(&ident, schema.clone(), spec, HashMap::new())
        .await?;
    // The rows as ingest decodes them, from JSON carrying lake's columns.
    let arrow = std::sync::Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
    let ingested = jiff::Timestamp::from_microsecond(kafka_time)?.to_string();
    let file = dir.join("old.jsonl");
    let mut text = String::new();
    for (offset, line) in lines.iter().enumerate() {
        let mut row: serde_json::Map<String, Value> = serde_json::from_str(line)?;
        row.insert("_raw".into(), Value::String(line.clone()));
        row.insert("_kafka_topic".into(), Value::String(setup.topic.clone()));
        row.insert("_kafka_partition".into(), 0.into());
        row.insert("_kafka_offset".into(), (offset as i64).into());
        row.insert("_kafka_timestamp".into(), Value::String(ingested.clone()));
        row.insert("_ingested_at".into(), Value::String(ingested.clone()));
        text.push_str(&serde_json::to_string(&row)?);
        text.push('\n');
    }
    std::fs::write(&file, &text)?;
    let reader = arrow_json::ReaderBuilder::new(arrow)
        .with_batch_size(500)
        .build(std::io::BufReader::new(std::fs::File::open(&file)?))?;
    let mut writer = TableWriter::new(&table, WriterOptions::default()).await?;
    for batch in reader {
        writer.write(&batch?).await?;
    }
    let files = writer.close().await?;
    Append::new()
        .add_files(files)
        .set(
            lake_table::files::offsets_key(&setup.topic),
            format!("{{\"0\":{}}}", lines.len()),
        )
        .commit(&catalog, &table)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_bronze_partitioned_by_event_time_evolves_to_kafka_time() -> Result<()> {
    const OLD: usize = 2_000;
    const ALL: usize = 4_000;
    let setup = Setup::start(1).await?;
    // Two hours of event time from here, and some impossible times.
    let records = setup.produce(&[
        "--count",
        &ALL.to_string(),
        "--seed",
        "5",
        "--start",
        "2026-01-01T00:00:00Z",
        "--events-per-second",
        "0.5",
        "--invalid",
        "0.03",
    ])?;
    // The first records reached bronze two days ago, under the old layout.
    let now = jiff::Timestamp::now().as_microsecond();
    let two_days_ago = now - 48 * HOUR_MICROS;
    old_layout_bronze(&setup, &records[..OLD], two_days_ago, setup.dir.path()).await?;
    let old = setup.bronze().await?;
    let old_spec = old.metadata().default_partition_spec_id();
    let old_partitions = files_per_partition(&old).await?;
    ensure!(old_partitions.len() > 3, "{old_partitions:?}");

    // Ingest moves the table to the Kafka time and goes on from offset OLD.
    let log = setup.ingest()?;
    ensure!(log.contains("partitioning changed"), "{log}");
    let evolved = setup.bronze().await?;
    let spec = evolved.metadata().default_partition_spec();
    assert_ne!(spec.spec_id(), old_spec);
    assert_eq!(
        spec.fields()
            .iter()
            .map(|f| (f.name.as_str(), f.transform))
            .collect::<Vec<_>>(),
        [("_kafka_timestamp_hour", Transform::Hour)]
    );
    let files = files_per_partition(&evolved).await?;
    for (key, count) in &old_partitions {
        assert_eq!(files.get(key), Some(count), "old files stay as they were");
    }
    let new: Vec<_> = files.keys().filter(|(s, _)| *s == spec.spec_id()).collect();
    ensure!(!new.is_empty() && new.len() <= 2, "{files:?}");
    assert_eq!(
        offsets(&evolved).await?,
        (0..ALL as i64).collect::<Vec<_>>()
    );

    // Trino reads the whole table across both specs, and prunes by the
    // event time in either.
    let trino = Trino::from_env();
    let name = Kafka::unique("iceberg_layout").replace('-', "_");
    trino
        .create_catalog(&name, &setup.catalog, &setup.catalog.keys().reader)
        .await?;
    let first_hour: usize = records
        .iter()
        .filter(|line| {
            let tweet: Value = serde_json::from_str(line).unwrap();
            let at = micros(tweet["created_at"].as_str().unwrap());
            (micros("2026-01-01T00:00:00Z")..micros("2026-01-01T01:00:00Z")).contains(&at)
        })
        .count();
    let counted = trino
        .query(&format!(
            "SELECT count(*), count(DISTINCT _kafka_offset), \
                    count_if(created_at >= TIMESTAMP '2026-01-01 00:00:00 UTC' \
                             AND created_at < TIMESTAMP '2026-01-01 01:00:00 UTC') \
             FROM {name}.bronze.tweets_raw"
        ))
        .await;
    trino.drop_catalog(&name).await?;
    let counted = counted?;
    let row: Vec<i64> = counted.rows[0]
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(row, [ALL as i64, ALL as i64, first_hour as i64]);

    // Retention judges each file by its own spec: the old files' event hours
    // ended months ago (the year-2100 ones have not).
    let cutoff = now - 30 * 24 * HOUR_MICROS;
    let old_hours: BTreeSet<i64> = lake_table::files::live_files(&old, None)
        .await?
        .iter()
        .filter_map(|f| hour_of(f.data_file.partition()))
        .filter(|h| (h + 1) * HOUR_MICROS <= cutoff)
        .collect();
    ensure!(!old_hours.is_empty(), "{old_partitions:?}");
    let dry = setup.lake(&["maintain", "retention", "bronze.tweets_raw", "--dry-run"])?;
    ensure!(
        dry.contains(&format!("would drop {} partitions", old_hours.len())),
        "{dry}"
    );

    // Compaction moves every old file into the current partitioning: one
    // file per Kafka hour.
    let out = setup.lake(&["compact", "bronze.tweets_raw"])?;
    let compacted = setup.bronze().await?;
    let files = files_per_partition(&compacted).await?;
    ensure!(
        files.keys().all(|(s, _)| *s == spec.spec_id()),
        "{files:?}\n{out}"
    );
    ensure!(files.values().all(|n| *n == 1), "{files:?}\n{out}");
    assert_eq!(
        offsets(&compacted).await?,
        (0..ALL as i64).collect::<Vec<_>>()
    );

    // Now the old rows' partition time is when Kafka had them: a retention
    // of one day drops exactly them.
    let catalog = setup.catalog.rest_catalog(Role::Writer).await?;
    let tx = Transaction::new(&compacted);
    let tx = tx
        .update_table_properties()
        .set("lake.retention".into(), "1d".into())
        .apply(tx)?;
    tx.commit(&catalog).await?;
    setup.lake(&["maintain", "retention", "bronze.tweets_raw"])?;
    let kept = setup.bronze().await?;
    assert_eq!(
        offsets(&kept).await?,
        (OLD as i64..ALL as i64).collect::<Vec<_>>()
    );
    Ok(())
}
