use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use lake_core::Config;
use lake_transform::{Layers, ModelReport, Observer, TransformOptions};

use crate::cli::{LayerArg, TransformArgs, TransformTuning};

pub async fn run(args: TransformArgs, config: Config) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.models {
        bail!(
            "--models {} was replaced by the pipeline directory: `lake init` writes the shipped \
             datasets (dataset.toml, silver.sql, gold/*.sql) to edit, and `lake --pipeline DIR \
             transform …` runs them",
            dir.display()
        );
    }
    let pipeline = super::pipeline(&config)?;
    let names: Vec<String> = args.dataset.iter().cloned().collect();
    let layers = match args.layer {
        LayerArg::Silver => Layers::Silver,
        LayerArg::Gold => Layers::Gold,
        LayerArg::All => Layers::All,
        LayerArg::Models => return write_models(&pipeline.select(&names)?, args.out.as_deref()),
    };
    let options = options(&args.tuning)?;
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;
    let started = Instant::now();
    let reports = lake_transform::run_pipeline(
        &catalog,
        &pipeline,
        &names,
        layers,
        &options,
        &Progress::new(),
    )
    .await?;
    let committed = reports.iter().filter(|r| r.snapshot.is_some()).count();
    let memory = super::memory_note(lake_core::peak_rss_bytes());
    eprintln!(
        "transform: {committed} of {} tables changed in {:.2}s{memory}",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The transform options `tuning` asks for, with the PII key.
pub(super) fn options(tuning: &TransformTuning) -> anyhow::Result<TransformOptions> {
    Ok(TransformOptions {
        fail_on_quarantine_ratio: tuning.fail_on_quarantine_ratio,
        exhaustive_dedup: tuning.exhaustive_dedup,
        pii_key: pii_key()?,
        gold_rows_per_query: tuning.gold_rows_per_query,
        silver_rows_per_commit: tuning.silver_rows_per_commit,
        ..TransformOptions::default()
    })
}

/// The key of `[silver.pii]`'s `hash`, from the environment only: a flag
/// would show in process lists and shell history, a file key in
/// `lake config show`.
pub(super) fn pii_key() -> anyhow::Result<Option<lake_transform::PiiKey>> {
    Ok(std::env::var(lake_transform::pii::KEY_ENV)
        .ok()
        .map(|key| lake_transform::PiiKey::new(&key))
        .transpose()?)
}

/// One line per model: a spinner while it runs on a terminal, its summary
/// when done.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Observer for Progress {
    fn starting(&self, target: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{target} …"));
        }
    }

    fn finished(&self, report: &ModelReport) {
        let line = describe(report);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress {
    pub(super) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
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
        let counts = |counts: &std::collections::BTreeMap<String, u64>| {
            counts
                .iter()
                .map(|(rule, n)| format!("{rule} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !report.quarantined.is_empty() {
            line.push_str(&format!(" ({})", counts(&report.quarantined)));
        }
        if !report.dropped.is_empty() {
            line.push_str(&format!(
                ", {} dropped by rule ({})",
                report.dropped_total(),
                counts(&report.dropped)
            ));
        }
        if !report.warned.is_empty() {
            line.push_str(&format!(", warned: {}", counts(&report.warned)));
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

fn write_models(
    datasets: &[std::sync::Arc<lake_spec::DatasetSpec>],
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    for dataset in datasets {
        for (file, sql) in lake_transform::model_sql(dataset) {
            match out {
                Some(dir) => {
                    let path = dir.join(&file);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    std::fs::write(&path, sql)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => writeln!(std::io::stdout(), "-- {file}\n{sql}")?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
