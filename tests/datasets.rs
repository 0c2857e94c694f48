//! Datasets as files: a dataset declared only in a pipeline directory of the
//! test (no Rust) goes through every step, its dataset.toml evolves the
//! tables, `lake validate` names what is wrong, and `lake init` writes out the
//! shipped datasets so that quickstart on them equals the built-in one.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, Kafka, Services, Trino, run_lake_env, run_lake_ok,
};
use serde_json::{Value, json};

/// The orders dataset: a composite key, a nested list of structs, decimals,
/// an epoch-millisecond event time, two rules and two gold models.
fn orders_toml(topic: &str, extra_schema: &str) -> String {
    format!(
        r#"description = "Order lines of a shop"
topic = "{topic}"
key = ["order_id", "line_no"]

[event_time]
field = "ordered_at"
format = "epoch_ms"

[schema]
order_id = "string not null"
line_no = "int not null"
ordered_at = "long not null"
customer = "struct<id: string not null, country: string>"
amount = "decimal(12, 2) not null"
currency = "string"
items = "list<struct<sku: string not null, qty: int not null, price: decimal(12, 2)>>"
{extra_schema}
[bronze]
partition = "day"

[silver]
time_column = "ordered_at"

[[silver.rules]]
name = "positive_amount"
check = "amount > 0"

[[silver.rules]]
name = "known_currency"
check = "currency IN ('EUR', 'USD')"
action = "drop"
"#
    )
}

const SILVER: &str = "\
-- silver.orders_clean: one row per order line, the customer flattened.
SELECT order_id,
       line_no,
       _event_time AS ordered_at,
       customer['id'] AS customer_id,
       customer['country'] AS country,
       amount,
       currency,
       items,
       CAST(cardinality(items) AS BIGINT) AS item_count,
       _kafka_partition,
       _kafka_offset,
       _ingested_at
FROM bronze
-- A trailing comment: lake's wrapping must not be swallowed by it.
";

const REVENUE: &str = "\
-- Revenue per day and country.
-- lake: time_column = \"day\", grain = \"day\"
SELECT CAST(ordered_at AS DATE) AS \"day\",
       country,
       count(*) AS lines,
       sum(amount) AS revenue,
       count(DISTINCT customer_id) AS customers
FROM silver
GROUP BY 1, 2
";

const UNITS: &str = "\
-- Units sold per hour and SKU.
-- lake: time_column = \"hour\", grain = \"hour\"
WITH sold AS (
    SELECT date_trunc('hour', ordered_at) AS \"hour\", unnest(items) AS item
    FROM silver
)
SELECT \"hour\", item['sku'] AS sku, CAST(sum(item['qty']) AS BIGINT) AS units
FROM sold
GROUP BY 1, 2
";

/// Writes the orders dataset under `dir/datasets/orders/`.
fn write_orders(dir: &Path, topic: &str, extra_schema: &str, silver: &str) -> Result<()> {
    let folder = dir.join("datasets/orders");
    std::fs::create_dir_all(folder.join("gold"))?;
    std::fs::write(
        folder.join("dataset.toml"),
        orders_toml(topic, extra_schema),
    )?;
    std::fs::write(folder.join("silver.sql"), silver)?;
    std::fs::write(folder.join("gold/revenue_by_day.sql"), REVENUE)?;
    std::fs::write(folder.join("gold/units_by_hour.sql"), UNITS)?;
    Ok(())
}

