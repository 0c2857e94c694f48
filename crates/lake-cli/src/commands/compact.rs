use std::process::ExitCode;

use anyhow::Context;
use lake_core::Config;
use lake_maintain::CompactOptions;

use crate::cli::CompactArgs;

pub async fn run(args: CompactArgs, config: Config) -> anyhow::Result<ExitCode> {
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;
    let tables = super::selected_tables(&catalog, &args.tables).await?;
    let options = CompactOptions {
        target_file_size: args.target_file_size.map(|b| b.as_u64()),
        min_input_files: args.min_input_files as usize,
        // Rewriting is CPU-bound (zstd): one group per core keeps them busy.
        max_concurrent: args.max_concurrent.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        ),
        dry_run: args.dry_run,
        filter: args.filter.clone(),
        groups_per_commit: args.groups_per_commit as usize,
        sort_by: args.sort_by.clone(),
    };
    let outcome = lake_maintain::policy::run(
        &catalog,
        &config.storage,
        Some(&tables),
        &lake_maintain::Task::Compact(options),
        &super::maintain::Printer {
            dry_run: args.dry_run,
        },
    )
    .await?;
    Ok(if outcome.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
