//! Trino reads what lake writes, and lake reads what Trino writes: a real
//! Kafka → bronze → silver → gold run with faults injected, then every table
//! through the Trino of `tests/run` (its Iceberg connector on lake's REST
//! catalog, configured from the shipped trino/catalog/iceberg_catalog.properties),
//! the seeds' queries as docs/trino-dbeaver.md gives them, time travel and
//! metadata tables, the reader key's limits, maintenance on both sides, and
//! DBeaver's path through Trino's JDBC driver.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail, ensure};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, DatasetTopics, Kafka, QueryError, Rows, Services, Trino, run_java,
    run_lake_ok,
};
use serde_json::Value;

/// The catalog name the seeds use; the shipped catalog file is named after it.
const CATALOG: &str = "iceberg_catalog";

/// The seeds' queries, exactly as docs/trino-dbeaver.md prints them.
/// `<snapshot_id>` and `<time>` stand for a snapshot of silver.tweets_clean
/// and a moment between its first two commits.
struct DocQuery {
    sql: &'static str,
    /// How the test holds Trino's answer against `lake sql`'s.
    check: Check,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The same rows, in any order (floating point to 1e-9 relative).
    SameRows,
    /// The same columns and as many rows (`LIMIT` picks any rows).
    SameShape,
    /// Trino only: the statement runs and returns rows.
    Trino,
}

const SEED_002_QUERIES: &[DocQuery] = &[
    DocQuery {
        sql: "SELECT * FROM iceberg_catalog.bronze.speedtest_raw LIMIT 10",
        check: Check::SameShape,
    },
    DocQuery {
        sql: "SELECT * FROM iceberg_catalog.silver.speedtest_clean LIMIT 10",
        check: Check::SameShape,
    },
    DocQuery {
        sql: "SELECT \n    date,\n    location,\n    avg_upload_speed,\n    avg_download_speed,\n    avg_latency\nFROM iceberg_catalog.gold.speedtest_agg\nWHERE date = CURRENT_DATE",
        check: Check::SameRows,
    },
];

const SEED_000_QUERIES: &[DocQuery] = &[
    // Real-time trends: the five top hashtags of each hour.
    DocQuery {
        sql: "SELECT \"hour\", \"rank\", hashtag, tweet_count, unique_users\nFROM iceberg_catalog.gold.popular_hashtags_by_hour\nWHERE \"rank\" <= 5\nORDER BY \"hour\" DESC, \"rank\", hashtag",
        check: Check::SameRows,
    },
    // Regional activity.
    DocQuery {
        sql: "SELECT region, sum(tweet_count) AS tweets, max(unique_users) AS peak_hourly_users\nFROM iceberg_catalog.gold.tweet_volume_by_region\nGROUP BY region\nORDER BY tweets DESC",
        check: Check::SameRows,
    },
    // Language-specific metrics.
    DocQuery {
        sql: "SELECT lang, sum(tweet_count) AS tweets, sum(positive_count) AS positive,\n       sum(neutral_count) AS neutral, sum(negative_count) AS negative,\n       sum(avg_engagement * tweet_count) / sum(tweet_count) AS avg_engagement\nFROM iceberg_catalog.gold.tweet_metrics_by_language\nGROUP BY lang\nORDER BY tweets DESC",
        check: Check::SameRows,
    },
    // User activity by day.
    DocQuery {
        sql: "SELECT \"day\", count(*) AS active_users, sum(tweet_count) AS tweets,\n       sum(total_engagement) AS engagement\nFROM iceberg_catalog.gold.active_users_by_day\nGROUP BY \"day\"\nORDER BY \"day\"",
        check: Check::SameRows,
    },
];

const TIME_TRAVEL_QUERIES: &[DocQuery] = &[
    DocQuery {
        sql: "SELECT snapshot_id, committed_at, operation, summary['added-records'] AS added\nFROM iceberg_catalog.silver.\"tweets_clean$snapshots\"\nORDER BY committed_at DESC",
        check: Check::Trino,
    },
    DocQuery {
        sql: "SELECT count(*) FROM iceberg_catalog.silver.tweets_clean FOR VERSION AS OF <snapshot_id>",
        check: Check::Trino,
    },
    DocQuery {
        sql: "SELECT count(*) FROM iceberg_catalog.silver.tweets_clean\nFOR TIMESTAMP AS OF TIMESTAMP '<time>'",
        check: Check::Trino,
    },
];

