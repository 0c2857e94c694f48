use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use lake_core::Config;
use lake_core::datasets::Dataset;
use lake_transform::{ModelReport, Models, TransformOptions};

use crate::cli::{LayerArg, TransformArgs, TransformDatasetArg};

pub async fn run(args: TransformArgs, config: Config) -> anyhow::Result<ExitCode> {
    if args.layer == LayerArg::Models {
        return write_models(args.out.as_deref());
    }
    let datasets = match args.dataset {
        TransformDatasetArg::Tweets => vec![Dataset::Tweets],
        TransformDatasetArg::Speedtest => vec![Dataset::Speedtest],
        TransformDatasetArg::All => Dataset::ALL.to_vec(),
    };
    let options = TransformOptions {
        models: Models::new(args.models.as_deref())?,
        fail_on_quarantine_ratio: args.fail_on_quarantine_ratio,
        ..TransformOptions::default()
    };
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;
    let started = Instant::now();
    let reports = run_layers(&catalog, args.layer, &datasets, &options).await?;
    let committed = reports.iter().filter(|r| r.snapshot.is_some()).count();
    let memory = super::memory_note(lake_core::peak_rss_bytes());
    eprintln!(
        "transform: {committed} of {} tables changed in {:.2}s{memory}",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the silver and/or gold models of `datasets`, a line per model.
pub async fn run_layers(
    catalog: &lake_table::LakeCatalog,
    layer: LayerArg,
    datasets: &[Dataset],
    options: &TransformOptions,
) -> anyhow::Result<Vec<ModelReport>> {
    let progress = Progress::new();
    let mut reports = Vec::new();
    if matches!(layer, LayerArg::Silver | LayerArg::All) {
        for model in lake_transform::silver_models(datasets) {
            progress.start(model.target);
            let report = lake_transform::run_silver(catalog, &model, options).await?;
            progress.done(&report);
            reports.push(report);
        }
    }
    if matches!(layer, LayerArg::Gold | LayerArg::All) {
        for model in lake_transform::gold_models(datasets) {
            progress.start(model.target);
            let report = lake_transform::run_gold(catalog, &model, options).await?;
            progress.done(&report);
            reports.push(report);
        }
    }
    Ok(reports)
}

/// One line per model: a spinner while it runs on a terminal, its summary
/// when done.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn start(&self, target: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{target} …"));
        }
    }

    fn done(&self, report: &ModelReport) {
        let line = describe(report);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn describe(report: &ModelReport) -> String {
    let seconds = report.elapsed.as_secs_f64();
    if report.snapshot.is_none() {
        let note = report
            .note
            .as_ref()
            .map_or(String::new(), |n| format!("; {n}"));
        return format!("{}: nothing new ({seconds:.2}s){note}", report.target);
    }
    let mut line = format!(
        "{}: {} rows in, {} rows out",
        report.target, report.rows_in, report.rows_out
    );
    if report.target.starts_with("silver.") {
        line.push_str(&format!(
            ", {} duplicates dropped, {} quarantined",
            report.duplicates,
            report.quarantined_total()
        ));
        if !report.quarantined.is_empty() {
            let rules: Vec<String> = report
                .quarantined
                .iter()
                .map(|(rule, n)| format!("{rule} {n}"))
                .collect();
            line.push_str(&format!(" ({})", rules.join(", ")));
        }
    } else {
        line.push_str(&format!(
            ", {} partitions rebuilt",
            report.partitions_rebuilt
        ));
    }
    line.push_str(&format!(" in {seconds:.2}s"));
    line
}

fn write_models(out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    for (file, sql) in Models::shipped() {
        match out {
            Some(dir) => {
                let path = dir.join(file);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&path, sql)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => println!("-- {file}\n{sql}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
