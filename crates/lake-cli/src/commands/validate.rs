//! `lake validate`: a pipeline checked without touching data.

use std::io::Write;
use std::process::ExitCode;

use lake_core::Config;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(config)?;
    let problems = lake_transform::validate(&pipeline).await;
    if !problems.is_empty() {
        eprintln!("{problems}");
        // A pipeline that does not check is a configuration error, as one
        // that does not parse is.
        eprintln!(
            "error: {} problem{} in {}",
            problems.0.len(),
            if problems.0.len() == 1 { "" } else { "s" },
            pipeline.source
        );
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    let models: usize = pipeline.datasets.iter().map(|d| 1 + d.gold.len()).sum();
    let rules: usize = pipeline.datasets.iter().map(|d| d.silver.rules.len()).sum();
    writeln!(
        std::io::stdout(),
        "ok: {} — {} datasets ({}), {models} models, {rules} rules",
        pipeline.source,
        pipeline.datasets.len(),
        pipeline.names().join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}