/// One test's lake: its catalog, topics and group, and the Trino catalogs
/// on it.
struct Stack {
    catalog: CatalogProcess,
    topics: DatasetTopics,
    trino: Trino,
    group: String,
    /// The catalog acting with the writer key.
    writer: String,
}

impl Stack {
    async fn start() -> Result<Self> {
        let services = Services::from_env();
        Ok(Stack {
            catalog: CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?,
            topics: DatasetTopics::create(4).await?,
            group: Kafka::unique("bronze"),
            writer: Kafka::unique("iceberg_writer").replace('-', "_"),
            trino: Trino::from_env(),
        })
    }

    fn lake(&self, args: &[&str]) -> Result<String> {
        let out = run_lake_ok(args, self.catalog.lake_env(Role::Writer))?;
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// Generates `count` records of each dataset whose event times end now,
    /// with every kind of fault, and ingests them.
    fn produce_and_ingest(&self, count: u64, seed: u64) -> Result<()> {
        for dataset in ["tweets", "speedtest"] {
            let args = support::generate_today(
                &self.topics,
                dataset,
                count,
                seed,
                400,
                &[
                    ("--duplicates", "0.02"),
                    ("--malformed", "0.01"),
                    ("--late", "0.02"),
                    ("--invalid", "0.02"),
                ],
            );
            self.lake(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        let mut args = vec!["ingest", "tweets", "speedtest", "--until-caught-up"];
        let routes = self.topics.ingest_args();
        args.extend(routes.iter().map(String::as_str));
        args.extend(["--group-id", &self.group]);
        self.lake(&args)?;
        Ok(())
    }

    /// `lake sql` as the reader, one JSON object per row.
    fn lake_sql(
        &self,
        sql: &str,
        as_of: Option<&str>,
    ) -> Result<Vec<serde_json::Map<String, Value>>> {
        let mut args = vec!["sql", "--format", "jsonl"];
        if let Some(as_of) = as_of {
            args.extend(["--as-of", as_of]);
        }
        args.push(sql);
        lake_testkit::run_lake_jsonl(&args, self.catalog.lake_env(Role::Reader))
    }

    fn lake_count(&self, table: &str, as_of: Option<&str>) -> Result<i64> {
        let rows = self.lake_sql(&format!("SELECT count(*) AS n FROM {table}"), as_of)?;
        rows.first()
            .and_then(|row| row["n"].as_i64())
            .with_context(|| format!("no count from lake sql for {table}: {rows:?}"))
    }

    /// `lake tables`: rows, files and size (MB) per table.
    fn lake_tables(&self) -> Result<BTreeMap<String, (i64, i64, f64)>> {
        let out = run_lake_ok(
            &["tables", "--format", "json"],
            self.catalog.lake_env(Role::Reader),
        )?;
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r["table"].as_str().unwrap().to_string(),
                    (
                        r["rows"].as_i64().unwrap(),
                        r["files"].as_i64().unwrap(),
                        r["size_mb"].as_f64().unwrap(),
                    ),
                )
            })
            .collect())
    }

    /// `lake snapshots TABLE`: (id, operation, committed ms, deleted rows), oldest first.
    fn lake_snapshots(&self, table: &str) -> Result<Vec<(i64, String, i64, i64)>> {
        let out = run_lake_ok(
            &["snapshots", table, "--format", "json"],
            self.catalog.lake_env(Role::Reader),
        )?;
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r["snapshot_id"].as_i64().context("snapshot_id")?,
                    r["operation"].as_str().context("operation")?.to_string(),
                    micros(r["committed_at"].as_str().context("committed_at")?)? / 1000,
                    r["deleted_rows"].as_i64().context("deleted_rows")?,
                ))
            })
            .collect()
    }

    async fn trino(&self, sql: &str) -> Result<Rows> {
        self.trino.query(sql).await
    }

    async fn trino_count(&self, catalog: &str, table: &str) -> Result<i64> {
        let rows = self
            .trino(&format!("SELECT count(*) FROM {catalog}.{table}"))
            .await?;
        rows.scalar()?.as_i64().context("a count")
    }

    /// A count and a checksum of the first column, computed from the data
    /// files (a bare count(*) may be answered from the manifests alone).
    async fn trino_scan(&self, table: &str) -> Result<(i64, String)> {
        let columns = self
            .trino(&format!("SHOW COLUMNS FROM {CATALOG}.{table}"))
            .await?;
        let first = columns.rows[0][0]
            .as_str()
            .context("a column name")?
            .to_string();
        let rows = self
            .trino(&format!(
                "SELECT count(*), to_hex(checksum(\"{first}\")) FROM {CATALOG}.{table}"
            ))
            .await?;
        let row = &rows.rows[0];
        Ok((
            row[0].as_i64().context("count")?,
            row[1].as_str().unwrap_or("null").to_string(),
        ))
    }

    /// Current snapshot of every table, as lake's REST client loads it.
    async fn current_snapshots(&self) -> Result<BTreeMap<String, Option<i64>>> {
        use iceberg::Catalog;
        let catalog = self.catalog.rest_catalog(Role::Reader).await?;
        let mut current = BTreeMap::new();
        for table in self.lake_tables()?.keys() {
            let ident = iceberg::TableIdent::from_strs(table.split('.'))?;
            let loaded = catalog.load_table(&ident).await?;
            current.insert(table.clone(), loaded.metadata().current_snapshot_id());
        }
        Ok(current)
    }
}

