//! The seed's dashboards, live: Superset from PyPI started by the shipped
//! `deploy/superset/bootstrap.sh`, which imports the shipped bundle
//! (deploy/superset/dashboards) with Superset's own CLI and points its
//! database at the test Trino's `iceberg_catalog` on lake's gold tables.
//!
//! Every dashboard is rendered in headless Chromium (Debian's) and must show
//! every chart without an error; the query each chart posted is asked again
//! through Superset's API and must answer what the same query through
//! `lake sql` answers. After one more batch reaches gold, "Real-time trends"
//! answers with the new gold, not a cached one.
//!
//! `LAKE_TEST_SCREENSHOTS=docs/images/superset tests/run -E 'binary(superset)'`
//! writes the screenshots where docs/ shows them.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, DatasetTopics, Kafka, Services, Superset, Trino, run_lake_jsonl,
    run_lake_ok,
};
use serde_json::{Map, Value};

/// The Trino catalog the bundle's database names.
const CATALOG: &str = "iceberg_catalog";

/// The window "last 24 hours" of the Real-time trends charts, in lake sql.
const LAST_24_HOURS: &str = "hour >= now() - INTERVAL '24 hours' AND hour < now()";

/// How a chart's rows are held against lake's.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The same rows.
    Same,
    /// The first `n` rows by `by` (descending): the same values of `by`,
    /// and every row one of lake's (ties may pick other rows).
    Top { n: usize, by: &'static str },
    /// The rows of the `n` series (`series` column) with the largest sum of
    /// `by`: every series complete, no series left out that sums higher.
    Series {
        n: usize,
        series: &'static str,
        by: &'static str,
    },
}

/// Every chart of the bundle, by name: the query it asks, written for lake
/// sql, and how its answer is compared. Temporal columns come back from
/// Superset as epoch milliseconds, so lake's queries give them so.
fn charts() -> BTreeMap<&'static str, (String, Expect)> {
    let hour_ms = "CAST(date_part('epoch', hour) * 1000 AS BIGINT)";
    let day_ms = "CAST(date_part('epoch', CAST(day AS TIMESTAMP)) * 1000 AS BIGINT)";
    let hashtags = format!(
        "SELECT hashtag, SUM(tweet_count) AS tweets FROM gold.popular_hashtags_by_hour \
         WHERE {LAST_24_HOURS} GROUP BY hashtag"
    );
    BTreeMap::from([
        (
            "Top hashtags, last 24 hours",
            (
                hashtags.clone(),
                Expect::Top {
                    n: 15,
                    by: "tweets",
                },
            ),
        ),
        (
            "Trending hashtags",
            (
                hashtags,
                Expect::Top {
                    n: 50,
                    by: "tweets",
                },
            ),
        ),
        (
            "Hashtags per hour",
            (
                format!(
                    "SELECT {hour_ms} AS hour, hashtag, SUM(tweet_count) AS tweets \
                     FROM gold.popular_hashtags_by_hour WHERE {LAST_24_HOURS} GROUP BY 1, 2"
                ),
                Expect::Series {
                    n: 10,
                    series: "hashtag",
                    by: "tweets",
                },
            ),
        ),
        (
            "Tweets per hour by region",
            (
                format!(
                    "SELECT {hour_ms} AS hour, region, SUM(tweet_count) AS tweets \
                     FROM gold.tweet_volume_by_region GROUP BY 1, 2"
                ),
                Expect::Same,
            ),
        ),
        (
            "Tweets",
            (
                "SELECT SUM(tweet_count) AS tweets FROM gold.tweet_volume_by_region".into(),
                Expect::Same,
            ),
        ),
        (
            "Active users",
            (
                "SELECT COUNT(DISTINCT user_id) AS active_users FROM gold.active_users_by_day"
                    .into(),
                Expect::Same,
            ),
        ),
        (
            "Active users per day",
            (
                format!(
                    "SELECT {day_ms} AS day, COUNT(DISTINCT user_id) AS active_users, \
                     SUM(tweet_count) AS tweets FROM gold.active_users_by_day GROUP BY 1"
                ),
                Expect::Same,
            ),
        ),
        (
            "Most engaged users",
            (
                "SELECT username, SUM(total_engagement) AS engagement, \
                 SUM(tweet_count) AS tweets, MAX(followers_count) AS followers \
                 FROM gold.active_users_by_day GROUP BY username"
                    .into(),
                Expect::Top {
                    n: 25,
                    by: "engagement",
                },
            ),
        ),
        (
            "Sentiment by language",
            (
                "SELECT lang, SUM(positive_count) AS positive, SUM(neutral_count) AS neutral, \
                 SUM(negative_count) AS negative FROM gold.tweet_metrics_by_language \
                 GROUP BY lang"
                    .into(),
                Expect::Top {
                    n: 20,
                    by: "positive",
                },
            ),
        ),
        (
            "Tweets by language",
            (
                "SELECT lang, SUM(tweet_count) AS tweets FROM gold.tweet_metrics_by_language \
                 GROUP BY lang"
                    .into(),
                Expect::Top {
                    n: 20,
                    by: "tweets",
                },
            ),
        ),
    ])
}

