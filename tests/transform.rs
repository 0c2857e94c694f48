//! `lake transform` as a process over tables `lake ingest` filled from the
//! Kafka broker of `tests/run`, against the catalog on PostgreSQL + s3s-fs:
//! silver and gold equal a plain computation from the bronze payloads, are
//! the same however the input was split into runs, and rebuild only what
//! changed.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result, ensure};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use futures::TryStreamExt;
use iceberg::spec::Operation;
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, DatasetTopics, Kafka, Services, pii_hash, run_lake, run_lake_env,
    run_lake_ok,
};
use serde_json::Value;

const PARTITIONS: i32 = 6;

/// One table's rows, each column formatted: timestamps as epoch
/// microseconds, dates as epoch days, floats in full.
type Rows = Vec<BTreeMap<String, String>>;

struct Lake {
    catalog: CatalogProcess,
    topics: DatasetTopics,
    /// Consumer groups are broker-wide: this lake's have its own suffix.
    suffix: String,
}

impl Lake {
    async fn start(topics: DatasetTopics) -> Result<Self> {
        let services = Services::from_env();
        let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
        Ok(Lake {
            catalog,
            topics,
            suffix: Kafka::unique(""),
        })
    }

    fn lake(&self, args: &[&str]) -> Result<String> {
        let out = run_lake_ok(args, self.catalog.lake_env(Role::Writer))?;
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    }

    fn ingest(&self, group: &str) -> Result<String> {
        let group = format!("{group}{}", self.suffix);
        let mut args = vec!["ingest", "tweets", "speedtest", "--until-caught-up"];
        let routes = self.topics.ingest_args();
        args.extend(routes.iter().map(String::as_str));
        args.extend(["--group-id", &group]);
        self.lake(&args)
    }

    fn transform(&self) -> Result<String> {
        self.lake(&["transform", "all"])
    }

    async fn table(&self, name: &str) -> Result<Table> {
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        let ident = TableIdent::from_strs(name.split('.'))?;
        Ok(catalog.load_table(&ident).await?)
    }

    async fn rows(&self, name: &str) -> Result<Rows> {
        let table = self.table(name).await?;
        let batches: Vec<RecordBatch> = table
            .scan()
            .select_all()
            .build()?
            .to_arrow()
            .await?
            .try_collect()
            .await?;
        let mut rows = Vec::new();
        for batch in &batches {
            let columns: Vec<(String, Vec<String>)> = batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(field, column)| Ok((field.name().clone(), format_column(column)?)))
                .collect::<Result<_>>()?;
            for i in 0..batch.num_rows() {
                rows.push(
                    columns
                        .iter()
                        .map(|(name, values)| (name.clone(), values[i].clone()))
                        .collect(),
                );
            }
        }
        Ok(rows)
    }
}

fn format_column(column: &dyn Array) -> Result<Vec<String>> {
    let column = match column.data_type() {
        DataType::Timestamp(..) => arrow_cast::cast(column, &DataType::Int64)?,
        DataType::Date32 => arrow_cast::cast(column, &DataType::Int32)?,
        _ => arrow_array::make_array(column.to_data()),
    };
    if let Some(floats) = column.as_any().downcast_ref::<arrow_array::Float64Array>() {
        return Ok(floats
            .iter()
            .map(|v| v.map_or("null".into(), |v| format!("{v:e}")))
            .collect());
    }
    let options = arrow_cast::display::FormatOptions::default().with_null("null");
    let formatter = arrow_cast::display::ArrayFormatter::try_new(column.as_ref(), &options)?;
    Ok((0..column.len())
        .map(|i| formatter.value(i).to_string())
        .collect())
}

fn produce(topics: &DatasetTopics, dataset: &str, args: &[&str]) -> Result<()> {
    let routes = topics.generate_args(dataset);
    let mut all = vec!["generate", dataset, "--rate", "0"];
    all.extend(routes.iter().map(String::as_str));
    all.extend(args);
    let out = run_lake(&all)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Produces `count` records of each of `datasets` from `seed`, one a second
/// from `start`, by 300 users, with `faults`.
fn produce_paced(
    topics: &DatasetTopics,
    datasets: &[&str],
    (count, seed, start): (u32, u32, &str),
    faults: &[&str],
) -> Result<()> {
    let (count, seed) = (count.to_string(), seed.to_string());
    let mut args = vec![
        "--count",
        &count,
        "--seed",
        &seed,
        "--start",
        start,
        "--events-per-second",
        "1",
        "--users",
        "300",
    ];
    args.extend(faults);
    for dataset in datasets {
        produce(topics, dataset, &args)?;
    }
    Ok(())
}

/// Both built-in datasets.
const BOTH: &[&str] = &["tweets", "speedtest"];

const FAULTS: &[&str] = &[
    "--duplicates",
    "0.03",
    "--malformed",
    "0.01",
    "--late",
    "0.03",
    "--late-by",
    "2h",
    "--invalid",
    "0.02",
];

/// A bronze record as the test reads it back: the payload and where it was
/// in Kafka.
struct Bronze {
    json: Value,
    at: (i64, i64),
}

async fn bronze(lake: &Lake, table: &str) -> Result<Vec<Bronze>> {
    lake.rows(table)
        .await?
        .into_iter()
        .map(|row| {
            Ok(Bronze {
                json: serde_json::from_str(&row["_raw"])?,
                at: (
                    row["_kafka_partition"].parse()?,
                    row["_kafka_offset"].parse()?,
                ),
            })
        })
        .collect()
}

/// Keeps, for each key, the record read first from Kafka.
fn first_copies<K: Ord>(records: Vec<Bronze>, key: impl Fn(&Value) -> K) -> Vec<Bronze> {
    let mut best: BTreeMap<K, Bronze> = BTreeMap::new();
    for record in records {
        let k = key(&record.json);
        match best.get(&k) {
            Some(kept) if kept.at <= record.at => {}
            _ => {
                best.insert(k, record);
            }
        }
    }
    best.into_values().collect()
}

fn micros(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

fn int(v: &Value, field: &str) -> Option<i64> {
    v.pointer(field).and_then(Value::as_i64)
}

/// The rule a tweet breaks, in the model's order.
fn tweet_rule(t: &Value, now: i64) -> Option<&'static str> {
    let created = micros(t["created_at"].as_str().unwrap());
    let sentiment = t["sentiment_score"].as_f64();
    if created < micros("2006-01-01T00:00:00Z") || created > now {
        return Some("created_at_out_of_range");
    }
    if sentiment.is_some_and(|s| !(-1.0..=1.0).contains(&s)) {
        return Some("sentiment_out_of_range");
    }
    let counts = [
        "/user/followers_count",
        "/retweet_count",
        "/like_count",
        "/engagement_score",
    ];
    if counts.iter().any(|f| int(t, f).is_some_and(|n| n < 0)) {
        return Some("negative_count");
    }
    None
}

fn speedtest_rule(s: &Value) -> Option<&'static str> {
    let (up, down, latency) = (
        s["upload_speed"].as_f64(),
        s["download_speed"].as_f64(),
        s["latency"].as_f64(),
    );
    let location = s["location"].as_str().map(str::trim);
    let (Some(up), Some(down), Some(latency), Some(location)) = (up, down, latency, location)
    else {
        return Some("null_field");
    };
    if location.is_empty() {
        return Some("null_field");
    }
    let speed = 0.0..=10_000.0;
    if !speed.contains(&up) || !speed.contains(&down) {
        return Some("speed_out_of_range");
    }
    if !(0.0..=10_000.0).contains(&latency) {
        return Some("latency_out_of_range");
    }
    None
}

