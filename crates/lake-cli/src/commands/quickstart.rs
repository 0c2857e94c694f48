//! `lake quickstart`: the whole pipeline on this machine alone, then a
//! report of what came out.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use lake_core::Config;
use lake_ingest::{IngestSummary, Route};
use lake_maintain::Done;
use lake_quickstart::{Generated, Options, Report};
use lake_spec::DatasetSpec;
use lake_transform::ModelReport;

use super::transform::Progress;
use crate::cli::QuickstartArgs;

pub async fn run(args: QuickstartArgs, config: Config) -> anyhow::Result<ExitCode> {
    let options = Options {
        records: args.records,
        data_dir: args.data_dir.clone(),
        seed: args.seed,
        progress: std::io::stderr().is_terminal(),
        pii_key: std::env::var(lake_transform::pii::KEY_ENV).ok(),
    };
    let report = lake_quickstart::run(config, &options, &Printer(Progress::new())).await?;
    write!(std::io::stdout(), "{}", describe(&report, &args)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Each step's summary line on standard error as it ends.
struct Printer(Progress);

impl lake_transform::Observer for Printer {
    fn starting(&self, target: &str) {
        self.0.starting(target);
    }

    fn finished(&self, report: &ModelReport) {
        self.0.finished(report);
    }
}

impl lake_maintain::Observer for Printer {
    fn done(&self, step: &Done) {
        if let Done::Compact(report) = step {
            super::maintain::print_compact(report, false);
        }
    }

    fn failed(&self, table: &iceberg::TableIdent, error: &lake_maintain::Error) {
        eprintln!("{table}: failed: {error}");
    }
}

impl lake_quickstart::Observer for Printer {
    fn skipped(&self, dataset: &DatasetSpec) {
        eprintln!(
            "quickstart: skipping dataset `{}`: it names no built-in generator (feed it with \
             `lake generate {} --from FILE`)",
            dataset.name, dataset.name
        );
    }

    fn begin(&self, datasets: &[Arc<DatasetSpec>], options: &Options) {
        let names: Vec<String> = datasets
            .iter()
            .map(|d| format!("{} {}", options.records, d.name))
            .collect();
        eprintln!(
            "lake quickstart: {} → Kafka (mock, in-process) → bronze → silver → gold, catalog \
             and warehouse in {}",
            names.join(" and "),
            options.data_dir.display()
        );
    }

    fn generated(&self, generated: &Generated) {
        super::generate::print_summary(
            &generated.dataset,
            &generated.topic,
            generated.seed,
            &generated.summary,
        );
    }

    fn ingested(&self, routes: &[Route], summary: &IngestSummary) {
        super::ingest::print_summary(routes, summary);
    }

    fn nothing_to_compact(&self, min_input_files: usize) {
        eprintln!(
            "compact: nothing to merge yet (a partition needs {min_input_files} small files)"
        );
    }
}

fn describe(report: &Report, args: &QuickstartArgs) -> anyhow::Result<String> {
    let mut out = format!(
        "\nDone in {:.1}s. Rows per table:\n",
        report.elapsed.as_secs_f64()
    );
    for status in &report.statuses {
        out.push_str(&format!(
            "  {:<40} {:>10} rows {:>5} files\n",
            status.table, status.rows, status.files
        ));
    }
    out.push_str(&format!(
        "\nThis run: {} duplicates removed, {} rows quarantined (silver), {} records rejected (bronze dead letters)\n",
        report.duplicates, report.quarantined, report.rejected
    ));
    for answer in &report.answers {
        let mut table = Vec::new();
        lake_query::write_batches(
            &mut table,
            &answer.result.schema,
            &answer.result.batches,
            lake_query::Format::Table,
        )?;
        out.push_str(&format!(
            "\n{}:\n{}",
            answer.question,
            String::from_utf8_lossy(&table)
        ));
    }
    let embedded = if args.data_dir == std::path::Path::new("./lake-data") {
        "--embedded".to_string()
    } else {
        format!("--embedded={}", args.data_dir.display())
    };
    // As this process was started (`cargo run` runs target/release/lake),
    // so the lines can be pasted.
    let lake = std::env::args()
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "lake".into());
    let has = |table: &str| report.statuses.iter().any(|s| s.table == table);
    let mut next = Vec::new();
    if has("gold.popular_hashtags_by_hour") {
        next.push(format!("{lake} sql {embedded} \"SELECT hashtag, sum(tweet_count) AS n FROM gold.popular_hashtags_by_hour GROUP BY 1 ORDER BY n DESC LIMIT 10\""));
    }
    if has("silver.tweets_clean") {
        next.push(format!(
            "{lake} sql {embedded} \"SELECT region, count(*) FROM silver.tweets_clean GROUP BY 1\""
        ));
    }
    if has("gold.speedtest_agg") {
        next.push(format!("{lake} sql {embedded} \"SELECT location, sum(test_count) AS tests FROM gold.speedtest_agg GROUP BY 1 ORDER BY tests DESC\""));
    }
    next.push(format!("{lake} status {embedded}"));
    if let Some(silver) = report
        .statuses
        .iter()
        .find(|s| s.table.starts_with("silver."))
    {
        next.push(format!("{lake} snapshots {embedded} {}", silver.table));
    }
    let data_dir = if embedded == "--embedded" {
        String::new()
    } else {
        format!(" --data-dir {}", args.data_dir.display())
    };
    next.push(format!(
        "{lake} quickstart{data_dir}    # another batch into the same tables"
    ));
    out.push_str("\nNext:\n");
    for line in next {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(out)
}