/// The dashboard that must show gold as it is now.
const REAL_TIME: &str = "real-time-trends";

struct Stack {
    catalog: CatalogProcess,
    topics: DatasetTopics,
    group: String,
}

impl Stack {
    fn lake(&self, args: &[&str]) -> Result<()> {
        run_lake_ok(args, self.catalog.lake_env(Role::Writer))?;
        Ok(())
    }

    /// `count` tweets whose event times end a minute ago, through bronze,
    /// silver and gold.
    fn produce_to_gold(&self, count: u64, seed: u64) -> Result<()> {
        let args = support::generate_today(
            &self.topics,
            "tweets",
            count,
            seed,
            300,
            &[("--duplicates", "0.02"), ("--late", "0.02")],
        );
        self.lake(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let topic = format!("tweets={}", self.topics.tweets);
        self.lake(&[
            "ingest",
            "tweets",
            "--until-caught-up",
            "--brokers",
            self.topics.kafka.brokers(),
            "--topic",
            &topic,
            "--group-id",
            &self.group,
        ])?;
        self.lake(&["transform", "all"])
    }

    /// `lake sql` as the reader, one map per row.
    fn lake_sql(&self, sql: &str) -> Result<Vec<Map<String, Value>>> {
        run_lake_jsonl(
            &["sql", "--format", "jsonl", sql],
            self.catalog.lake_env(Role::Reader),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_dashboards_render_on_trino_and_every_chart_equals_lake_sql() -> Result<()> {
    let services = Services::from_env();
    let stack = Stack {
        catalog: CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?,
        topics: DatasetTopics::create(4).await?,
        group: Kafka::unique("bronze"),
    };
    stack.produce_to_gold(3_000, 1)?;

    // The bundle's database: the test Trino's `iceberg_catalog`, read with
    // the reader key, as trino/catalog/iceberg_catalog.properties sets it up.
    let trino = Trino::from_env();
    trino.drop_catalog(CATALOG).await?;
    trino
        .create_catalog(CATALOG, &stack.catalog, &stack.catalog.keys().reader)
        .await?;
    let superset = Superset::start(trino.url()).await?;

    // What was imported: the database, three dashboards, the charts above.
    let databases = superset.get("database/").await?;
    let names_of_databases: Vec<&str> = list(&databases)
        .iter()
        .filter_map(|d| d["database_name"].as_str())
        .collect();
    assert_eq!(names_of_databases, ["lake"], "{databases}");
    let listed = superset.get("chart/?q=(page_size:100)").await?;
    let mut names = BTreeMap::new();
    for chart in list(&listed) {
        let id = chart["id"].as_i64().context("chart id")?;
        let name = chart["slice_name"].as_str().context("slice_name")?;
        names.insert(id, name.to_string());
    }
    let expected = charts();
    assert_eq!(
        names.values().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "the bundle's charts and the charts this test checks"
    );
    let dashboards = superset.get("dashboard/?q=(page_size:100)").await?;
    let mut slugs = Vec::new();
    let mut charts_of = BTreeMap::new();
    for dashboard in list(&dashboards) {
        let slug = dashboard["slug"].as_str().context("slug")?.to_string();
        let id = dashboard["id"].as_i64().context("dashboard id")?;
        let charts = superset.get(&format!("dashboard/{id}/charts")).await?;
        let ids: BTreeSet<i64> = list(&charts)
            .iter()
            .filter_map(|c| c["id"].as_i64())
            .collect();
        if slug == REAL_TIME {
            // A wall screen: the page asks again every 10 s, so what it shows
            // is as old as gold's freshness plus at most that.
            let full = superset.get(&format!("dashboard/{id}")).await?;
            let metadata: Value = serde_json::from_str(
                full["result"]["json_metadata"]
                    .as_str()
                    .context("json_metadata")?,
            )?;
            assert_eq!(metadata["refresh_frequency"], 10, "{metadata}");
        }
        charts_of.insert(slug.clone(), ids);
        slugs.push(slug);
    }
    slugs.sort();
    assert_eq!(
        slugs,
        [
            "real-time-trends",
            "tweet-analytics-overview",
            "user-engagement"
        ]
    );
    let on_a_dashboard: BTreeSet<i64> = charts_of.values().flatten().copied().collect();
    assert_eq!(
        on_a_dashboard,
        names.keys().copied().collect::<BTreeSet<_>>(),
        "every chart is on a dashboard"
    );

    // Every dashboard in Chromium: every chart drawn, none in error.
    let out = match std::env::var("LAKE_TEST_SCREENSHOTS") {
        Ok(dir) if !dir.is_empty() => lake_testkit::repo_root().join(dir),
        _ => std::env::temp_dir().join(format!("lake-superset-{}", std::process::id())),
    };
    let slug_refs: Vec<&str> = slugs.iter().map(String::as_str).collect();
    let rendered = superset.render(&slug_refs, &out)?;
    for page in rendered["dashboards"].as_array().context("dashboards")? {
        let slug = page["slug"].as_str().context("slug")?;
        let errors = page["errors"].as_array().context("errors")?;
        ensure!(errors.is_empty(), "{slug} shows chart errors: {errors:?}");
        assert_eq!(
            page["charts"].as_u64(),
            Some(charts_of[slug].len() as u64),
            "charts drawn on {slug}"
        );
        let shot = PathBuf::from(page["screenshot"].as_str().context("screenshot")?);
        let size = std::fs::metadata(&shot)?.len();
        ensure!(size > 20_000, "{} is {size} bytes", shot.display());
    }
    let queries = rendered["queries"].as_object().context("queries")?;

    // Each chart's query, as its dashboard posted it, asked again through
    // the API: the same answer as lake sql.
    let mut contexts = BTreeMap::new();
    for (id, name) in &names {
        let context = queries
            .get(&id.to_string())
            .with_context(|| format!("the dashboards never asked for {name} ({id})"))?;
        contexts.insert(name.clone(), context.clone());
        let (sql, expect) = &expected[name.as_str()];
        let rows = chart_rows(&superset, context, true).await?;
        let lake = stack.lake_sql(sql)?;
        compare(name, &rows, &lake, *expect)?;
    }

    // One more batch through to gold: the real-time dashboard's queries,
    // sent as its refresh sends them (not forced), answer with the new gold.
    let total = |rows: &[Map<String, Value>]| -> f64 {
        rows.iter().filter_map(|r| r["tweets"].as_f64()).sum()
    };
    let per_hour = &expected["Hashtags per hour"].0;
    let before = total(&stack.lake_sql(per_hour)?);
    stack.produce_to_gold(2_000, 2)?;
    let after = total(&stack.lake_sql(per_hour)?);
    ensure!(after > before, "gold did not grow: {before} → {after}");
    for id in &charts_of[REAL_TIME] {
        let name = &names[id];
        let (sql, expect) = &expected[name.as_str()];
        let rows = chart_rows(&superset, &contexts[name], false).await?;
        compare(name, &rows, &stack.lake_sql(sql)?, *expect)
            .with_context(|| format!("{name} after a new gold commit"))?;
    }
    let shown = total(&chart_rows(&superset, &contexts["Hashtags per hour"], false).await?);
    let lake_top: f64 = {
        let rows = stack.lake_sql(per_hour)?;
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for row in &rows {
            *sums.entry(text(&row["hashtag"])).or_default() += row["tweets"].as_f64().unwrap();
        }
        let mut totals: Vec<f64> = sums.into_values().collect();
        totals.sort_by(|a, b| b.total_cmp(a));
        totals.iter().take(10).sum()
    };
    assert_eq!(shown, lake_top, "Hashtags per hour shows the new gold");

    // The page check can fail: with the catalog gone, every chart of the
    // real-time dashboard shows an error.
    trino.drop_catalog(CATALOG).await?;
    let broken = superset.render(
        &[REAL_TIME],
        &std::env::temp_dir().join("lake-superset-broken"),
    )?;
    let page = &broken["dashboards"][0];
    let errors = page["errors"].as_array().context("errors")?;
    assert_eq!(
        errors.len(),
        charts_of[REAL_TIME].len(),
        "errors shown without Trino's catalog: {errors:?}"
    );
    Ok(())
}

/// The `result` list of a Superset list endpoint.
fn list(answer: &Value) -> &[Value] {
    answer["result"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The rows Superset's API answers for `context` (a chart's query context
/// as its page posted it), before the post-processing that only reshapes
/// them for drawing (pivots, sorting for the axis).
async fn chart_rows(
    superset: &Superset,
    context: &Value,
    force: bool,
) -> Result<Vec<Map<String, Value>>> {
    let mut context = context.clone();
    for query in context["queries"]
        .as_array_mut()
        .context("a query context without queries")?
    {
        query["post_processing"] = Value::Array(Vec::new());
    }
    context["force"] = Value::Bool(force);
    context["result_format"] = "json".into();
    context["result_type"] = "full".into();
    let answer = superset.post("chart/data", &context).await?;
    let result = &answer["result"][0];
    if let Some(error) = result["error"].as_str() {
        bail!("Superset's query failed: {error}\n{}", result["query"]);
    }
    result["data"]
        .as_array()
        .context("no data")?
        .iter()
        .map(|row| {
            row.as_object()
                .cloned()
                .context("a row that is not an object")
        })
        .collect()
}

/// A cell as both sides are compared on: numbers to 1e-9 relative.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{f:.0}")
            } else {
                format!("{:.9e}", f)
            }
        }
        other => other.to_string(),
    }
}

fn key(row: &Map<String, Value>) -> String {
    row.iter()
        .map(|(column, value)| format!("{column}={}", text(value)))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Holds Superset's rows for `name` against lake's, as `expect` says.
fn compare(
    name: &str,
    superset: &[Map<String, Value>],
    lake: &[Map<String, Value>],
    expect: Expect,
) -> Result<()> {
    ensure!(!lake.is_empty(), "{name}: lake sql found no rows");
    let lake_keys: BTreeSet<String> = lake.iter().map(key).collect();
    let shown: Vec<String> = superset.iter().map(key).collect();
    for row in &shown {
        ensure!(
            lake_keys.contains(row),
            "{name}: Superset shows a row lake sql does not have: {row}\nlake: {lake_keys:#?}"
        );
    }
    let number = |row: &Map<String, Value>, column: &str| row[column].as_f64().unwrap_or(f64::NAN);
    match expect {
        Expect::Same => {
            let mut shown = shown;
            shown.sort();
            let lake: Vec<String> = lake_keys.iter().cloned().collect();
            ensure!(
                shown == lake && superset.len() == lake.len(),
                "{name}: Superset {shown:#?}\nlake sql {lake:#?}"
            );
        }
        Expect::Top { n, by } => {
            let mut want: Vec<f64> = lake.iter().map(|r| number(r, by)).collect();
            want.sort_by(|a, b| b.total_cmp(a));
            want.truncate(n);
            let mut got: Vec<f64> = superset.iter().map(|r| number(r, by)).collect();
            got.sort_by(|a, b| b.total_cmp(a));
            ensure!(
                got == want,
                "{name}: top {n} by {by}: Superset {got:?}, lake {want:?}"
            );
        }
        Expect::Series { n, series, by } => {
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            let mut rows_of: BTreeMap<String, usize> = BTreeMap::new();
            for row in lake {
                *sums.entry(text(&row[series])).or_default() += number(row, by);
                *rows_of.entry(text(&row[series])).or_default() += 1;
            }
            let chosen: BTreeSet<String> = superset.iter().map(|r| text(&r[series])).collect();
            ensure!(
                chosen.len() == n.min(sums.len()),
                "{name}: {} series shown, {} wanted",
                chosen.len(),
                n.min(sums.len())
            );
            let lowest_chosen = chosen.iter().map(|s| sums[s]).fold(f64::INFINITY, f64::min);
            let highest_left = sums
                .iter()
                .filter(|(s, _)| !chosen.contains(*s))
                .map(|(_, v)| *v)
                .fold(f64::NEG_INFINITY, f64::max);
            ensure!(
                lowest_chosen >= highest_left,
                "{name}: a series summing {highest_left} left out for one summing {lowest_chosen}"
            );
            let complete: usize = chosen.iter().map(|s| rows_of[s]).sum();
            ensure!(
                superset.len() == complete,
                "{name}: {} rows shown, the chosen series have {complete}",
                superset.len()
            );
        }
    }
    Ok(())
}