fn title_case(text: &str) -> String {
    text.trim()
        .split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn count_by(rows: &Rows, key: &[&str], value: &str) -> BTreeMap<Vec<String>, String> {
    rows.iter()
        .map(|r| {
            (
                key.iter().map(|k| r[*k].clone()).collect(),
                r[value].clone(),
            )
        })
        .collect()
}

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

#[tokio::test(flavor = "multi_thread")]
async fn silver_and_gold_equal_a_plain_computation() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let lake = Lake::start(topics.clone()).await?;
    let mut tweet_args = vec![
        "--count",
        "12000",
        "--seed",
        "7",
        "--start",
        "2026-01-01T00:00:00Z",
        "--events-per-second",
        "2",
        "--users",
        "400",
    ];
    tweet_args.extend(FAULTS);
    produce(&topics, "tweets", &tweet_args)?;
    let mut speed_args = vec![
        "--count",
        "6000",
        "--seed",
        "8",
        "--start",
        "2026-01-01T00:00:00Z",
        "--events-per-second",
        "1",
        "--users",
        "300",
    ];
    speed_args.extend(FAULTS);
    produce(&topics, "speedtest", &speed_args)?;
    lake.ingest("bronze")?;
    // Too many broken rows: the run fails loudly and commits nothing.
    let out = run_lake_env(
        &["transform", "silver", "--fail-on-quarantine-ratio", "0.001"],
        lake.catalog.lake_env(Role::Writer),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("over --fail-on-quarantine-ratio 0.001"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was committed"), "{stderr}");
    let silver = lake.table("silver.tweets_clean").await?;
    assert_eq!(silver.metadata().current_snapshot_id(), None);

    let before = lake_core::now_micros();
    let log = lake.transform()?;

    // Silver tweets: the first copy of each id, split by the rules.
    let tweets = bronze(&lake, "bronze.tweets_raw").await?;
    let bronze_rows = tweets.len();
    let unique = first_copies(tweets, |t| t["tweet_id"].as_str().unwrap().to_string());
    let duplicates = bronze_rows - unique.len();
    assert!(
        duplicates > 100,
        "the generator sent {duplicates} duplicates"
    );
    let mut expected_rules: BTreeMap<String, u64> = BTreeMap::new();
    let mut clean = Vec::new();
    for t in &unique {
        match tweet_rule(&t.json, before) {
            Some(rule) => *expected_rules.entry(rule.into()).or_default() += 1,
            None => clean.push(&t.json),
        }
    }
    assert!(expected_rules.len() >= 2, "{expected_rules:?}");
    let silver = lake.rows("silver.tweets_clean").await?;
    let silver_ids: BTreeSet<&str> = silver.iter().map(|r| r["tweet_id"].as_str()).collect();
    let expected_ids: BTreeSet<&str> = clean
        .iter()
        .map(|t| t["tweet_id"].as_str().unwrap())
        .collect();
    assert_eq!(silver.len(), clean.len());
    assert_eq!(silver_ids, expected_ids);
    let quarantine = lake.rows("silver.tweets_quarantine").await?;
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for row in &quarantine {
        *rules.entry(row["rule"].clone()).or_default() += 1;
    }
    assert_eq!(rules, expected_rules);
    assert!(
        log.contains(&format!("{duplicates} duplicates dropped")),
        "{log}"
    );

    // Flattening and derived columns, on every row.
    let by_id: HashMap<&str, &Value> = clean
        .iter()
        .map(|t| (t["tweet_id"].as_str().unwrap(), *t))
        .collect();
    for row in &silver {
        let t = by_id[row["tweet_id"].as_str()];
        // [silver.pii]: the user's identity is hashed under the key.
        assert_eq!(
            row["user_id"],
            pii_hash(t["user"]["user_id"].as_str().unwrap())
        );
        for (column, field) in [("username", "username"), ("display_name", "display_name")] {
            let expected = t["user"][field].as_str().map_or("null".into(), pii_hash);
            assert_eq!(row[column], expected, "{column}");
        }
        assert_eq!(
            row["created_at"],
            micros(t["created_at"].as_str().unwrap()).to_string()
        );
        let text = t["text"].as_str().unwrap_or_default();
        assert_eq!(row["text_length"], text.chars().count().to_string());
        let mentions = t["mentions"].as_array().map_or(0, Vec::len);
        assert_eq!(row["mention_count"], mentions.to_string());
        let category = match t["sentiment_score"].as_f64() {
            Some(s) if s < -0.05 => "negative",
            Some(s) if s > 0.05 => "positive",
            Some(_) => "neutral",
            None => "null",
        };
        assert_eq!(row["sentiment_category"], category);
    }

    // Gold tweets, computed plainly from the clean tweets.
    let mut hashtags: BTreeMap<(i64, String), (u64, BTreeSet<String>, i64)> = BTreeMap::new();
    let mut regions: BTreeMap<(i64, String), (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut users: BTreeMap<(i64, String), (u64, i64)> = BTreeMap::new();
    let mut languages: BTreeMap<(i64, String), [u64; 4]> = BTreeMap::new();
    for t in &clean {
        let created = micros(t["created_at"].as_str().unwrap());
        let (hour, day) = (created.div_euclid(HOUR) * HOUR, created.div_euclid(DAY));
        let user = pii_hash(t["user"]["user_id"].as_str().unwrap());
        let engagement = int(t, "/engagement_score").unwrap_or(0);
        let tags: BTreeSet<String> = t["hashtags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_lowercase)
            .collect();
        for tag in tags {
            let entry = hashtags.entry((hour, tag)).or_default();
            entry.0 += 1;
            entry.1.insert(user.clone());
            entry.2 += engagement;
        }
        let region = t["region"].as_str().unwrap_or("null").to_string();
        let entry = regions.entry((hour, region)).or_default();
        entry.0 += 1;
        entry.1.insert(user.clone());
        let entry = users.entry((day, user)).or_default();
        entry.0 += 1;
        entry.1 += engagement;
        let lang = t["lang"].as_str().unwrap_or("null").to_string();
        let entry = languages.entry((day, lang)).or_default();
        entry[0] += 1;
        match t["sentiment_score"].as_f64() {
            Some(s) if s > 0.05 => entry[1] += 1,
            Some(s) if s < -0.05 => entry[3] += 1,
            Some(_) => entry[2] += 1,
            None => {}
        }
    }
    let gold = lake.rows("gold.popular_hashtags_by_hour").await?;
    assert_eq!(gold.len(), hashtags.len());
    for ((hour, tag), (count, tag_users, engagement)) in &hashtags {
        let rank = 1 + hashtags
            .iter()
            .filter(|((h, _), (c, _, _))| h == hour && c > count)
            .count();
        let row = gold
            .iter()
            .find(|r| r["hour"] == hour.to_string() && &r["hashtag"] == tag)
            .with_context(|| format!("no gold row for {tag} at {hour}"))?;
        assert_eq!(row["tweet_count"], count.to_string(), "{tag}");
        assert_eq!(row["unique_users"], tag_users.len().to_string(), "{tag}");
        assert_eq!(row["total_engagement"], engagement.to_string(), "{tag}");
        assert_eq!(row["rank"], rank.to_string(), "{tag}");
    }
    let gold = lake.rows("gold.tweet_volume_by_region").await?;
    let expected: BTreeMap<Vec<String>, String> = regions
        .iter()
        .map(|((h, r), (c, _))| (vec![h.to_string(), r.clone()], c.to_string()))
        .collect();
    assert_eq!(
        count_by(&gold, &["hour", "region"], "tweet_count"),
        expected
    );
    let expected: BTreeMap<Vec<String>, String> = regions
        .iter()
        .map(|((h, r), (_, u))| (vec![h.to_string(), r.clone()], u.len().to_string()))
        .collect();
    assert_eq!(
        count_by(&gold, &["hour", "region"], "unique_users"),
        expected
    );
    let gold = lake.rows("gold.active_users_by_day").await?;
    let expected: BTreeMap<Vec<String>, String> = users
        .iter()
        .map(|((d, u), (c, _))| (vec![d.to_string(), u.clone()], c.to_string()))
        .collect();
    assert_eq!(
        count_by(&gold, &["day", "user_id"], "tweet_count"),
        expected
    );
    let expected: BTreeMap<Vec<String>, String> = users
        .iter()
        .map(|((d, u), (_, e))| (vec![d.to_string(), u.clone()], e.to_string()))
        .collect();
    assert_eq!(
        count_by(&gold, &["day", "user_id"], "total_engagement"),
        expected
    );
    let gold = lake.rows("gold.tweet_metrics_by_language").await?;
    for (column, index) in [
        ("tweet_count", 0),
        ("positive_count", 1),
        ("neutral_count", 2),
        ("negative_count", 3),
    ] {
        let expected: BTreeMap<Vec<String>, String> = languages
            .iter()
            .map(|((d, l), counts)| (vec![d.to_string(), l.clone()], counts[index].to_string()))
            .collect();
        assert_eq!(
            count_by(&gold, &["day", "lang"], column),
            expected,
            "{column}"
        );
    }

    // Speed tests: silver and the hourly aggregate.
    let tests = bronze(&lake, "bronze.speedtest_raw").await?;
    let unique = first_copies(tests, |s| {
        (
            s["user_id"].as_str().unwrap().to_string(),
            s["timestamp"].as_i64().unwrap(),
        )
    });
    let mut expected_rules: BTreeMap<String, u64> = BTreeMap::new();
    let mut groups: BTreeMap<Vec<String>, Vec<f64>> = BTreeMap::new();
    let mut clean_tests = 0;
    for s in &unique {
        match speedtest_rule(&s.json) {
            Some(rule) => *expected_rules.entry(rule.into()).or_default() += 1,
            None => {
                clean_tests += 1;
                let ms = s.json["timestamp"].as_i64().unwrap();
                let key = vec![
                    ms.div_euclid(86_400_000).to_string(),
                    (ms.div_euclid(3_600_000) % 24).to_string(),
                    title_case(s.json["location"].as_str().unwrap()),
                ];
                groups
                    .entry(key)
                    .or_default()
                    .push(s.json["download_speed"].as_f64().unwrap());
            }
        }
    }
    assert_eq!(
        lake.rows("silver.speedtest_clean").await?.len(),
        clean_tests
    );
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for row in lake.rows("silver.speedtest_quarantine").await? {
        *rules.entry(row["rule"].clone()).or_default() += 1;
    }
    assert_eq!(rules, expected_rules);
    let gold = lake.rows("gold.speedtest_agg").await?;
    let expected: BTreeMap<Vec<String>, String> = groups
        .iter()
        .map(|(k, v)| (k.clone(), v.len().to_string()))
        .collect();
    assert_eq!(
        count_by(&gold, &["date", "hour", "location"], "test_count"),
        expected
    );
    for row in &gold {
        let key = vec![
            row["date"].clone(),
            row["hour"].clone(),
            row["location"].clone(),
        ];
        let values = &groups[&key];
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let got: f64 = row["avg_download_speed"].parse()?;
        assert!(
            (got - mean).abs() < 1e-6 * mean.max(1.0),
            "{key:?}: {got} vs {mean}"
        );
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        // percentile_cont interpolates between the two nearest ranks.
        let rank = 0.5 * (sorted.len() - 1) as f64;
        let (low, high) = (sorted[rank.floor() as usize], sorted[rank.ceil() as usize]);
        let median = low + (high - low) * (rank - rank.floor());
        let got: f64 = row["p50_download_speed"].parse()?;
        assert!(
            (got - median).abs() < 1e-6 * median.max(1.0),
            "{key:?}: {got} vs {median}"
        );
    }
    Ok(())
}

/// Every silver and gold table.
const TABLES: [&str; 9] = [
    "silver.tweets_clean",
    "silver.tweets_quarantine",
    "silver.speedtest_clean",
    "silver.speedtest_quarantine",
    "gold.popular_hashtags_by_hour",
    "gold.active_users_by_day",
    "gold.tweet_volume_by_region",
    "gold.tweet_metrics_by_language",
    "gold.speedtest_agg",
];

/// A table's rows without the columns that record when they were written:
/// the exact columns (sorted on), and the floating-point ones, which are
/// equal only up to summation order.
type Content = Vec<(Vec<(String, String)>, Vec<f64>)>;

async fn content(lake: &Lake, table: &str) -> Result<Content> {
    let schema = lake.table(table).await?.metadata().current_schema().clone();
    let floats: BTreeSet<String> = schema
        .as_struct()
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                *f.field_type,
                iceberg::spec::Type::Primitive(iceberg::spec::PrimitiveType::Double)
            )
        })
        .map(|f| f.name.clone())
        .collect();
    let mut rows: Content = Vec::new();
    for row in lake.rows(table).await? {
        let mut exact = Vec::new();
        let mut approximate = Vec::new();
        for (k, v) in row {
            if k == "_ingested_at" || k == "quarantined_at" {
                continue;
            }
            if floats.contains(&k) {
                approximate.push(v.parse().unwrap_or(f64::NAN));
            } else {
                exact.push((k, v));
            }
        }
        rows.push((exact, approximate));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

fn same_content(a: &Content, b: &Content) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} rows against {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        if x.0 != y.0 || !support::floats_agree(&x.1, &y.1) {
            return Some(format!("{x:?} against {y:?}"));
        }
    }
    None
}

async fn snapshots(lake: &Lake) -> Result<Vec<Option<i64>>> {
    let mut ids = Vec::new();
    for table in TABLES {
        ids.push(lake.table(table).await?.metadata().current_snapshot_id());
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_rounds_equal_one_run_and_a_rerun_changes_nothing() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let rounds = Lake::start(topics.clone()).await?;
    let once = Lake::start(topics.clone()).await?;
    for round in 0..5u32 {
        let start = format!("2026-01-01T{:02}:00:00Z", 2 * round);
        produce_paced(&topics, BOTH, (3000, 100 + round, &start), FAULTS)?;
        if round == 3 {
            // Round 1's first records again: duplicates across runs.
            produce_paced(&topics, BOTH, (500, 101, "2026-01-01T02:00:00Z"), &[])?;
        }
        rounds.ingest("rounds")?;
        rounds.transform()?;
    }
    once.ingest("once")?;
    // One silver row per gold query: the single run rebuilds every hour and
    // day with a query of its own, as a backfill over a large table would.
    let log = once.lake(&["transform", "all", "--gold-rows-per-query", "1"])?;
    let hours: BTreeSet<String> = once
        .rows("gold.tweet_volume_by_region")
        .await?
        .into_iter()
        .filter_map(|row| row.get("hour").cloned())
        .collect();
    assert!(hours.len() >= 5, "{hours:?}");
    let shares = log
        .lines()
        .filter(|line| {
            line.contains("rebuilding a share of the gold partitions")
                && line.contains("model=gold.tweet_volume_by_region")
        })
        .count();
    assert_eq!(shares, hours.len(), "{log}");
    same_tables(&rounds, &once, "between five runs and one").await?;

    // A rerun with nothing new commits nothing and says so.
    let before = snapshots(&rounds).await?;
    let log = rounds.transform()?;
    assert_eq!(snapshots(&rounds).await?, before);
    assert_eq!(log.matches("nothing new").count(), 7, "{log}");
    assert!(log.contains("transform: 0 of 7 tables changed"), "{log}");
    Ok(())
}

/// `table`'s snapshots along its current ancestry, oldest first: each one's
/// id, operation and the data files it added.
async fn history(lake: &Lake, table: &str) -> Result<Vec<(i64, Operation, u64)>> {
    let table = lake.table(table).await?;
    let mut snapshots: Vec<(i64, Operation, u64)> = lake_table::files::ancestry(table.metadata())
        .map(|s| {
            let added = s
                .summary()
                .additional_properties
                .get("added-data-files")
                .map_or(Ok(0), |n| n.parse())?;
            Ok((s.snapshot_id(), s.summary().operation.clone(), added))
        })
        .collect::<Result<_>>()?;
    snapshots.reverse();
    Ok(snapshots)
}

/// The bronze snapshot each of silver's commits recorded, oldest first.
async fn silver_positions(lake: &Lake, silver: &str, bronze: &str) -> Result<Vec<i64>> {
    let table = lake.table(silver).await?;
    let key = lake_table::files::source_key(&TableIdent::from_strs(bronze.split('.'))?);
    let mut positions: Vec<i64> = lake_table::files::ancestry(table.metadata())
        .filter_map(|s| s.summary().additional_properties.get(&key))
        .map(|v| v.parse())
        .collect::<Result<_, _>>()?;
    positions.reverse();
    Ok(positions)
}

/// Every table of `a` and `b` holds the same rows.
async fn same_tables(a: &Lake, b: &Lake, how: &str) -> Result<()> {
    for table in TABLES {
        let (x, y) = (content(a, table).await?, content(b, table).await?);
        ensure!(!x.is_empty(), "{table} is empty");
        let differs = same_content(&x, &y);
        ensure!(differs.is_none(), "{table} differs {how}: {differs:?}");
    }
    Ok(())
}

/// The summary of `table`'s current snapshot.
async fn current_summary(lake: &Lake, table: &str) -> Result<HashMap<String, String>> {
    let table = lake.table(table).await?;
    let snapshot = table
        .metadata()
        .current_snapshot()
        .with_context(|| format!("{} has no snapshot", table.identifier()))?;
    Ok(snapshot.summary().additional_properties.clone())
}

fn steps_logged(log: &str, table: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.contains("transforming a step of the bronze backlog")
                && line.contains(&format!("table={table}"))
        })
        .count()
}

