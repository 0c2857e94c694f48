//! `lake quickstart`, `lake sql`, `lake status`, `lake snapshots` as processes
//! on the embedded catalog quickstart leaves behind.
//!
//! The one place the suite's Kafka is librdkafka's mock cluster: quickstart
//! promises to run with no services at all, so it starts the mock inside its
//! own process, and that is what these tests hold it to. Every other ingest
//! and generate test runs on the real broker `tests/run` starts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use lake_testkit::{run_lake, run_lake_ok};
use serde_json::Value;

const RECORDS: u64 = 3_000;

/// Runs `lake` and returns its stdout, failing with its stderr.
fn lake(args: &[&str]) -> Result<String> {
    let out = run_lake_ok(args, Vec::<(String, String)>::new())?;
    Ok(String::from_utf8(out.stdout)?)
}

fn quickstart(dir: &Path, seed: u64) -> Result<String> {
    lake(&[
        "quickstart",
        "--records",
        &RECORDS.to_string(),
        "--seed",
        &seed.to_string(),
        "--data-dir",
        &dir.display().to_string(),
    ])
}

/// `lake sql` on the embedded catalog in `dir`, as JSON rows.
fn sql(dir: &Path, extra: &[&str], query: &str) -> Result<Vec<Value>> {
    let embedded = format!("--embedded={}", dir.display());
    let mut args = vec!["sql", embedded.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    args.push(query);
    let out = lake(&args)?;
    serde_json::from_str(&out).with_context(|| format!("parsing {out}"))
}

fn int(row: &Value, column: &str) -> Result<u64> {
    row.get(column)
        .and_then(Value::as_u64)
        .with_context(|| format!("no integer `{column}` in {row}"))
}

/// The report's "Rows per table" lines: table → (rows, files).
fn reported_tables(report: &str) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut tables = BTreeMap::new();
    for line in report
        .lines()
        .skip_while(|l| !l.contains("Rows per table"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [table, rows, "rows", files, "files"] => {
                tables.insert(table.to_string(), (rows.parse()?, files.parse()?));
            }
            _ => bail!("unexpected report line `{line}`"),
        }
    }
    Ok(tables)
}