/// RFC 3339 or Trino's `2026-01-01 10:00:00.000000 UTC` as epoch microseconds.
fn micros(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_microsecond());
    }
    let civil = text
        .trim_end_matches(" UTC")
        .trim_end_matches('Z')
        .trim_end_matches("+00:00")
        .replacen(' ', "T", 1);
    let at: jiff::civil::DateTime = civil
        .parse()
        .with_context(|| format!("not a time: {text}"))?;
    Ok(at
        .to_zoned(jiff::tz::TimeZone::UTC)?
        .timestamp()
        .as_microsecond())
}

/// One row as both engines are compared on: the exact cells (sorted on)
/// and the floating-point ones.
type Row = (Vec<String>, Vec<f64>);

/// A value of a column of Trino type `kind`, from Trino's JSON, lake's JSON
/// or the JDBC driver's text, in one form.
fn cell(kind: &str, value: Option<&Value>) -> Result<(Option<String>, Option<f64>)> {
    let float = kind.starts_with("double") || kind.starts_with("real");
    let value = match value {
        None | Some(Value::Null) => {
            return Ok(if float {
                (None, Some(f64::NAN))
            } else {
                (Some("null".into()), None)
            });
        }
        Some(v) => v,
    };
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if float {
        let number = match value {
            Value::Number(n) => n.as_f64().context("a double")?,
            _ => text
                .parse()
                .with_context(|| format!("not a double: {text}"))?,
        };
        return Ok((None, Some(number)));
    }
    if kind.starts_with("timestamp") {
        return Ok((Some(micros(&text)?.to_string()), None));
    }
    if kind.starts_with("decimal") && text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        return Ok((Some(trimmed.to_string()), None));
    }
    Ok((Some(text), None))
}

fn row_of(kinds: &[String], values: &[Option<&Value>]) -> Result<Row> {
    let mut row: Row = (Vec::new(), Vec::new());
    for (kind, value) in kinds.iter().zip(values) {
        match cell(kind, *value)? {
            (Some(exact), _) => row.0.push(exact),
            (None, Some(float)) => row.1.push(float),
            _ => unreachable!(),
        }
    }
    Ok(row)
}