/// The bronze snapshots a silver run in steps of one row records, oldest
/// first: after the last compaction (a first run reads its files, which
/// hold rows of the appends before it) every append that added files, the
/// last step at the current snapshot.
fn expected_positions(snapshots: &[(i64, Operation, u64)]) -> Vec<i64> {
    let compacted = snapshots
        .iter()
        .rposition(|(_, op, _)| *op == Operation::Replace);
    let mut positions: Vec<i64> = compacted.map(|c| snapshots[c].0).into_iter().collect();
    positions.extend(
        snapshots[compacted.map_or(0, |c| c + 1)..]
            .iter()
            .filter(|(_, op, added)| *op == Operation::Append && *added > 0)
            .map(|(id, _, _)| *id),
    );
    if let (Some(last), Some((current, _, _))) = (positions.last_mut(), snapshots.last()) {
        *last = *current;
    }
    positions
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_taken_in_steps_equals_one_run_also_after_compaction() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let stepped = Lake::start(topics.clone()).await?;
    let whole = Lake::start(topics.clone()).await?;
    let produce_round = |seed: u32, start: &str, count: u32| {
        produce_paced(&topics, BOTH, (count, seed, start), FAULTS)
    };
    let ingest = || -> Result<()> {
        stepped.ingest("stepped")?;
        whole.ingest("whole")?;
        Ok(())
    };
    // The first two ingests must land in one bronze partition (the hour
    // of the Kafka record time) for the compaction below to find two files.
    support::clear_of_the_hour_s_end(std::time::Duration::from_secs(60));
    produce_round(200, "2026-01-01T00:00:00Z", 1000)?;
    ingest()?;
    produce_round(201, "2026-01-01T00:20:00Z", 1000)?;
    ingest()?;
    // Kafka's record times, which bronze's files keep with their ranges,
    // tell the third ingest's files from the first two's.
    let third = jiff::Timestamp::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    produce_round(202, "2026-01-01T06:00:00Z", 2000)?;
    ingest()?;
    // The first two ingests' tweets compacted into one file; the third's
    // left alone.
    let filter = format!("_kafka_timestamp < '{third}'");
    let compacted = stepped.lake(&[
        "compact",
        "bronze.tweets_raw",
        "--where",
        &filter,
        "--min-input-files",
        "2",
    ])?;
    ensure!(compacted.contains("2 files"), "{compacted}");
    // Then the first ingest's first 400 records again.
    produce_round(203, "2026-01-01T10:00:00Z", 2000)?;
    produce_round(200, "2026-01-01T00:00:00Z", 400)?;
    ingest()?;

    // One bronze row per step: each bronze snapshot a step of its own,
    // except that a first run's step ends no earlier than a compaction.
    let log = stepped.lake(&["transform", "all", "--silver-rows-per-commit", "1"])?;
    whole.transform()?;
    for (silver, bronze, steps) in [
        ("silver.tweets_clean", "bronze.tweets_raw", 2),
        ("silver.speedtest_clean", "bronze.speedtest_raw", 4),
    ] {
        let snapshots = history(&stepped, bronze).await?;
        let expected = expected_positions(&snapshots);
        assert_eq!(expected.len(), steps, "{bronze}: {snapshots:?}");
        assert_eq!(steps_logged(&log, silver), steps, "{log}");
        assert_eq!(
            silver_positions(&stepped, silver, bronze).await?,
            expected,
            "{bronze}: {snapshots:?}"
        );
    }
    same_tables(&stepped, &whole, "in steps and in one first run").await?;

    // Two more ingests, the second re-sending the first's records: an
    // incremental run in two steps, one per bronze snapshot.
    produce_round(210, "2026-01-01T14:00:00Z", 1500)?;
    stepped.ingest("stepped")?;
    whole.ingest("whole")?;
    produce_round(210, "2026-01-01T14:00:00Z", 300)?;
    stepped.ingest("stepped")?;
    whole.ingest("whole")?;
    let before = silver_positions(&stepped, "silver.tweets_clean", "bronze.tweets_raw").await?;
    let log = stepped.lake(&["transform", "all", "--silver-rows-per-commit", "1"])?;
    whole.transform()?;
    let snapshots = history(&stepped, "bronze.tweets_raw").await?;
    let from = snapshots
        .iter()
        .position(|(id, _, _)| Some(id) == before.last())
        .context("silver's position is in bronze's history")?;
    let appended = snapshots[from + 1..]
        .iter()
        .filter(|(_, op, added)| *op == Operation::Append && *added > 0)
        .count();
    assert_eq!(appended, 2, "{snapshots:?}");
    assert_eq!(steps_logged(&log, "silver.tweets_clean"), 2, "{log}");
    let after = silver_positions(&stepped, "silver.tweets_clean", "bronze.tweets_raw").await?;
    assert_eq!(after.len(), before.len() + 2);
    same_tables(&stepped, &whole, "in steps and in one incremental run").await?;
    // The second step's records were all in the first's.
    let summary = current_summary(&stepped, "silver.tweets_clean").await?;
    let rows_in: u64 = summary["lake.transform.rows-in"].parse()?;
    assert!(rows_in > 250, "{summary:?}");
    assert_eq!(summary["lake.transform.duplicates"], rows_in.to_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_keeps_the_steps_before_it_and_the_next_run_continues() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let stepped = Lake::start(topics.clone()).await?;
    let whole = Lake::start(topics.clone()).await?;
    let tweets = |seed: u32, start: &str, invalid: &str| {
        let faults = [
            "--duplicates",
            "0.03",
            "--late",
            "0.03",
            "--invalid",
            invalid,
        ];
        produce_paced(&topics, &["tweets"], (1500, seed, start), &faults)
    };
    // Two ingests: the second's tweets half broken.
    tweets(300, "2026-01-01T00:00:00Z", "0.02")?;
    stepped.ingest("stepped")?;
    whole.ingest("whole")?;
    tweets(301, "2026-01-01T01:00:00Z", "0.5")?;
    stepped.ingest("stepped")?;
    whole.ingest("whole")?;
    let snapshots = history(&stepped, "bronze.tweets_raw").await?;
    let appends: Vec<i64> = snapshots
        .iter()
        .filter(|(_, op, added)| *op == Operation::Append && *added > 0)
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(appends.len(), 2, "{snapshots:?}");

    // A step per ingest: the first commits, the second breaks the ratio.
    let out = run_lake_env(
        &[
            "transform",
            "silver",
            "--dataset",
            "tweets",
            "--silver-rows-per-commit",
            "1",
            "--fail-on-quarantine-ratio",
            "0.2",
        ],
        stepped.catalog.lake_env(Role::Writer),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("over --fail-on-quarantine-ratio 0.2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed after earlier steps were committed"),
        "{stderr}"
    );
    let kept = format!(
        "of the backlog's 2 steps, the first was committed before it, up to bronze snapshot {}",
        appends[0]
    );
    assert!(stderr.contains(&kept), "{stderr}");
    assert_eq!(
        silver_positions(&stepped, "silver.tweets_clean", "bronze.tweets_raw").await?,
        appends[..1]
    );

    // The next run reads only what the failed step had.
    let log = stepped.lake(&["transform", "silver", "--dataset", "tweets"])?;
    assert!(!log.contains("transforming a step"), "{log}");
    assert_eq!(
        silver_positions(&stepped, "silver.tweets_clean", "bronze.tweets_raw").await?,
        appends
    );
    let summary = current_summary(&stepped, "silver.tweets_clean").await?;
    let bronze = stepped.table("bronze.tweets_raw").await?;
    let second = bronze
        .metadata()
        .snapshot_by_id(appends[1])
        .context("the second ingest's snapshot")?
        .summary()
        .additional_properties["added-records"]
        .clone();
    assert_eq!(summary["lake.transform.rows-in"], second);

    whole.lake(&["transform", "silver", "--dataset", "tweets"])?;
    for table in ["silver.tweets_clean", "silver.tweets_quarantine"] {
        let (a, b) = (
            content(&stepped, table).await?,
            content(&whole, table).await?,
        );
        ensure!(!a.is_empty(), "{table} is empty");
        let differs = same_content(&a, &b);
        ensure!(
            differs.is_none(),
            "{table} differs after a failed step: {differs:?}"
        );
    }
    Ok(())
}

/// Live data files of `table` by partition value.
async fn files_by_partition(
    lake: &Lake,
    table: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let table = lake.table(table).await?;
    let mut by_partition: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in lake_table::files::live_files(&table, None).await? {
        let partition = format!("{:?}", file.data_file.partition());
        by_partition
            .entry(partition)
            .or_default()
            .insert(file.path().to_string());
    }
    Ok(by_partition)
}

#[tokio::test(flavor = "multi_thread")]
async fn late_rows_rebuild_exactly_their_gold_partitions() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let lake = Lake::start(topics.clone()).await?;
    // Hours 10, 11 and 12 of one day.
    let args = [
        "--count",
        "3000",
        "--seed",
        "1",
        "--start",
        "2026-01-02T10:00:00Z",
        "--events-per-second",
        "0.3",
        "--users",
        "300",
    ];
    produce(&topics, "tweets", &args)?;
    lake.ingest("bronze")?;
    lake.transform()?;
    let hourly = files_by_partition(&lake, "gold.popular_hashtags_by_hour").await?;
    assert_eq!(hourly.len(), 3, "{hourly:?}");
    let daily = files_by_partition(&lake, "gold.active_users_by_day").await?;
    assert_eq!(daily.len(), 1);
    let counts_before = lake.rows("gold.tweet_volume_by_region").await?;

    // 100 late tweets, all within hour 11.
    let late = [
        "--count",
        "100",
        "--seed",
        "2",
        "--start",
        "2026-01-02T11:20:00Z",
        "--events-per-second",
        "1",
        "--users",
        "300",
    ];
    produce(&topics, "tweets", &late)?;
    lake.ingest("bronze")?;
    let log = lake.transform()?;
    assert!(log.contains("gold.popular_hashtags_by_hour: "), "{log}");
    assert!(log.contains("1 partitions rebuilt"), "{log}");

    let after = files_by_partition(&lake, "gold.popular_hashtags_by_hour").await?;
    assert_eq!(after.len(), 3);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(partition, files)| hourly.get(*partition) != Some(*files))
        .map(|(partition, _)| partition)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    let hour_11 = (micros("2026-01-02T11:00:00Z") / HOUR).to_string();
    assert!(
        changed[0].contains(&hour_11),
        "{changed:?} is not hour {hour_11}"
    );
    let after_daily = files_by_partition(&lake, "gold.active_users_by_day").await?;
    assert_ne!(after_daily, daily, "the day's partition is rebuilt");

    // The region volumes of hour 11 grew by exactly the late tweets; the
    // other hours are untouched.
    let counts_after = lake.rows("gold.tweet_volume_by_region").await?;
    let total = |rows: &Rows, hour: i64| -> u64 {
        rows.iter()
            .filter(|r| r["hour"] == (hour * HOUR).to_string())
            .map(|r| r["tweet_count"].parse::<u64>().unwrap())
            .sum()
    };
    let first_hour = micros("2026-01-02T10:00:00Z") / HOUR;
    assert_eq!(
        total(&counts_after, first_hour),
        total(&counts_before, first_hour)
    );
    assert_eq!(
        total(&counts_after, first_hour + 1),
        total(&counts_before, first_hour + 1) + 100
    );
    assert_eq!(
        total(&counts_after, first_hour + 2),
        total(&counts_before, first_hour + 2)
    );
    Ok(())
}

