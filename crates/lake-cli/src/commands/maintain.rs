use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use iceberg::TableIdent;
use iceberg::table::Table;
use lake_core::Config;
use lake_maintain::{
    CompactOptions, ExpireOptions, ExpireReport, ManifestReport, OrphanOptions, OrphanReport,
    RetentionReport,
};
use lake_table::LakeCatalog;

use super::{compact, selected_tables};
use crate::cli::MaintainCommand;

fn size(bytes: u64) -> String {
    ByteSize::b(bytes).display().si().to_string()
}

pub async fn run(command: MaintainCommand, config: Config) -> anyhow::Result<ExitCode> {
    let catalog = LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;
    let mut failed = 0usize;
    match command {
        MaintainCommand::ExpireSnapshots {
            tables,
            older_than,
            retain_last,
            dry_run,
        } => {
            let options = ExpireOptions {
                older_than,
                retain_last: retain_last as usize,
                dry_run,
            };
            let readers = all_tables(&catalog).await?;
            for ident in selected_tables(&catalog, &tables).await? {
                let positions = lake_maintain::positions_in(&readers, &ident);
                let result =
                    lake_maintain::expire_snapshots(&catalog, &ident, &options, &positions).await;
                failed += report(&ident, result.map(|r| print_expire(&r, dry_run)));
            }
        }
        MaintainCommand::RemoveOrphanFiles {
            tables,
            older_than,
            force,
            dry_run,
        } => {
            let options = OrphanOptions {
                older_than,
                force,
                dry_run,
            };
            for ident in selected_tables(&catalog, &tables).await? {
                let result =
                    lake_maintain::remove_orphan_files(&catalog, &config.storage, &ident, &options)
                        .await;
                failed += report(&ident, result.map(|r| print_orphans(&r, dry_run)));
            }
        }
        MaintainCommand::RewriteManifests { tables, dry_run } => {
            for ident in selected_tables(&catalog, &tables).await? {
                let result = lake_maintain::rewrite_manifests(&catalog, &ident, dry_run).await;
                failed += report(&ident, result.map(|r| print_manifests(&r)));
            }
        }
        MaintainCommand::Retention { tables, dry_run } => {
            for ident in selected_tables(&catalog, &tables).await? {
                let result = lake_maintain::apply_retention(
                    &catalog,
                    &ident,
                    lake_core::now_micros(),
                    dry_run,
                )
                .await;
                failed += report(&ident, result.map(|r| print_retention(&r, dry_run)));
            }
        }
        MaintainCommand::All {
            older_than,
            retain_last,
            orphans_older_than,
            target_file_size,
            dry_run,
        } => {
            let compact = CompactOptions {
                target_file_size: target_file_size.as_u64(),
                dry_run,
                ..CompactOptions::default()
            };
            let expire = ExpireOptions {
                older_than,
                retain_last: retain_last as usize,
                dry_run,
            };
            let orphans = OrphanOptions {
                older_than: orphans_older_than,
                force: false,
                dry_run,
            };
            let idents = catalog.tables().await?;
            for ident in &idents {
                let now = lake_core::now_micros();
                let result = lake_maintain::apply_retention(&catalog, ident, now, dry_run).await;
                failed += report(ident, result.map(|r| print_retention(&r, dry_run)));
                let result = lake_maintain::compact(&catalog, ident, &compact).await;
                failed += match result {
                    Err(lake_maintain::Error::Unsupported(why)) => {
                        eprintln!("{ident}: compaction skipped: {why}");
                        0
                    }
                    other => report(ident, other.map(|r| compact::print(&r, dry_run))),
                };
                let result = lake_maintain::rewrite_manifests(&catalog, ident, dry_run).await;
                failed += report(ident, result.map(|r| print_manifests(&r)));
            }
            // Positions are read after every table's own steps, as expiry
            // must keep what the transforms have not consumed yet.
            let readers = all_tables(&catalog).await?;
            for ident in &idents {
                let positions = lake_maintain::positions_in(&readers, ident);
                let result =
                    lake_maintain::expire_snapshots(&catalog, ident, &expire, &positions).await;
                failed += report(ident, result.map(|r| print_expire(&r, dry_run)));
                let result =
                    lake_maintain::remove_orphan_files(&catalog, &config.storage, ident, &orphans)
                        .await;
                failed += report(ident, result.map(|r| print_orphans(&r, dry_run)));
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints a failure; 1 when `result` failed.
fn report(ident: &TableIdent, result: lake_maintain::Result<()>) -> usize {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{ident}: failed: {e}");
            1
        }
    }
}

async fn all_tables(catalog: &LakeCatalog) -> anyhow::Result<Vec<Table>> {
    let mut tables = Vec::new();
    for ident in catalog.tables().await? {
        tables.push(catalog.load(&ident).await?);
    }
    Ok(tables)
}

fn print_expire(r: &ExpireReport, dry_run: bool) {
    let verb = if dry_run { "would expire" } else { "expired" };
    let kept = if r.kept_for_positions > 0 {
        format!(
            " ({} old ones kept: a transform has not consumed past them)",
            r.kept_for_positions
        )
    } else {
        String::new()
    };
    eprintln!(
        "{}: {verb} {} of {} snapshots{kept}; {} {} manifest lists, {} manifests, {} data files in {:.2}s",
        r.table,
        r.expired.len(),
        r.snapshots_before,
        if dry_run { "would delete" } else { "deleted" },
        r.files.manifest_lists.len(),
        r.files.manifests.len(),
        r.files.data_files.len(),
        r.elapsed.as_secs_f64()
    );
    if dry_run {
        for path in r.files.iter() {
            eprintln!("  {path}");
        }
    }
    if r.delete_failures > 0 {
        eprintln!(
            "{}: {} deletions failed; remove-orphan-files will retry them",
            r.table, r.delete_failures
        );
    }
}

fn print_orphans(r: &OrphanReport, dry_run: bool) {
    eprintln!(
        "{}: {} files stored, {} orphans ({}) {}, {} unreferenced but too young, in {:.2}s",
        r.table,
        r.stored,
        r.orphans.len(),
        size(r.bytes()),
        if dry_run { "found" } else { "deleted" },
        r.too_young,
        r.elapsed.as_secs_f64()
    );
    if dry_run {
        for file in &r.orphans {
            eprintln!("  {} ({})", file.location, size(file.size));
        }
    }
}

fn print_manifests(r: &ManifestReport) {
    eprintln!(
        "{}: {} data manifests → {} in {:.2}s",
        r.table,
        r.before,
        r.after,
        r.elapsed.as_secs_f64()
    );
}

fn print_retention(r: &RetentionReport, dry_run: bool) {
    if let Some(why) = &r.skipped {
        eprintln!("{}: retention skipped: {why}", r.table);
        return;
    }
    let days = r
        .retention
        .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
        .unwrap_or_default();
    eprintln!(
        "{}: retention {days}: {} {} partitions, {} files, {} rows, {} in {:.2}s",
        r.table,
        if dry_run { "would drop" } else { "dropped" },
        r.partitions.len(),
        r.files,
        r.rows,
        size(r.bytes),
        r.elapsed.as_secs_f64()
    );
    if dry_run {
        for partition in &r.partitions {
            eprintln!("  {partition}");
        }
    }
}