/// Trino's rows in comparable form.
fn trino_rows(rows: &Rows) -> Result<Vec<Row>> {
    let kinds: Vec<String> = rows.columns.iter().map(|c| c.r#type.clone()).collect();
    let mut out: Vec<Row> = rows
        .rows
        .iter()
        .map(|r| row_of(&kinds, &r.iter().map(Some).collect::<Vec<_>>()))
        .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `lake sql`'s rows in comparable form, typed by Trino's columns (JSON
/// lines leave out null values).
fn lake_rows(columns: &Rows, rows: &[serde_json::Map<String, Value>]) -> Result<Vec<Row>> {
    let kinds: Vec<String> = columns.columns.iter().map(|c| c.r#type.clone()).collect();
    let mut out: Vec<Row> = rows
        .iter()
        .map(|r| {
            let values: Vec<Option<&Value>> =
                columns.columns.iter().map(|c| r.get(&c.name)).collect();
            row_of(&kinds, &values)
        })
        .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Where two sorted row sets differ, or `None`.
fn differences(trino: &[Row], lake: &[Row]) -> Option<String> {
    if trino.len() != lake.len() {
        let a: BTreeSet<&Vec<String>> = trino.iter().map(|r| &r.0).collect();
        let b: BTreeSet<&Vec<String>> = lake.iter().map(|r| &r.0).collect();
        return Some(format!(
            "{} rows in Trino against {} in lake; only in Trino: {:?}; only in lake: {:?}",
            trino.len(),
            lake.len(),
            a.difference(&b).take(3).collect::<Vec<_>>(),
            b.difference(&a).take(3).collect::<Vec<_>>()
        ));
    }
    for (x, y) in trino.iter().zip(lake) {
        if x.0 != y.0 || !support::floats_agree(&x.1, &y.1) {
            return Some(format!("Trino {x:?} against lake {y:?}"));
        }
    }
    None
}

/// Every table lake made, per namespace.
const GOLD: [&str; 5] = [
    "gold.active_users_by_day",
    "gold.popular_hashtags_by_hour",
    "gold.speedtest_agg",
    "gold.tweet_metrics_by_language",
    "gold.tweet_volume_by_region",
];

/// A statement the reader key may not run: the catalog's `403`, naming the
/// key's role and what it may not do.
fn expect_denied(
    outcome: std::result::Result<Rows, QueryError>,
    what: &str,
    action: &str,
) -> Result<()> {
    match outcome {
        Ok(rows) => bail!("{what} with the reader key succeeded: {rows:?}"),
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains("ForbiddenException")
                    && text.contains("has the reader role, which may not")
                    && text.contains(action),
                "{what}: not the catalog's access-denied error naming `{action}`: {text}"
            );
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trino_reads_every_table_lake_writes_and_lake_reads_what_trino_writes() -> Result<()> {
    let stack = Stack::start().await?;
    stack.trino.drop_catalog(CATALOG).await?;
    stack
        .trino
        .create_catalog(CATALOG, &stack.catalog, &stack.catalog.keys().reader)
        .await?;
    stack
        .trino
        .create_catalog(&stack.writer, &stack.catalog, &stack.catalog.keys().writer)
        .await?;

    // Two rounds, so silver has more than one snapshot to travel back to.
    stack.produce_and_ingest(4_000, 1)?;
    stack.lake(&["transform", "all"])?;
    stack.produce_and_ingest(2_000, 2)?;
    stack.lake(&["transform", "all"])?;
    let tables = stack.lake_tables()?;
    let names: Vec<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bronze.speedtest_raw",
            "bronze.speedtest_raw_rejects",
            "bronze.tweets_raw",
            "bronze.tweets_raw_rejects",
            "gold.active_users_by_day",
            "gold.popular_hashtags_by_hour",
            "gold.speedtest_agg",
            "gold.tweet_metrics_by_language",
            "gold.tweet_volume_by_region",
            "silver.speedtest_clean",
            "silver.speedtest_quarantine",
            "silver.tweets_clean",
            "silver.tweets_quarantine",
        ]
    );

    eprintln!("lake tables (rows, files, MB): {tables:?}");

    // Every table through Trino with the reader key: lake's row counts.
    for (table, (rows, _, _)) in &tables {
        assert!(*rows > 0, "{table} is empty");
        assert_eq!(stack.trino_count(CATALOG, table).await?, *rows, "{table}");
        assert_eq!(stack.lake_count(table, None)?, *rows, "{table}");
    }

    // Every gold table row by row.
    let mut gold_content = BTreeMap::new();
    for table in GOLD {
        let trino = stack
            .trino(&format!("SELECT * FROM {CATALOG}.{table}"))
            .await?;
        let lake = stack.lake_sql(&format!("SELECT * FROM {table}"), None)?;
        let (t, l) = (trino_rows(&trino)?, lake_rows(&trino, &lake)?);
        if let Some(diff) = differences(&t, &l) {
            bail!("{table}: Trino and lake sql differ: {diff}");
        }
        gold_content.insert(table, (trino, l));
    }

    // The seeds' queries, as the docs print them.
    let doc = std::fs::read_to_string(lake_testkit::repo_root().join("docs/trino-dbeaver.md"))?;
    let silver_snapshots = stack.lake_snapshots("silver.tweets_clean")?;
    ensure!(silver_snapshots.len() >= 2, "{silver_snapshots:?}");
    let (first, second) = (&silver_snapshots[0], &silver_snapshots[1]);
    let between_ms = (first.2 + second.2) / 2;
    let between = jiff::Timestamp::from_millisecond(between_ms)?;
    for query in SEED_002_QUERIES
        .iter()
        .chain(SEED_000_QUERIES)
        .chain(TIME_TRAVEL_QUERIES)
    {
        ensure!(
            doc.contains(query.sql),
            "docs/trino-dbeaver.md does not print the tested query\n{}",
            query.sql
        );
        let sql = query
            .sql
            .replace("<snapshot_id>", &first.0.to_string())
            .replace(
                "<time>",
                &between.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            );
        let trino = stack.trino(&sql).await?;
        ensure!(!trino.rows.is_empty(), "no rows from\n{sql}");
        if query.check == Check::Trino {
            continue;
        }
        let lake = stack.lake_sql(&sql.replace(&format!("{CATALOG}."), ""), None)?;
        match query.check {
            Check::SameShape => {
                assert_eq!(trino.rows.len(), lake.len(), "{sql}");
                let names: BTreeSet<&str> = trino.columns.iter().map(|c| c.name.as_str()).collect();
                for row in &lake {
                    let keys: BTreeSet<&str> = row.keys().map(String::as_str).collect();
                    ensure!(
                        keys.is_subset(&names),
                        "{sql}: lake's {keys:?} against {names:?}"
                    );
                }
            }
            _ => {
                let (t, l) = (trino_rows(&trino)?, lake_rows(&trino, &lake)?);
                if let Some(diff) = differences(&t, &l) {
                    bail!("{sql}\nTrino and lake sql differ: {diff}");
                }
            }
        }
    }

    // Time travel: Trino's FOR VERSION / FOR TIMESTAMP AS OF and lake's --as-of.
    for table in [
        "silver.tweets_clean",
        "gold.popular_hashtags_by_hour",
        "bronze.tweets_raw",
    ] {
        let snapshots = stack.lake_snapshots(table)?;
        let oldest = snapshots[0].0;
        let trino = stack
            .trino(&format!(
                "SELECT count(*) FROM {CATALOG}.{table} FOR VERSION AS OF {oldest}"
            ))
            .await?;
        let lake = stack.lake_count(table, Some(&oldest.to_string()))?;
        assert_eq!(trino.scalar()?.as_i64(), Some(lake), "{table} at {oldest}");
    }
    let at = between.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
    let trino = stack
        .trino(&format!(
            "SELECT count(*) FROM {CATALOG}.silver.tweets_clean FOR TIMESTAMP AS OF TIMESTAMP '{at}'"
        ))
        .await?;
    let lake = stack.lake_count("silver.tweets_clean", Some(&between.to_string()))?;
    assert_eq!(trino.scalar()?.as_i64(), Some(lake));
    assert_eq!(
        lake,
        stack.lake_count("silver.tweets_clean", Some(&first.0.to_string()))?,
        "the time between the first two commits reads the first"
    );

    // Metadata tables against `lake snapshots` and `lake tables`.
    for (table, (rows, files, size_mb)) in &tables {
        let (ns, name) = table.split_once('.').unwrap();
        let snapshots = stack
            .trino(&format!(
                "SELECT snapshot_id, operation, to_unixtime(committed_at) * 1000 \
                 FROM {CATALOG}.{ns}.\"{name}$snapshots\" ORDER BY committed_at, snapshot_id"
            ))
            .await?;
        let trino: Vec<(i64, String, i64)> = snapshots
            .rows
            .iter()
            .map(|r| {
                (
                    r[0].as_i64().unwrap(),
                    r[1].as_str().unwrap().to_string(),
                    r[2].as_f64().unwrap().round() as i64,
                )
            })
            .collect();
        let lake: Vec<(i64, String, i64)> = stack
            .lake_snapshots(table)?
            .into_iter()
            .map(|(id, op, ms, _)| (id, op, ms))
            .collect();
        assert_eq!(trino, lake, "{table}: $snapshots against lake snapshots");

        let file_stats = stack
            .trino(&format!(
                "SELECT count(*), sum(record_count), sum(file_size_in_bytes) \
                 FROM {CATALOG}.{ns}.\"{name}$files\""
            ))
            .await?;
        let f = &file_stats.rows[0];
        assert_eq!(f[0].as_i64(), Some(*files), "{table}: $files");
        assert_eq!(f[1].as_i64(), Some(*rows), "{table}: $files records");
        let mb = f[2].as_f64().unwrap() / 1e6;
        assert!(
            (mb - size_mb).abs() <= 0.051,
            "{table}: {mb} MB against {size_mb}"
        );

        let partitions = stack
            .trino(&format!(
                "SELECT count(*), sum(record_count), sum(file_count) \
                 FROM {CATALOG}.{ns}.\"{name}$partitions\""
            ))
            .await?;
        let p = &partitions.rows[0];
        assert_eq!(p[1].as_i64(), Some(*rows), "{table}: $partitions records");
        assert_eq!(p[2].as_i64(), Some(*files), "{table}: $partitions files");
        let distinct = partition_count(&stack, table).await?;
        assert_eq!(p[0].as_i64(), Some(distinct as i64), "{table}: partitions");
    }

    // DBeaver's path: the JDBC driver browses the catalog and reads gold.
    let out = run_java(
        "TrinoBrowse",
        &Trino::jdbc_driver(),
        &[
            &stack.trino.jdbc_url(CATALOG),
            "dbeaver",
            "gold.speedtest_agg",
        ],
    )?;
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    let of = |kind: &str| -> Vec<Vec<&str>> {
        lines
            .iter()
            .filter(|l| l[0] == kind)
            .map(|l| l[1..].to_vec())
            .collect()
    };
    assert_eq!(of("catalog"), [vec![CATALOG]]);
    let schemas: BTreeSet<&str> = of("schema").iter().map(|s| s[0]).collect();
    for schema in ["bronze", "silver", "gold"] {
        assert!(schemas.contains(schema), "DBeaver sees {schemas:?}");
    }
    // Every table of lake's namespaces; `system` is the connector's own.
    let browsed: BTreeSet<String> = of("table")
        .iter()
        .filter(|t| t[0] != "system")
        .map(|t| t.join("."))
        .collect();
    let expected: BTreeSet<String> = tables.keys().cloned().collect();
    assert_eq!(browsed, expected, "the navigator lists every table");
    let (trino_agg, lake_agg) = &gold_content["gold.speedtest_agg"];
    let columns: Vec<Vec<&str>> = of("column");
    let names: Vec<&str> = columns.iter().map(|c| c[0]).collect();
    let trino_names: Vec<&str> = trino_agg.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, trino_names);
    let jdbc_rows: Vec<Row> = {
        let kinds: Vec<String> = trino_agg.columns.iter().map(|c| c.r#type.clone()).collect();
        let mut rows = of("row")
            .iter()
            .map(|values| {
                let json: Vec<Value> = values
                    .iter()
                    .map(|v| {
                        if *v == "NULL" {
                            Value::Null
                        } else {
                            Value::String(v.to_string())
                        }
                    })
                    .collect();
                row_of(&kinds, &json.iter().map(Some).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    if let Some(diff) = differences(&jdbc_rows, lake_agg) {
        bail!("gold.speedtest_agg through JDBC differs from lake sql: {diff}");
    }

    // The reader key cannot write: each attempt is refused by the catalog
    // and changes nothing.
    let before = stack.current_snapshots().await?;
    let insert = stack
        .trino
        .try_query(&format!(
            "INSERT INTO {CATALOG}.silver.speedtest_clean \
             SELECT * FROM {CATALOG}.silver.speedtest_clean LIMIT 1"
        ))
        .await?;
    expect_denied(insert, "INSERT", "commit to silver.speedtest_clean")?;
    let create = stack
        .trino
        .try_query(&format!("CREATE TABLE {CATALOG}.gold.scratch (id bigint)"))
        .await?;
    expect_denied(create, "CREATE TABLE", "create a table in gold")?;
    let drop = stack
        .trino
        .try_query(&format!("DROP TABLE {CATALOG}.gold.speedtest_agg"))
        .await?;
    expect_denied(drop, "DROP TABLE", "drop gold.speedtest_agg")?;
    assert_eq!(stack.current_snapshots().await?, before, "nothing changed");
    for (table, (rows, _, _)) in &tables {
        assert_eq!(stack.trino_count(CATALOG, table).await?, *rows, "{table}");
    }

    // The writer key can: Trino creates and fills tables, and lake reads them.
    let writer = &stack.writer;
    stack
        .trino(&format!(
            "CREATE TABLE {writer}.gold.analyst_notes (id bigint, note varchar)"
        ))
        .await?;
    stack
        .trino(&format!(
            "INSERT INTO {writer}.gold.analyst_notes VALUES (1, 'fast'), (2, 'exact')"
        ))
        .await?;
    let notes = stack.lake_sql("SELECT id, note FROM gold.analyst_notes ORDER BY id", None)?;
    assert_eq!(
        serde_json::to_value(&notes)?,
        serde_json::json!([{"id": 1, "note": "fast"}, {"id": 2, "note": "exact"}])
    );
    let ctas = "SELECT location, sum(test_count) AS tests, avg(avg_latency) AS latency \
                FROM gold.speedtest_agg GROUP BY location";
    stack
        .trino(&format!(
            "CREATE TABLE {writer}.gold.speed_by_location AS {}",
            ctas.replace("gold.", &format!("{writer}.gold."))
        ))
        .await?;
    let trino = stack
        .trino(&format!("SELECT * FROM {CATALOG}.gold.speed_by_location"))
        .await?;
    ensure!(!trino.rows.is_empty(), "CREATE TABLE AS wrote no rows");
    let lake = stack.lake_sql("SELECT * FROM gold.speed_by_location", None)?;
    if let Some(diff) = differences(&trino_rows(&trino)?, &lake_rows(&trino, &lake)?) {
        bail!("a table Trino created: lake sql and Trino differ: {diff}");
    }
    let lake = stack.lake_sql(ctas, None)?;
    if let Some(diff) = differences(&trino_rows(&trino)?, &lake_rows(&trino, &lake)?) {
        bail!("Trino's CREATE TABLE AS against the same query in lake sql: {diff}");
    }
    let tables: BTreeMap<String, (i64, i64, f64)> = stack.lake_tables()?;

    // lake's maintenance: compaction, then expiry (deleting the files only
    // expired snapshots reached), orphans and retention. Trino reads every
    // table from its data files after it, and finds what lake finds.
    let scans_before = {
        let mut scans = BTreeMap::new();
        for table in tables.keys() {
            scans.insert(table.clone(), stack.trino_scan(table).await?);
        }
        scans
    };
    // Retention first on its own, to learn what it drops: whole partitions
    // of out-of-range event times (the faults' year-2001 records), and
    // exactly the rows its delete commits name.
    stack.lake(&["maintain", "retention", "--all"])?;
    let mut retained = BTreeMap::new();
    let mut snapshots_before = 0;
    for table in tables.keys() {
        let snapshots = stack.lake_snapshots(table)?;
        snapshots_before += snapshots.len();
        let deleted: i64 = snapshots
            .iter()
            .filter(|s| s.1 == "delete")
            .map(|s| s.3)
            .sum();
        retained.insert(table.clone(), deleted);
    }
    eprintln!("rows retention dropped: {retained:?}");
    stack.lake(&["compact", "--all", "--min-input-files", "2"])?;
    stack.lake(&[
        "maintain",
        "all",
        "--older-than",
        "0s",
        "--retain-last",
        "1",
    ])?;
    let after = stack.lake_tables()?;
    let mut snapshots_after = 0;
    for (table, (rows, files, _)) in &tables {
        let (now_rows, now_files, _) = after[table];
        assert_eq!(now_rows, rows - retained[table], "{table}");
        assert!(
            now_files <= *files,
            "{table}: {now_files} files after compaction, {files} before"
        );
        let (count, checksum) = stack.trino_scan(table).await?;
        assert_eq!(count, now_rows, "{table} through Trino after maintenance");
        assert_eq!(stack.lake_count(table, None)?, now_rows, "{table}");
        if retained[table] == 0 {
            assert_eq!(checksum, scans_before[table].1, "{table}: the same values");
        }
        snapshots_after += stack.lake_snapshots(table)?.len();
    }
    assert!(
        snapshots_after < snapshots_before,
        "expiry removed snapshots: {snapshots_before} before, {snapshots_after} after"
    );

    // Trino's own compaction on a silver table (writer key), then lake goes
    // on with it: transform, compact and sql.
    let silver_before = stack.lake_count("silver.tweets_clean", None)?;
    stack
        .trino(&format!(
            "ALTER TABLE {writer}.silver.tweets_clean EXECUTE optimize"
        ))
        .await?;
    let operations = stack.lake_snapshots("silver.tweets_clean")?;
    assert_eq!(operations.last().map(|s| s.1.as_str()), Some("replace"));
    stack.produce_and_ingest(1_000, 3)?;
    let log = stack.lake(&["transform", "all"])?;
    let silver_after = stack.lake_count("silver.tweets_clean", None)?;
    assert!(silver_after > silver_before, "{log}");
    let operations: Vec<String> = stack
        .lake_snapshots("silver.tweets_clean")?
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(
        operations[operations.len() - 2..],
        ["replace", "append"],
        "lake appended on top of Trino's rewrite"
    );
    stack.lake(&["compact", "--all", "--min-input-files", "2"])?;
    for table in tables.keys() {
        assert_eq!(
            stack.trino_count(CATALOG, table).await?,
            stack.lake_count(table, None)?,
            "{table} after Trino's optimize and lake's next run"
        );
    }
    for table in GOLD {
        let trino = stack
            .trino(&format!("SELECT * FROM {CATALOG}.{table}"))
            .await?;
        let lake = stack.lake_sql(&format!("SELECT * FROM {table}"), None)?;
        if let Some(diff) = differences(&trino_rows(&trino)?, &lake_rows(&trino, &lake)?) {
            bail!("{table} after Trino's optimize: {diff}");
        }
    }

    // The comparison can fail: a gold row deleted through Trino is missing
    // against what lake read before.
    let trino = stack
        .trino(&format!("SELECT * FROM {CATALOG}.gold.speedtest_agg"))
        .await?;
    let lake_before = lake_rows(
        &trino,
        &stack.lake_sql("SELECT * FROM gold.speedtest_agg", None)?,
    )?;
    let (date, hour, location) = {
        let row = &trino.rows[0];
        let (d, h, l) = (
            trino.index("date")?,
            trino.index("hour")?,
            trino.index("location")?,
        );
        (
            row[d].as_str().unwrap().to_string(),
            row[h].as_i64().unwrap(),
            row[l].as_str().unwrap().replace('\'', "''"),
        )
    };
    stack
        .trino(&format!(
            "DELETE FROM {writer}.gold.speedtest_agg \
             WHERE \"date\" = DATE '{date}' AND \"hour\" = {hour} AND location = '{location}'"
        ))
        .await?;
    let trino_after = stack
        .trino(&format!("SELECT * FROM {CATALOG}.gold.speedtest_agg"))
        .await?;
    let diff = differences(&trino_rows(&trino_after)?, &lake_before);
    assert!(
        diff.as_deref().is_some_and(|d| d.contains(&location)),
        "a missing row is a difference: {diff:?}"
    );
    // …and lake reads Trino's delete (a position delete file) as Trino does.
    let lake_after = stack.lake_sql("SELECT * FROM gold.speedtest_agg", None)?;
    if let Some(diff) = differences(
        &trino_rows(&trino_after)?,
        &lake_rows(&trino_after, &lake_after)?,
    ) {
        bail!("after Trino's DELETE, lake sql and Trino differ: {diff}");
    }

    stack.trino.drop_catalog(&stack.writer).await?;
    stack.trino.drop_catalog(CATALOG).await?;
    Ok(())
}

/// How many distinct partitions `table`'s live files are in, as lake's own
/// reader lists them.
async fn partition_count(stack: &Stack, table: &str) -> Result<usize> {
    use iceberg::Catalog;
    let catalog = stack.catalog.rest_catalog(Role::Reader).await?;
    let loaded = catalog
        .load_table(&iceberg::TableIdent::from_strs(table.split('.'))?)
        .await?;
    let partitions: BTreeSet<String> = lake_table::files::live_files(&loaded, None)
        .await?
        .iter()
        .map(|f| format!("{:?}", f.data_file.partition()))
        .collect();
    Ok(partitions.len())
}

/// Trino on a catalog with a key lake does not know: every request is
/// refused as unauthenticated, and the error says so and names the catalog.
#[tokio::test]
async fn a_wrong_key_is_an_authentication_error_naming_the_catalog() -> Result<()> {
    let services = Services::from_env();
    let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let trino = Trino::from_env();
    let name = Kafka::unique("iceberg_wrong_key").replace('-', "_");
    // A well-formed key the catalog was not given.
    let wrong = lake_testkit::Keys::generate().reader;
    trino.create_catalog(&name, &catalog, &wrong).await?;
    let outcome = trino
        .try_query(&format!("SHOW SCHEMAS FROM {name}"))
        .await?;
    trino.drop_catalog(&name).await?;
    let error = match outcome {
        Ok(rows) => bail!("a wrong key listed schemas: {rows:?}"),
        Err(e) => e,
    };
    let text = error.to_string();
    let host = catalog.uri().trim_start_matches("http://").to_string();
    assert!(text.contains("NotAuthorizedException"), "{text}");
    assert!(
        text.contains(&format!(
            "lake catalog at {host} did not accept this request's credential"
        )),
        "{text}"
    );
    assert!(text.contains("iceberg.rest-catalog.oauth2.token"), "{text}");
    Ok(())
}