/// How many rows of `table` have each tweet id.
async fn ids(lake: &Lake, table: &str) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for row in lake.rows(table).await? {
        *counts.entry(row["tweet_id"].clone()).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_resent_many_runs_later_is_still_a_duplicate() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let lake = Lake::start(topics.clone()).await?;
    let dir = tempfile::tempdir()?;
    let run = |args: &[&str]| -> Result<()> {
        produce(&topics, "tweets", args)?;
        lake.ingest("resent")?;
        lake.transform()?;
        Ok(())
    };
    // The first batch, eleven hours of 2 January, kept as a file to re-send.
    let first = dir.path().join("first.jsonl");
    let first_path = first.display().to_string();
    let batch = |seed: &'static str, start: &'static str| {
        [
            "--count",
            "2000",
            "--seed",
            seed,
            "--start",
            start,
            "--events-per-second",
            "0.05",
            "--users",
            "300",
        ]
    };
    let mut to_file = vec!["generate", "tweets", "--rate", "0"];
    to_file.extend(batch("1", "2026-01-02T00:00:00Z"));
    to_file.extend(["--out", &first_path]);
    lake.lake(&to_file)?;
    run(&["--from", &first_path])?;
    // Four more runs, each days later: silver grows by files and partitions
    // the re-sent records' day has nothing to do with.
    for (seed, start) in [
        ("2", "2026-01-06T00:00:00Z"),
        ("3", "2026-01-10T00:00:00Z"),
        ("4", "2026-01-14T00:00:00Z"),
        ("5", "2026-01-18T00:00:00Z"),
    ] {
        run(&batch(seed, start))?;
    }
    let before = ids(&lake, "silver.tweets_clean").await?;
    assert_eq!(before.len(), 10_000);
    assert!(before.values().all(|n| *n == 1));
    let days = files_by_partition(&lake, "silver.tweets_clean").await?;
    assert!(days.len() >= 5, "{days:?}");

    // Every 40th record of the first batch, byte for byte: all duplicates.
    let lines: Vec<String> = std::fs::read_to_string(&first)?
        .lines()
        .map(str::to_string)
        .collect();
    let resent: String = lines.iter().step_by(40).map(|l| format!("{l}\n")).collect();
    let again = dir.path().join("again.jsonl");
    std::fs::write(&again, resent)?;
    run(&["--from", &again.display().to_string()])?;
    let after = ids(&lake, "silver.tweets_clean").await?;
    assert!(after == before, "a re-sent record was written again");

    // A record whose id comes back ten days from its first copy, alone in
    // its run: beyond the one-day horizon, it is not looked for and is
    // written (the documented limit).
    let mut moved: Value = serde_json::from_str(&lines[7])?;
    let moved_id = moved["tweet_id"].as_str().unwrap().to_string();
    moved["created_at"] = "2026-01-12T12:00:00Z".into();
    std::fs::write(&again, format!("{moved}\n"))?;
    run(&["--from", &again.display().to_string()])?;
    let mut expected = before.clone();
    *expected.get_mut(&moved_id).unwrap() += 1;
    let after = ids(&lake, "silver.tweets_clean").await?;
    let differs: Vec<_> = after
        .iter()
        .filter(|(id, n)| expected.get(*id) != Some(n))
        .collect();
    assert!(
        differs.is_empty() && after.len() == expected.len(),
        "only the moved id ({moved_id}) is written twice: {differs:?}"
    );

    // With the exhaustive check, a key from any time is caught.
    moved["created_at"] = "2026-01-20T12:00:00Z".into();
    std::fs::write(&again, format!("{moved}\n"))?;
    produce(&topics, "tweets", &["--from", &again.display().to_string()])?;
    lake.ingest("resent")?;
    let log = lake.lake(&["transform", "silver", "--exhaustive-dedup"])?;
    assert_eq!(ids(&lake, "silver.tweets_clean").await?, expected, "{log}");
    Ok(())
}

