//! `lake validate`: a pipeline checked without touching data.

use std::process::ExitCode;

use lake_core::Config;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(config)?;
    let problems = lake_transform::validate(&pipeline).await;
    if !problems.is_empty() {
        eprintln!("{problems}");
        anyhow::bail!(
            "{} problem{} in {}",
            problems.0.len(),
            if problems.0.len() == 1 { "" } else { "s" },
            pipeline.source
        );
    }
    let models: usize = pipeline.datasets.iter().map(|d| 1 + d.gold.len()).sum();
    let rules: usize = pipeline.datasets.iter().map(|d| d.silver.rules.len()).sum();
    println!(
        "ok: {} — {} datasets ({}), {models} models, {rules} rules",
        pipeline.source,
        pipeline.datasets.len(),
        pipeline.names().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