/// The data rows of the text table printed under `title`.
fn reported_section(report: &str, title: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .skip_while(|l| !l.starts_with(title))
        .skip(1)
        .take_while(|l| l.starts_with('+') || l.starts_with('|'))
        .filter(|l| l.starts_with('|'))
        .skip(1) // the header
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// The "This run: …" figures: duplicates removed, quarantined, rejected.
fn reported_run(report: &str) -> Result<(u64, u64, u64)> {
    let line = report
        .lines()
        .find(|l| l.starts_with("This run:"))
        .context("no `This run:` line")?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    match numbers.as_slice() {
        [duplicates, quarantined, rejected] => Ok((*duplicates, *quarantined, *rejected)),
        _ => bail!("unexpected `{line}`"),
    }
}

/// The snapshots of `table`, oldest first.
fn snapshots(dir: &Path, table: &str) -> Result<Vec<Value>> {
    let embedded = format!("--embedded={}", dir.display());
    let out = lake(&["snapshots", &embedded, "--format", "json", table])?;
    Ok(serde_json::from_str(&out)?)
}

fn current_snapshot(dir: &Path, table: &str) -> Result<Value> {
    snapshots(dir, table)?
        .into_iter()
        .find(|r| r["current"] == Value::Bool(true))
        .context("no current snapshot")
}

/// The newest append of `table`: the last run's commit (compaction may have
/// committed a replace after it).
fn latest_append(dir: &Path, table: &str) -> Result<Value> {
    snapshots(dir, table)?
        .into_iter()
        .rev()
        .find(|r| r["operation"] == "append")
        .context("no append")
}

/// Checks one report against the tables it describes.
fn check_report(dir: &Path, report: &str, runs: u64) -> Result<()> {
    let tables = reported_tables(report)?;
    assert_eq!(tables.len(), 13, "{report}");
    for (table, (rows, files)) in &tables {
        let counted = sql(dir, &[], &format!("SELECT count(*) AS n FROM {table}"))?;
        assert_eq!(int(&counted[0], "n")?, *rows, "{table} rows");
        assert!(*files > 0, "{table} has no files");
    }
    // Every generated record is in bronze or its dead letters, once.
    for bronze in ["bronze.tweets_raw", "bronze.speedtest_raw"] {
        let (rows, _) = tables[bronze];
        let (rejects, _) = tables[&format!("{bronze}_rejects")];
        assert_eq!(rows + rejects, runs * RECORDS, "{bronze} + rejects");
    }

    // This run's figures are what its commits recorded.
    let (duplicates, quarantined, rejected) = reported_run(report)?;
    let mut recorded = (0, 0);
    for silver in ["silver.tweets_clean", "silver.speedtest_clean"] {
        let snapshot = latest_append(dir, silver)?;
        let lake = snapshot["lake"].as_str().context("lake column")?;
        for entry in lake.split(' ') {
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            let value: u64 = value.parse().unwrap_or(0);
            if key == "lake.transform.duplicates" {
                recorded.0 += value;
            } else if key.starts_with("lake.quarantine.") {
                recorded.1 += value;
            }
        }
    }
    assert_eq!((duplicates, quarantined), recorded, "{report}");
    let mut rejected_now = 0;
    for rejects in ["bronze.tweets_raw_rejects", "bronze.speedtest_raw_rejects"] {
        rejected_now += int(&latest_append(dir, rejects)?, "added_rows")?;
    }
    assert_eq!(rejected, rejected_now, "rejected this run");
    assert!(
        duplicates > 0 && quarantined > 0 && rejected > 0,
        "{report}"
    );

    // Gold answers are non-empty and match the tables.
    let hashtags = reported_section(report, "Top hashtags of the latest hour");
    assert!(!hashtags.is_empty(), "{report}");
    let latest = sql(
        dir,
        &[],
        &format!(
            "SELECT tweet_count FROM gold.popular_hashtags_by_hour \
             WHERE hashtag = '{}' AND \"hour\" = (SELECT max(\"hour\") FROM gold.popular_hashtags_by_hour)",
            hashtags[0][0]
        ),
    )?;
    assert_eq!(int(&latest[0], "tweet_count")?.to_string(), hashtags[0][1]);
    let regions = reported_section(report, "Tweet volume by region");
    let from_silver = sql(
        dir,
        &[],
        "SELECT region, count(*) AS n FROM silver.tweets_clean GROUP BY region",
    )?;
    let silver: BTreeMap<String, String> = from_silver
        .iter()
        .map(|r| {
            Ok((
                r["region"].as_str().context("region")?.to_string(),
                int(r, "n")?.to_string(),
            ))
        })
        .collect::<Result<_>>()?;
    let reported: BTreeMap<String, String> = regions
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(reported, silver, "tweet volume by region");
    assert!(!reported_section(report, "Download and upload speed by location").is_empty());
    Ok(())
}

#[test]
fn quickstart_reports_what_the_tables_hold_and_runs_again() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("lake-data");

    let first = quickstart(&dir, 7)?;
    check_report(&dir, &first, 1)?;
    let silver_then = current_snapshot(&dir, "silver.tweets_clean")?;
    let rows_then = int(&silver_then, "total_rows")?;

    // Gold figures come back from silver through lake sql.
    let gold = sql(
        &dir,
        &[],
        "SELECT hashtag, sum(tweet_count) AS n FROM gold.popular_hashtags_by_hour GROUP BY hashtag ORDER BY hashtag",
    )?;
    let silver = sql(
        &dir,
        &[],
        "SELECT hashtag, count(*) AS n FROM \
         (SELECT unnest(hashtags) AS hashtag FROM silver.tweets_clean) \
         WHERE hashtag IS NOT NULL GROUP BY hashtag ORDER BY hashtag",
    )?;
    assert!(gold.len() > 5, "{gold:?}");
    assert_eq!(gold, silver, "hashtag counts, gold against silver");

    // A second run adds a batch to the same tables.
    let second = quickstart(&dir, 8)?;
    check_report(&dir, &second, 2)?;
    let rows_now = int(
        &current_snapshot(&dir, "silver.tweets_clean")?,
        "total_rows",
    )?;
    assert!(rows_now > rows_then, "{rows_now} rows after {rows_then}");

    // Time travel: by snapshot id and by time, the first run's count.
    let count = "SELECT count(*) AS n FROM silver.tweets_clean";
    let id = silver_then["snapshot_id"].to_string();
    assert_eq!(
        int(&sql(&dir, &["--as-of", &id], count)?[0], "n")?,
        rows_then
    );
    let at = silver_then["committed_at"]
        .as_str()
        .context("committed_at")?
        .to_string();
    assert_eq!(
        int(&sql(&dir, &["--as-of", &at], count)?[0], "n")?,
        rows_then
    );
    assert_eq!(int(&sql(&dir, &[], count)?[0], "n")?, rows_now);

    // Status: silver and gold are caught up with their sources.
    let embedded = format!("--embedded={}", dir.display());
    let status: Vec<Value> =
        serde_json::from_str(&lake(&["status", &embedded, "--format", "json"])?)?;
    assert_eq!(status.len(), 13);
    for row in &status {
        let table = row["table"].as_str().context("table")?;
        if table.starts_with("silver.") || table.starts_with("gold.") {
            assert!(row["source"].is_string(), "{row}");
            assert_eq!(row["behind_commits"], Value::from(0), "{row}");
        } else {
            assert!(row.get("source").is_none_or(Value::is_null), "{row}");
        }
    }

    // Run where quickstart's ./lake-data is, with no catalog configured, the
    // reading commands use it and say so; with a catalog named, they do not.
    let here = lake_testkit::run_lake_in(
        root.path(),
        &["sql", "--format", "json", count],
        Vec::<(String, String)>::new(),
    )?;
    let said = String::from_utf8_lossy(&here.stderr);
    assert!(here.status.success(), "{said}");
    let rows: Vec<Value> = serde_json::from_slice(&here.stdout)?;
    assert_eq!(int(&rows[0], "n")?, rows_now);
    assert!(
        said.contains(
            "no catalog configured (catalog.uri); reading the embedded catalog in ./lake-data"
        ),
        "{said}"
    );
    let dead = format!("http://127.0.0.1:{}", lake_testkit::free_port());
    let named = lake_testkit::run_lake_in(
        root.path(),
        &["tables"],
        vec![("LAKE_CATALOG__URI", dead.as_str())],
    )?;
    let said = String::from_utf8_lossy(&named.stderr);
    assert_eq!(named.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&dead) && !said.contains("lake-data"),
        "{said}"
    );

    // Errors say what is wrong.
    let unknown = run_lake(&["sql", &embedded, "SELECT * FROM tweets_clean"])?;
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("silver.tweets_clean"),
        "{stderr}"
    );
    let bad = run_lake(&["sql", &embedded, "SELEC 1"])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not parse"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let write = run_lake(&["sql", &embedded, "CREATE TABLE x AS SELECT 1"])?;
    assert!(!write.status.success());
    assert!(String::from_utf8_lossy(&write.stderr).contains("only reads"));
    Ok(())
}