/// Rows of `sql` through `lake sql` as the reader of `lake`'s catalog.
fn sql_rows(lake: &Lake, pipeline: &[&str], sql: &str) -> Result<Vec<Value>> {
    let mut args = pipeline.to_vec();
    args.extend(["sql", "--format", "jsonl", sql]);
    lake_testkit::run_lake_jsonl(&args, lake.catalog.lake_env(Role::Reader))
}

/// [silver.pii]: the built-in tweets hash user_id, username and display_name
/// under LAKE_PII_KEY; a copy of the pipeline leaves user_id in clear,
/// redacts username and drops display_name. Both read the same topic: gold's
/// distinct-user counts agree to the row, the hashes are the HMAC of the
/// clear ids, and the key shows nowhere (debug logs, `lake config show`,
/// table metadata and snapshot summaries). Without the key, nothing is run.
#[tokio::test]
async fn personal_data_is_protected_in_silver_and_distinct_users_still_count() -> Result<()> {
    let topics = DatasetTopics::create(PARTITIONS).await?;
    produce(
        &topics,
        "tweets",
        &[
            "--count",
            "4000",
            "--seed",
            "17",
            "--users",
            "300",
            "--start",
            "2026-03-01T00:00:00Z",
        ],
    )?;

    let hashed = Lake::start(topics.clone()).await?;
    hashed.ingest("pii")?;
    let mut keyless = hashed.catalog.lake_env(Role::Writer);
    keyless.retain(|(k, _)| k != "LAKE_PII_KEY");
    let out = run_lake_env(&["transform", "all"], keyless)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("silver.tweets_clean hashes user_id, username, display_name")
            && stderr.contains("set LAKE_PII_KEY"),
        "{stderr}"
    );
    let mut env = hashed.catalog.lake_env(Role::Writer);
    env.push(("RUST_LOG".into(), "debug".into()));
    let out = run_lake_ok(&["transform", "all"], env.clone())?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("silver.tweets_clean"), "{log}");
    assert!(
        !log.contains(lake_testkit::PII_KEY),
        "the key is in the debug log"
    );
    let shown = run_lake_ok(&["config", "show"], env)?;
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&shown.stdout),
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(!shown.contains(lake_testkit::PII_KEY), "{shown}");
    let reader = hashed.catalog.rest_catalog(Role::Reader).await?;
    for table in [
        "silver.tweets_clean",
        "silver.tweets_quarantine",
        "gold.active_users_by_day",
    ] {
        let (ns, name) = table.split_once('.').expect("ns.table");
        let loaded = reader
            .load_table(&TableIdent::new(
                iceberg::NamespaceIdent::new(ns.into()),
                name.into(),
            ))
            .await?;
        let metadata = serde_json::to_string(loaded.metadata())?;
        assert!(
            !metadata.contains(lake_testkit::PII_KEY),
            "the key is in {table}'s metadata"
        );
    }

    let pipeline = tempfile::tempdir()?;
    let dir = pipeline.path().display().to_string();
    run_lake_ok(&["init", &dir], Vec::<(String, String)>::new())?;
    let toml = pipeline.path().join("datasets/tweets/dataset.toml");
    let text = std::fs::read_to_string(&toml)?;
    let declared = "user_id = \"hash\"\nusername = \"hash\"\ndisplay_name = \"hash\"\n";
    assert!(text.contains(declared), "{text}");
    std::fs::write(
        &toml,
        text.replace(declared, "username = \"redact\"\ndisplay_name = \"drop\"\n"),
    )?;
    let plain = Lake::start(topics.clone()).await?;
    let with_pipeline = ["--pipeline", dir.as_str()];
    let group = format!("plain{}", plain.suffix);
    let mut args = with_pipeline.to_vec();
    args.extend([
        "ingest",
        "tweets",
        "speedtest",
        "--until-caught-up",
        "--group-id",
        &group,
    ]);
    let routes = topics.ingest_args();
    args.extend(routes.iter().map(String::as_str));
    run_lake_ok(&args, plain.catalog.lake_env(Role::Writer))?;
    let mut args = with_pipeline.to_vec();
    args.extend(["transform", "all"]);
    run_lake_ok(&args, plain.catalog.lake_env(Role::Writer))?;

    // Silver: the hash of each clear id, row by row.
    let clear = sql_rows(
        &plain,
        &with_pipeline,
        "SELECT tweet_id, user_id, username FROM silver.tweets_clean ORDER BY tweet_id",
    )?;
    let protected = sql_rows(
        &hashed,
        &[],
        "SELECT tweet_id, user_id, username, display_name FROM silver.tweets_clean ORDER BY tweet_id",
    )?;
    assert!(clear.len() > 3_000, "{}", clear.len());
    assert_eq!(clear.len(), protected.len());
    for (c, p) in clear.iter().zip(&protected) {
        assert_eq!(c["tweet_id"], p["tweet_id"]);
        let id = c["user_id"].as_str().expect("user_id");
        assert_eq!(p["user_id"], pii_hash(id).as_str());
        assert_eq!(p["user_id"].as_str().map(str::len), Some(64));
        assert!(
            c["username"].is_null() || c["username"] == "<redacted>",
            "{c}"
        );
        assert!(
            p["display_name"].is_null() || p["display_name"].as_str().map(str::len) == Some(64)
        );
    }
    let columns = sql_rows(
        &plain,
        &with_pipeline,
        "SELECT * FROM silver.tweets_clean LIMIT 1",
    )?;
    assert!(
        columns[0].get("display_name").is_none(),
        "dropped: {}",
        columns[0]
    );

    // Gold: the same distinct-user counts, group by group.
    for (table, keys, users) in [
        (
            "gold.popular_hashtags_by_hour",
            "\"hour\", hashtag",
            "unique_users",
        ),
        (
            "gold.tweet_volume_by_region",
            "\"hour\", region",
            "unique_users",
        ),
    ] {
        let sql = format!("SELECT {keys}, {users} FROM {table} ORDER BY {keys}");
        let a = sql_rows(&hashed, &[], &sql)?;
        let b = sql_rows(&plain, &with_pipeline, &sql)?;
        assert!(!a.is_empty(), "{table}");
        assert_eq!(a, b, "{table}");
    }
    let sql = "SELECT count(DISTINCT user_id) AS n, count(*) AS rows FROM gold.active_users_by_day";
    assert_eq!(
        sql_rows(&hashed, &[], sql)?,
        sql_rows(&plain, &with_pipeline, sql)?
    );
    Ok(())
}