/// One order line as the test means it.
#[derive(Clone, Debug)]
struct Line {
    order_id: String,
    line_no: i64,
    ordered_at_ms: i64,
    customer: String,
    country: String,
    amount_cents: i64,
    currency: String,
    items: Vec<(String, i64, i64)>,
    coupon: Option<String>,
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

impl Line {
    fn json(&self) -> String {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|(sku, qty, price)| {
                format!(r#"{{"sku":"{sku}","qty":{qty},"price":{}}}"#, money(*price))
            })
            .collect();
        let coupon = self
            .coupon
            .as_ref()
            .map_or(String::new(), |c| format!(r#","coupon":"{c}""#));
        format!(
            r#"{{"order_id":"{}","line_no":{},"ordered_at":{},"customer":{{"id":"{}","country":"{}"}},"amount":{},"currency":"{}","items":[{}]{coupon}}}"#,
            self.order_id,
            self.line_no,
            self.ordered_at_ms,
            self.customer,
            self.country,
            money(self.amount_cents),
            self.currency,
            items.join(",")
        )
    }

    fn key(&self) -> (String, i64) {
        (self.order_id.clone(), self.line_no)
    }
}

/// Deterministic numbers for the test data.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `count` order lines from `first_order` on, spread over the two days
/// before `end_ms`: 3 % with a non-positive amount, 3 % in GBP.
fn lines(first_order: u64, count: usize, end_ms: i64, dice: &mut Dice) -> Vec<Line> {
    let countries = ["DE", "FR", "US", "IT"];
    let mut out = Vec::new();
    let mut order = first_order;
    while out.len() < count {
        let lines_in_order = 1 + dice.next(3) as i64;
        let at = end_ms - 3_600_000 - dice.next(2 * 86_400_000 - 3_600_000) as i64;
        let customer = format!("c{}", dice.next(300));
        let country = countries[dice.next(4) as usize].to_string();
        for line_no in 1..=lines_in_order {
            let items: Vec<(String, i64, i64)> = (0..1 + dice.next(3))
                .map(|_| {
                    (
                        format!("sku-{}", dice.next(20)),
                        1 + dice.next(4) as i64,
                        100 + dice.next(5000) as i64,
                    )
                })
                .collect();
            let mut amount: i64 = items.iter().map(|(_, qty, price)| qty * price).sum();
            let roll = dice.next(100);
            if roll < 3 {
                amount = -(dice.next(500) as i64);
            }
            let currency = if (3..6).contains(&roll) { "GBP" } else { "EUR" };
            out.push(Line {
                order_id: format!("o{order:06}"),
                line_no,
                ordered_at_ms: at,
                customer: customer.clone(),
                country: country.clone(),
                amount_cents: amount,
                currency: currency.into(),
                items,
                coupon: None,
            });
        }
        order += 1;
    }
    out.truncate(count);
    out
}

/// A file of `lines` with every 50th line sent again right after (a
/// duplicate) and `malformed` broken lines mixed in; returns its path and the
/// payloads in file order.
fn write_file(dir: &Path, name: &str, lines: &[Line], malformed: &[String]) -> Result<PathBuf> {
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.push_str(&line.json());
        text.push('\n');
        if i % 50 == 49 {
            text.push_str(&line.json());
            text.push('\n');
        }
        if let Some(bad) = malformed.get(i / 100)
            && i % 100 == 99
        {
            text.push_str(bad);
            text.push('\n');
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

struct Orders {
    catalog: CatalogProcess,
    kafka: Kafka,
    pipeline: tempfile::TempDir,
    files: tempfile::TempDir,
    topic: String,
    group: String,
}

impl Orders {
    async fn start() -> Result<Self> {
        let services = Services::from_env();
        let orders = Orders {
            catalog: CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?,
            kafka: Kafka::from_env(),
            pipeline: tempfile::tempdir()?,
            files: tempfile::tempdir()?,
            topic: Kafka::unique("orders"),
            group: Kafka::unique("orders-bronze"),
        };
        write_orders(orders.pipeline.path(), &orders.topic, "", SILVER)?;
        Ok(orders)
    }

    fn dir(&self) -> String {
        self.pipeline.path().display().to_string()
    }

    /// `lake --pipeline <dir> args…` as the writer; its stderr.
    fn lake(&self, args: &[&str]) -> Result<String> {
        let dir = self.dir();
        let mut all = vec!["--pipeline", &dir];
        all.extend(args);
        let out = run_lake_ok(&all, self.catalog.lake_env(Role::Writer))?;
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// The file into Kafka, then ingest and both layers.
    fn feed(&self, file: &Path) -> Result<String> {
        let file = file.display().to_string();
        let sent = self.lake(&[
            "generate",
            "orders",
            "--from",
            &file,
            "--rate",
            "0",
            "--brokers",
            self.kafka.brokers(),
        ])?;
        ensure!(sent.contains("failed 0"), "{sent}");
        self.lake(&[
            "ingest",
            "orders",
            "--until-caught-up",
            "--brokers",
            self.kafka.brokers(),
            "--group-id",
            &self.group,
        ])?;
        self.lake(&["transform", "all"])
    }

    /// `lake sql` as the reader, one JSON object per row.
    fn sql(&self, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>> {
        let dir = self.dir();
        lake_testkit::run_lake_jsonl(
            &["--pipeline", &dir, "sql", "--format", "jsonl", sql],
            self.catalog.lake_env(Role::Reader),
        )
    }

    fn count(&self, table: &str) -> Result<i64> {
        let rows = self.sql(&format!("SELECT count(*) AS n FROM {table}"))?;
        rows[0]["n"].as_i64().context("a count")
    }

    /// The table named `name`, loaded as the reader.
    async fn table(&self, name: &str) -> Result<iceberg::table::Table> {
        use iceberg::Catalog;
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        Ok(catalog
            .load_table(&iceberg::TableIdent::from_strs(name.split('.'))?)
            .await?)
    }

    /// `table`'s properties.
    async fn properties(&self, table: &str) -> Result<std::collections::HashMap<String, String>> {
        let table = self.table(table).await?;
        Ok(table.metadata().properties().clone())
    }

    /// How many of `table`'s live data files each codec compresses (by its
    /// Iceberg name, as Parquet's footer names it).
    async fn codecs(&self, table: &str) -> Result<BTreeMap<String, usize>> {
        use parquet::file::reader::FileReader;
        let table = self.table(table).await?;
        let mut codecs = BTreeMap::new();
        for file in lake_table::files::live_files(&table, None).await? {
            let path = file.data_file.file_path();
            let bytes = table.file_io().new_input(path)?.read().await?;
            let reader = parquet::file::reader::SerializedFileReader::new(bytes)?;
            let mut names: Vec<String> = reader
                .metadata()
                .row_groups()
                .iter()
                .flat_map(|group| group.columns())
                .map(|column| lake_table::writer::codec_name(column.compression()).to_string())
                .collect();
            names.dedup();
            ensure!(names.len() == 1, "{path} mixes codecs: {names:?}");
            *codecs.entry(names.remove(0)).or_default() += 1;
        }
        Ok(codecs)
    }

    /// `table`'s current schema.
    async fn schema(&self, table: &str) -> Result<iceberg::spec::Schema> {
        let table = self.table(table).await?;
        Ok(table.metadata().current_schema().as_ref().clone())
    }

    /// A summary value of `table`'s newest snapshot that has it.
    async fn summary(&self, table: &str, key: &str) -> Result<Option<String>> {
        let table = self.table(table).await?;
        Ok(lake_table::files::summary_lookup(&table, key).map(|(_, v)| v))
    }
}

/// Decimal text (`12.30`, `-5`) as cents.
fn cents(value: &Value) -> i64 {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let negative = whole.starts_with('-');
    let whole: i64 = whole.trim_start_matches('-').parse().unwrap();
    let fraction: i64 = format!("{fraction:0<2}")[..2].parse().unwrap();
    let value = whole * 100 + fraction;
    if negative { -value } else { value }
}

/// Epoch microseconds of RFC 3339 or Trino's `2026-01-01 10:00:00.000000 UTC`.
fn micros(value: &Value) -> i64 {
    let text = value.as_str().unwrap().trim_end_matches(" UTC");
    let text = text.replacen(' ', "T", 1);
    text.trim_end_matches('Z')
        .trim_end_matches("+00:00")
        .parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_microsecond()
}

fn day_of(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string()
}

const HOUR_US: i64 = 3_600_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_dataset_declared_only_in_files_goes_through_every_step() -> Result<()> {
    let orders = Orders::start().await?;
    let validated = run_lake_ok(
        &["--pipeline", &orders.dir(), "validate"],
        Vec::<(String, String)>::new(),
    )?;
    let said = String::from_utf8_lossy(&validated.stdout);
    assert!(
        said.contains("1 datasets (orders), 3 models, 2 rules"),
        "{said}"
    );

    let end_ms = jiff::Timestamp::now().as_millisecond();
    let mut dice = Dice(19);
    let first = lines(0, 1_500, end_ms, &mut dice);
    let malformed_a = [
        r#"{"order_id":"bad1","line_no":1,"ordered_at":"#.to_string(),
        first[0]
            .json()
            .replace(r#""line_no":1"#, r#""line_no":"one""#),
        first[1]
            .json()
            .replace(r#""ordered_at":"#, r#""placed_at":"#),
    ];
    let file_a = write_file(orders.files.path(), "a.jsonl", &first, &malformed_a)?;
    let log = orders.feed(&file_a)?;
    assert!(log.contains("silver.orders_clean: "), "{log}");

    // The second run: new lines, and 100 lines of the first again (a
    // producer retrying after a crash): duplicates across runs.
    let mut second = lines(100_000, 1_000, end_ms, &mut dice);
    second.extend(first[200..300].iter().cloned());
    let malformed_b = [r#"[1,2,3]"#.to_string()];
    let file_b = write_file(orders.files.path(), "b.jsonl", &second, &malformed_b)?;
    orders.feed(&file_b)?;

    // What every step must hold, computed plainly from the lines.
    let sent: Vec<&Line> = first.iter().chain(&second).collect();
    let duplicates_in_files = first.len() / 50 + second.len() / 50;
    let bronze_rows = sent.len() + duplicates_in_files;
    let rejected = malformed_a.len() + malformed_b.len();
    let mut unique: BTreeMap<(String, i64), &Line> = BTreeMap::new();
    for line in &sent {
        unique.entry(line.key()).or_insert(line);
    }
    let mut quarantined = 0;
    let mut dropped = 0;
    let mut clean: Vec<&Line> = Vec::new();
    for line in unique.values() {
        if line.amount_cents <= 0 {
            quarantined += 1;
        } else if line.currency != "EUR" && line.currency != "USD" {
            dropped += 1;
        } else {
            clean.push(line);
        }
    }
    assert!(quarantined > 10 && dropped > 10, "{quarantined} {dropped}");
    assert_eq!(orders.count("bronze.orders_raw")?, bronze_rows as i64);
    assert_eq!(orders.count("bronze.orders_raw_rejects")?, rejected as i64);
    let reasons = orders.sql("SELECT error FROM bronze.orders_raw_rejects")?;
    let reasons: Vec<&str> = reasons
        .iter()
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("line_no")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("ordered_at")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not a JSON object")),
        "{reasons:?}"
    );
    assert_eq!(orders.count("silver.orders_clean")?, clean.len() as i64);
    assert_eq!(
        orders.count("silver.orders_quarantine")?,
        quarantined as i64
    );
    let rules =
        orders.sql("SELECT rule, count(*) AS n FROM silver.orders_quarantine GROUP BY rule")?;
    assert_eq!(
        serde_json::to_value(&rules)?,
        json!([{"rule": "positive_amount", "n": quarantined}])
    );
    // Drops are counted in the snapshot summaries of both runs.
    let dropped_counts = orders.sql(
        "SELECT count(*) AS n FROM silver.orders_clean WHERE currency NOT IN ('EUR', 'USD')",
    )?;
    assert_eq!(dropped_counts[0]["n"], 0);
    let last_drops: i64 = orders
        .summary("silver.orders_clean", "lake.dropped.known_currency")
        .await?
        .context("no drop count in silver's summary")?
        .parse()?;
    assert!(last_drops > 0 && last_drops <= dropped as i64);

    // The nested list and decimals went through as they were.
    let sample = clean[7];
    let rows = orders.sql(&format!(
        "SELECT amount, item_count, items FROM silver.orders_clean \
         WHERE order_id = '{}' AND line_no = {}",
        sample.order_id, sample.line_no
    ))?;
    assert_eq!(cents(&rows[0]["amount"]), sample.amount_cents);
    assert_eq!(rows[0]["item_count"], sample.items.len());
    let items: Vec<(String, i64, i64)> = rows[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_string(),
                i["qty"].as_i64().unwrap(),
                cents(&i["price"]),
            )
        })
        .collect();
    assert_eq!(items, sample.items);

    // Gold, computed plainly.
    let mut revenue: BTreeMap<(String, String), (i64, i64, BTreeSet<String>)> = BTreeMap::new();
    let mut units: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for line in &clean {
        let entry = revenue
            .entry((day_of(line.ordered_at_ms), line.country.clone()))
            .or_default();
        entry.0 += 1;
        entry.1 += line.amount_cents;
        entry.2.insert(line.customer.clone());
        let hour = (line.ordered_at_ms * 1000).div_euclid(HOUR_US) * HOUR_US;
        for (sku, qty, _) in &line.items {
            *units.entry((hour, sku.clone())).or_default() += qty;
        }
    }

    orders.lake(&["compact", "--all", "--min-input-files", "2"])?;
    orders.lake(&["maintain", "all"])?;
    let status = run_lake_ok(
        &["--pipeline", &orders.dir(), "status", "--format", "json"],
        orders.catalog.lake_env(Role::Reader),
    )?;
    let status: Vec<Value> = serde_json::from_slice(&status.stdout)?;
    for gold in ["gold.revenue_by_day", "gold.units_by_hour"] {
        let row = status
            .iter()
            .find(|r| r["table"] == gold)
            .with_context(|| format!("{gold} not in {status:?}"))?;
        assert_eq!(row["source"], "silver.orders_clean", "{row}");
        assert_eq!(row["behind_commits"], 0, "{row}");
    }

    // Trino reads the gold tables; every value equals the computation.
    let trino = Trino::from_env();
    let catalog_name = Kafka::unique("orders_catalog").replace('-', "_");
    trino
        .create_catalog(
            &catalog_name,
            &orders.catalog,
            &orders.catalog.keys().reader,
        )
        .await?;
    let rows = trino
        .query(&format!(
            "SELECT CAST(\"day\" AS varchar), country, lines, CAST(revenue AS varchar), customers \
             FROM {catalog_name}.gold.revenue_by_day"
        ))
        .await?;
    let seen: BTreeMap<(String, String), (i64, i64, i64)> = rows
        .rows
        .iter()
        .map(|r| {
            (
                (
                    r[0].as_str().unwrap().to_string(),
                    r[1].as_str().unwrap().to_string(),
                ),
                (r[2].as_i64().unwrap(), cents(&r[3]), r[4].as_i64().unwrap()),
            )
        })
        .collect();
    let expected: BTreeMap<(String, String), (i64, i64, i64)> = revenue
        .iter()
        .map(|(k, (lines, cents, customers))| (k.clone(), (*lines, *cents, customers.len() as i64)))
        .collect();
    assert_eq!(seen, expected);
    let rows = trino
        .query(&format!(
            "SELECT \"hour\", sku, units FROM {catalog_name}.gold.units_by_hour"
        ))
        .await?;
    let seen: BTreeMap<(i64, String), i64> = rows
        .rows
        .iter()
        .map(|r| {
            (
                (micros(&r[0]), r[1].as_str().unwrap().to_string()),
                r[2].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, units);
    let silver = trino
        .query(&format!(
            "SELECT count(*), sum(cardinality(items)) FROM {catalog_name}.silver.orders_clean"
        ))
        .await?;
    assert_eq!(silver.rows[0][0].as_i64(), Some(clean.len() as i64));
    let items: usize = clean.iter().map(|l| l.items.len()).sum();
    assert_eq!(silver.rows[0][1].as_i64(), Some(items as i64));
    trino.drop_catalog(&catalog_name).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dataset_toml_evolves_the_tables_and_refuses_what_would_break_them() -> Result<()> {
    let orders = Orders::start().await?;
    let end_ms = jiff::Timestamp::now().as_millisecond();
    let mut dice = Dice(23);
    let before = lines(0, 300, end_ms, &mut dice);
    orders.feed(&write_file(orders.files.path(), "v1.jsonl", &before, &[])?)?;

    // v2: an optional field, and silver selects it.
    write_orders(
        orders.pipeline.path(),
        &orders.topic,
        "coupon = \"string\"\n",
        &SILVER.replace("       currency,", "       currency,\n       coupon,"),
    )?;
    let mut after = lines(10_000, 200, end_ms, &mut dice);
    for line in after.iter_mut() {
        line.coupon = Some(format!("C{}", line.line_no));
    }
    orders.feed(&write_file(orders.files.path(), "v2.jsonl", &after, &[])?)?;
    let coupons = orders.sql(
        "SELECT coupon, count(*) AS n FROM silver.orders_clean GROUP BY coupon ORDER BY coupon",
    )?;
    let clean_after = after
        .iter()
        .filter(|l| l.amount_cents > 0 && l.currency == "EUR")
        .count();
    let clean_before = before
        .iter()
        .filter(|l| l.amount_cents > 0 && l.currency == "EUR")
        .count();
    let with_coupon: i64 = coupons
        .iter()
        .filter(|r| r.get("coupon").is_some())
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    let without: i64 = coupons
        .iter()
        .filter(|r| r.get("coupon").is_none())
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(with_coupon, clean_after as i64, "{coupons:?}");
    assert_eq!(without, clean_before as i64, "{coupons:?}");
    assert_eq!(
        orders.count("bronze.orders_raw")? as usize,
        before.len() + after.len() + before.len() / 50 + after.len() / 50
    );

    // The upkeep the dataset declares reaches its tables, also on a run
    // with nothing new to read, and leaves when no longer declared.
    let toml = orders.pipeline.path().join("datasets/orders/dataset.toml");
    let declared = std::fs::read_to_string(&toml)?;
    std::fs::write(
        &toml,
        declared.replace(
            "[silver]\n",
            "[silver]\nretention = \"400d\"\ntarget_file_size = \"64MB\"\n",
        ),
    )?;
    orders.lake(&["transform", "all"])?;
    let silver = orders.properties("silver.orders_clean").await?;
    assert_eq!(
        silver.get("lake.retention").map(String::as_str),
        Some("400d")
    );
    assert_eq!(
        silver
            .get("write.target-file-size-bytes")
            .map(String::as_str),
        Some("64000000")
    );
    let quarantine = orders.properties("silver.orders_quarantine").await?;
    assert_eq!(
        quarantine.get("lake.retention").map(String::as_str),
        Some("400d")
    );
    let bronze = orders.properties("bronze.orders_raw").await?;
    assert_eq!(bronze.get("lake.retention"), None);
    let dry = orders.lake(&["compact", "silver.orders_clean", "--dry-run"])?;
    assert!(dry.contains("towards 64.0 MB files"), "{dry}");
    std::fs::write(
        &toml,
        declared.replace("[silver]\n", "[silver]\ntarget_file_size = \"32MB\"\n"),
    )?;
    orders.lake(&["transform", "silver"])?;
    let silver = orders.properties("silver.orders_clean").await?;
    assert_eq!(silver.get("lake.retention"), None);
    assert_eq!(
        silver
            .get("write.target-file-size-bytes")
            .map(String::as_str),
        Some("32000000")
    );

    // v3: line_no becomes a string — refused before anything is written.
    write_orders(
        orders.pipeline.path(),
        &orders.topic,
        "coupon = \"string\"\n",
        &SILVER.replace("       currency,", "       currency,\n       coupon,"),
    )?;
    edit(
        &toml,
        "line_no = \"int not null\"",
        "line_no = \"string not null\"",
    )?;
    let rows_before = orders.sql("SELECT count(*) AS n FROM bronze.orders_raw")?;
    let dir = orders.dir();
    let out = run_lake_env(
        &[
            "--pipeline",
            &dir,
            "ingest",
            "orders",
            "--until-caught-up",
            "--brokers",
            orders.kafka.brokers(),
            "--group-id",
            &orders.group,
        ],
        orders.catalog.lake_env(Role::Writer),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "the narrowing was applied:\n{stderr}"
    );
    assert!(
        stderr.contains("bronze.orders_raw cannot follow")
            && stderr.contains("nothing was written")
            && stderr.contains("`line_no` is int in the table and string in the declaration"),
        "{stderr}"
    );
    assert_eq!(
        orders.sql("SELECT count(*) AS n FROM bronze.orders_raw")?,
        rows_before
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bronze_without_raw_records_leaves_the_column_out_and_gains_it_back() -> Result<()> {
    let orders = Orders::start().await?;
    let toml = orders.pipeline.path().join(ORDERS_TOML);
    let declared = std::fs::read_to_string(&toml)?;
    // The codecs the dataset declares travel with the first phase: every
    // writer of a table compresses as its declaration says.
    std::fs::write(
        &toml,
        declared
            .replace(
                "[bronze]\n",
                "[bronze]\nraw = false\ncompression = \"lz4\"\n",
            )
            .replace("[silver]\n", "[silver]\ncompression = \"snappy\"\n"),
    )?;
    let end_ms = jiff::Timestamp::now().as_millisecond();
    let mut dice = Dice(31);
    let clean = |lines: &[Line]| {
        lines
            .iter()
            .filter(|l| l.amount_cents > 0 && l.currency == "EUR")
            .count() as i64
    };

    // A table made with `raw = false` has no `_raw`; silver is the same.
    let first = lines(0, 200, end_ms, &mut dice);
    orders.feed(&write_file(orders.files.path(), "v1.jsonl", &first, &[])?)?;
    let bronze = orders.schema("bronze.orders_raw").await?;
    assert!(bronze.field_by_name("_raw").is_none(), "{bronze:?}");
    assert!(bronze.field_by_name("_kafka_offset").is_some());
    let first_copies = (first.len() + first.len() / 50) as i64;
    assert_eq!(orders.count("bronze.orders_raw")?, first_copies);
    assert_eq!(orders.count("silver.orders_clean")?, clean(&first));
    let codec = "write.parquet.compression-codec";
    let bronze_props = orders.properties("bronze.orders_raw").await?;
    assert_eq!(bronze_props.get(codec).map(String::as_str), Some("lz4"));
    let lz4_files = orders.codecs("bronze.orders_raw").await?;
    assert_eq!(lz4_files.keys().collect::<Vec<_>>(), ["lz4"]);
    let snappy_files = orders.codecs("silver.orders_clean").await?;
    assert_eq!(snappy_files.keys().collect::<Vec<_>>(), ["snappy"]);

    // Raw records kept again: the table gains `_raw` as an optional column,
    // null in the rows written without it, each new record byte for byte.
    std::fs::write(&toml, &declared)?;
    let second = lines(10_000, 100, end_ms, &mut dice);
    let file = write_file(orders.files.path(), "v2.jsonl", &second, &[])?;
    orders.feed(&file)?;
    let bronze = orders.schema("bronze.orders_raw").await?;
    let raw = bronze.field_by_name("_raw").context("bronze gained _raw")?;
    assert!(!raw.required, "{raw:?}");
    let second_copies = (second.len() + second.len() / 50) as i64;
    assert_eq!(
        orders.count("bronze.orders_raw")?,
        first_copies + second_copies
    );
    let nulls = orders.sql("SELECT count(*) AS n FROM bronze.orders_raw WHERE _raw IS NULL")?;
    assert_eq!(nulls[0]["n"].as_i64(), Some(first_copies));
    let mut kept: Vec<String> = orders
        .sql("SELECT _raw FROM bronze.orders_raw WHERE _raw IS NOT NULL")?
        .iter()
        .map(|row| row["_raw"].as_str().map(String::from).context("_raw text"))
        .collect::<Result<_>>()?;
    let mut sent: Vec<String> = std::fs::read_to_string(&file)?
        .lines()
        .map(String::from)
        .collect();
    kept.sort();
    sent.sort();
    assert_eq!(kept.len() as i64, second_copies);
    assert_eq!(kept, sent);
    assert_eq!(
        orders.count("silver.orders_clean")?,
        clean(&first) + clean(&second)
    );
    // No longer declared, the codecs leave the tables: new files are
    // zstd, the writers' default, and the older ones stay as they are.
    let bronze_props = orders.properties("bronze.orders_raw").await?;
    assert_eq!(bronze_props.get(codec), None);
    for (table, before) in [
        ("bronze.orders_raw", &lz4_files),
        ("silver.orders_clean", &snappy_files),
    ] {
        let now = orders.codecs(table).await?;
        let (old, kept) = before.iter().next().context("files")?;
        let codecs: Vec<&str> = now.keys().map(String::as_str).collect();
        assert_eq!(codecs, [old.as_str(), "zstd"], "{table}");
        assert_eq!(now.get(old), Some(kept), "{table}");
    }

    // A table that has `_raw` keeps filling it whatever the declaration
    // says: dropping the column is its owner's call, not a flag's.
    std::fs::write(
        &toml,
        declared.replace("[bronze]\n", "[bronze]\nraw = false\n"),
    )?;
    let third = lines(20_000, 50, end_ms, &mut dice);
    orders.feed(&write_file(orders.files.path(), "v3.jsonl", &third, &[])?)?;
    let third_copies = (third.len() + third.len() / 50) as i64;
    let kept = orders.sql("SELECT count(*) AS n FROM bronze.orders_raw WHERE _raw IS NOT NULL")?;
    assert_eq!(kept[0]["n"].as_i64(), Some(second_copies + third_copies));
    Ok(())
}

const ORDERS_TOML: &str = "datasets/orders/dataset.toml";

/// Replaces `from` by `to` in the file at `path`.
fn edit(path: &Path, from: &str, to: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    ensure!(text.contains(from), "{} has no `{from}`", path.display());
    Ok(std::fs::write(path, text.replace(from, to))?)
}

/// How a case breaks a good pipeline directory.
type Breaks = Box<dyn Fn(&Path) -> Result<()>>;

/// Six broken pipelines, six errors that each name the file at fault.
#[test]
fn validate_names_the_file_and_line_of_each_mistake() -> Result<()> {
    let cases: Vec<(&str, Breaks, &str, &str)> = vec![
        (
            "an unknown type",
            Box::new(|dir| {
                edit(
                    &dir.join(ORDERS_TOML),
                    "\"decimal(12, 2) not null\"",
                    "\"money not null\"",
                )
            }),
            "datasets/orders/dataset.toml:14:",
            "unknown type `money`",
        ),
        (
            "a key field not in the schema",
            Box::new(|dir| {
                edit(
                    &dir.join(ORDERS_TOML),
                    "key = [\"order_id\", \"line_no\"]",
                    "key = [\"order_id\", \"line\"]",
                )
            }),
            "datasets/orders/dataset.toml:3:",
            "key field `line` is not in [schema]",
        ),
        (
            "an event time not in the schema",
            Box::new(|dir| {
                edit(
                    &dir.join(ORDERS_TOML),
                    "field = \"ordered_at\"",
                    "field = \"placed_at\"",
                )
            }),
            "datasets/orders/dataset.toml:6:",
            "event_time.field `placed_at` is not a top-level column of [schema]",
        ),
        (
            "a model reading a missing column",
            Box::new(|dir| {
                edit(
                    &dir.join("datasets/orders/silver.sql"),
                    "       currency,",
                    "       currency,\n       discount,",
                )
            }),
            "datasets/orders/silver.sql:",
            "does not plan against the bronze schema",
        ),
        (
            "two datasets writing one table",
            Box::new(|dir| {
                let copy = dir.join("datasets/returns");
                std::fs::create_dir_all(&copy)?;
                let toml = std::fs::read_to_string(dir.join("datasets/orders/dataset.toml"))?
                    .replace("topic = \"orders\"", "topic = \"returns\"")
                    + "\n[bronze]\ntable = \"bronze.orders_raw\"\n";
                let toml = toml.replacen("[bronze]\npartition = \"day\"\n", "", 1);
                std::fs::write(copy.join("dataset.toml"), toml)?;
                Ok(std::fs::write(copy.join("silver.sql"), SILVER)?)
            }),
            "datasets/returns/dataset.toml:",
            "bronze.orders_raw is written by dataset `orders` (its bronze table) and by this one (its bronze table)",
        ),
        (
            "a gold model without a grain",
            Box::new(|dir| {
                let sql = dir.join("datasets/orders/gold/units_by_hour.sql");
                let text = std::fs::read_to_string(&sql)?
                    .replace(", grain = \\\"hour\\\"", "")
                    .replace(", grain = \"hour\"", "");
                Ok(std::fs::write(sql, text)?)
            }),
            "datasets/orders/gold/units_by_hour.sql:2:",
            "the header names no grain (hour or day)",
        ),
    ];
    let mut messages = BTreeSet::new();
    for (what, breaks, file, message) in &cases {
        let dir = tempfile::tempdir()?;
        write_orders(dir.path(), "orders", "", SILVER)?;
        breaks(dir.path())?;
        let path = dir.path().display().to_string();
        let out = run_lake_env(
            &["--pipeline", &path, "validate"],
            Vec::<(String, String)>::new(),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A pipeline that does not parse or does not check is a usage error.
        ensure!(
            out.status.code() == Some(2),
            "{what}: validate ended with {} instead of 2:\n{stderr}",
            out.status
        );
        let line = stderr
            .lines()
            .find(|l| l.contains(message))
            .with_context(|| format!("{what}: no `{message}` in\n{stderr}"))?;
        ensure!(
            line.contains(&format!("{path}/{file}")),
            "{what}: `{line}` does not name {file}"
        );
        messages.insert(line.replace(&path, ""));
    }
    assert_eq!(messages.len(), cases.len(), "{messages:#?}");
    Ok(())
}

/// `lake init --example all` then quickstart on that directory makes what the
/// built-in quickstart makes, from the same seed.
#[test]
fn quickstart_on_init_s_pipeline_equals_the_built_in_one() -> Result<()> {
    let work = tempfile::tempdir()?;
    let pipeline = work.path().join("pipeline").display().to_string();
    let out = run_lake_ok(
        &["init", "--example", "all", &pipeline],
        Vec::<(String, String)>::new(),
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.matches("wrote ").count(), 9, "{said}");
    let again = run_lake_env(&["init", &pipeline], Vec::<(String, String)>::new())?;
    assert!(!again.status.success(), "init overwrote files");

    let mut tables = Vec::new();
    for (name, extra) in [("built-in", None), ("from-files", Some(pipeline.as_str()))] {
        let data = work.path().join(name).display().to_string();
        let mut args = Vec::new();
        if let Some(dir) = extra {
            args.extend(["--pipeline", dir]);
        }
        args.extend([
            "quickstart",
            "--records",
            "2000",
            "--seed",
            "5",
            "--data-dir",
            &data,
        ]);
        run_lake_ok(&args, Vec::<(String, String)>::new())?;
        let embedded = format!("--embedded={data}");
        let out = run_lake_ok(
            &["tables", "--format", "json", &embedded],
            Vec::<(String, String)>::new(),
        )?;
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        let counts: BTreeMap<String, i64> = rows
            .iter()
            .map(|r| {
                (
                    r["table"].as_str().unwrap().to_string(),
                    r["rows"].as_i64().unwrap(),
                )
            })
            .collect();
        let totals = run_lake_ok(
            &[
                "sql",
                "--format",
                "json",
                &embedded,
                "SELECT (SELECT sum(tweet_count) FROM gold.popular_hashtags_by_hour) AS tags, \
                 (SELECT sum(tweet_count) FROM gold.tweet_volume_by_region) AS tweets, \
                 (SELECT sum(test_count) FROM gold.speedtest_agg) AS tests, \
                 (SELECT count(DISTINCT tweet_id) FROM silver.tweets_clean) AS ids",
            ],
            Vec::<(String, String)>::new(),
        )?;
        let totals: Value = serde_json::from_slice(&totals.stdout)?;
        tables.push((counts, totals));
    }
    let (built_in, from_files) = (&tables[0], &tables[1]);
    if built_in.0.keys().ne(from_files.0.keys()) {
        bail!(
            "different tables: {:?} against {:?}",
            built_in.0,
            from_files.0
        );
    }
    for (table, rows) in &built_in.0 {
        if !table.starts_with("gold.") {
            assert_eq!(from_files.0[table], *rows, "{table}");
        }
    }
    assert_eq!(built_in.1, from_files.1);
    assert!(
        built_in.1[0]["tests"].as_i64().unwrap_or(0) > 1000,
        "{}",
        built_in.1
    );
    Ok(())
}