/// Gold tables of both datasets.
const GOLD: [&str; 5] = [
    "gold.popular_hashtags_by_hour",
    "gold.active_users_by_day",
    "gold.tweet_volume_by_region",
    "gold.tweet_metrics_by_language",
    "gold.speedtest_agg",
];

/// The freshness target of `lake run` (seconds from a record's Kafka
/// timestamp to gold).
const FRESHNESS_TARGET: f64 = 15.0;

/// `lake_table_freshness_seconds` of every gold table, from the metrics
/// `lake run` serves on `port`; `None` until each has one.
async fn gold_freshness(port: u16) -> Option<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lake_table_freshness_seconds{table=\"") else {
            continue;
        };
        let (table, value) = rest.split_once("\"} ")?;
        found.insert(table.to_string(), value.trim().parse().ok()?);
    }
    GOLD.iter().all(|t| found.contains_key(*t)).then_some(found)
}

/// Milliseconds between `min` and `max`, drawn from the clock: each run of
/// the test kills at other moments (they are in its failure message).
fn random_millis(min: u64, max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    min + nanos % (max - min)
}

/// `lake run` under live producers, killed (SIGKILL) twice at random moments
/// and restarted, then stopped with SIGTERM and finished with
/// `--until-caught-up`: every silver and gold table equals the batch path's
/// (`lake ingest --until-caught-up`, then `lake transform all`) on the same
/// topics, and after the last restart gold's freshness comes back under the
/// target within a minute while the producers still run.
#[tokio::test(flavor = "multi_thread")]
async fn a_continuous_run_killed_twice_equals_the_batch_path_and_stays_fresh() -> Result<()> {
    use std::time::{Duration, Instant};
    let topics = DatasetTopics::create(PARTITIONS).await?;
    let live = Lake::start(topics.clone()).await?;
    let batch = Lake::start(topics.clone()).await?;

    // About 100 s of traffic at a steady rate, faults included.
    let producer = |dataset: &str, count: &str, seed: &str, rate: &str| {
        let mut args: Vec<String> = ["generate", dataset, "--rate", rate, "--count", count]
            .map(String::from)
            .to_vec();
        args.extend(topics.generate_args(dataset));
        args.extend(
            [
                "--seed",
                seed,
                "--start",
                "2026-01-01T00:00:00Z",
                "--events-per-second",
                "2",
                "--users",
                "400",
            ]
            .map(String::from),
        );
        args.extend(FAULTS.iter().map(|a| a.to_string()));
        lake_testkit::LakeProcess::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            Vec::<(String, String)>::new(),
        )
    };
    let mut tweets = producer("tweets", "30000", "31", "300")?;
    let mut speedtests = producer("speedtest", "10000", "32", "100")?;

    let port = lake_testkit::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let health_port = lake_testkit::free_port();
    let health = format!("127.0.0.1:{health_port}");
    let group = format!("run{}", live.suffix);
    let mut args: Vec<String> = [
        "--metrics-addr",
        &metrics,
        "--health-addr",
        &health,
        "run",
        "tweets",
        "speedtest",
    ]
    .map(String::from)
    .to_vec();
    args.extend(topics.ingest_args());
    args.extend(
        [
            "--group-id",
            &group,
            "--commit-interval",
            "1s",
            "--compact-every",
            "5s",
            "--compact-min-files",
            "4",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = live.catalog.lake_env(Role::Writer);

    let mut kills = Vec::new();
    for _ in 0..2 {
        let mut run = lake_testkit::LakeProcess::spawn(&args, env.clone())?;
        run.wait_for_log("round:", Duration::from_secs(90))?;
        let after = random_millis(500, 6000);
        std::thread::sleep(Duration::from_millis(after));
        assert!(run.running(), "lake run ended early:\n{}", run.log());
        run.kill()?;
        kills.push(after);
    }
    let restarted = Instant::now();
    let mut run = lake_testkit::LakeProcess::spawn(&args, env.clone())?;
    // Back within a minute: the restarted process is ready (in its group,
    // its last round good), has carried new commits to gold itself, and
    // every gold table is within the target of the topics.
    let ready = |body: &Value| {
        body["ready"] == true
            && body["checks"].as_array().is_some_and(|checks| {
                checks.iter().any(|c| {
                    c["name"] == "transform"
                        && c["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("gold.popular_hashtags_by_hour"))
                })
            })
    };
    let fresh = loop {
        let body: Value = match reqwest::get(format!("http://{health}/ready")).await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if ready(&body)
            && run.log().contains("round:")
            && let Some(freshness) = gold_freshness(port).await
            && freshness.values().all(|lag| *lag <= FRESHNESS_TARGET)
        {
            break freshness;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "not ready with gold within {FRESHNESS_TARGET} s of the topics a minute after the \
             restart (kills {kills:?} ms after a round): {:?}\n/ready: {body}\n{}",
            gold_freshness(port).await,
            run.log()
        );
        assert!(run.running(), "lake run ended:\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        tweets.running() && speedtests.running(),
        "freshness {fresh:?} was measured after the producers stopped; it must be under load"
    );

    assert!(
        tweets.wait(Duration::from_secs(180))?.success(),
        "{}",
        tweets.log()
    );
    assert!(
        speedtests.wait(Duration::from_secs(60))?.success(),
        "{}",
        speedtests.log()
    );
    // A clean stop commits what was read and carries it to gold; what was
    // not read yet is left to the next start.
    run.signal("TERM")?;
    assert!(
        run.wait(Duration::from_secs(60))?.success(),
        "{}",
        run.log()
    );
    let log = run.log();
    assert!(log.contains("transform rounds"), "{log}");
    let mut finish = args.clone();
    finish.push("--until-caught-up");
    run_lake_ok(&finish, env)?;

    batch.ingest("batch")?;
    batch.transform()?;
    for table in ["bronze.tweets_raw", "bronze.speedtest_raw"] {
        assert_eq!(
            live.rows(table).await?.len(),
            batch.rows(table).await?.len(),
            "{table}"
        );
    }
    for table in TABLES {
        let (a, b) = (content(&live, table).await?, content(&batch, table).await?);
        assert!(!a.is_empty(), "{table} is empty");
        let differs = same_content(&a, &b);
        assert!(
            differs.is_none(),
            "{table} differs between `lake run` (killed after {kills:?} ms) and the batch \
             path: {differs:?}"
        );
    }

    // Every gold commit says how fresh it was; the last one reached the
    // newest record of the topics.
    for table in GOLD {
        let gold = live.table(table).await?;
        let summary = &gold
            .metadata()
            .current_snapshot()
            .context("gold has a snapshot")?
            .summary()
            .additional_properties;
        let newest: i64 = summary
            .get("lake.newest-record-ms")
            .context("newest record")?
            .parse()?;
        let freshness: i64 = summary
            .get("lake.freshness-ms")
            .context("freshness")?
            .parse()?;
        assert!(newest > 0 && freshness >= 0, "{table}: {summary:?}");
    }
    let out = run_lake_ok(
        &["status", "--format", "csv"],
        live.catalog.lake_env(Role::Reader),
    )?;
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines().next().unwrap_or("").ends_with("freshness_s"),
        "{csv}"
    );
    let gold_line = csv
        .lines()
        .find(|l| l.starts_with("gold.popular_hashtags_by_hour,"))
        .context("gold in lake status")?;
    let freshness: f64 = gold_line.rsplit(',').next().unwrap_or("").parse()?;
    assert!(freshness > 0.0, "{gold_line}");
    Ok(())
}
