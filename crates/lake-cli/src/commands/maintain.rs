use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use iceberg::TableIdent;
use lake_core::Config;
use lake_maintain::{
    CompactOptions, CompactReport, Done, ExpireOptions, ExpireReport, ManifestReport,
    OrphanOptions, OrphanReport, RetentionReport, Task,
};

use super::selected_tables;
use crate::cli::{MaintainCommand, TableSelection};

fn size(bytes: u64) -> String {
    ByteSize::b(bytes).display().si().to_string()
}

pub async fn run(command: MaintainCommand, config: Config) -> anyhow::Result<ExitCode> {
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .context("connecting to the catalog")?;
    let (selection, task, dry_run) = task(command);
    let tables = match &selection {
        Some(selection) => Some(selected_tables(&catalog, selection).await?),
        None => None,
    };
    let outcome = lake_maintain::policy::run(
        &catalog,
        &config.storage,
        tables.as_deref(),
        &task,
        &Printer { dry_run },
    )
    .await?;
    Ok(if outcome.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The step a command asks for, the tables it names (`None`: all of them)
/// and whether it only shows what it would do.
fn task(command: MaintainCommand) -> (Option<TableSelection>, Task, bool) {
    match command {
        MaintainCommand::ExpireSnapshots {
            tables,
            older_than,
            retain_last,
            dry_run,
        } => (
            Some(tables),
            Task::ExpireSnapshots(ExpireOptions {
                older_than,
                retain_last: retain_last as usize,
                dry_run,
            }),
            dry_run,
        ),
        MaintainCommand::RemoveOrphanFiles {
            tables,
            older_than,
            force,
            dry_run,
        } => (
            Some(tables),
            Task::RemoveOrphanFiles(OrphanOptions {
                older_than,
                force,
                dry_run,
            }),
            dry_run,
        ),
        MaintainCommand::RewriteManifests { tables, dry_run } => {
            (Some(tables), Task::RewriteManifests { dry_run }, dry_run)
        }
        MaintainCommand::Retention { tables, dry_run } => {
            (Some(tables), Task::Retention { dry_run }, dry_run)
        }
        MaintainCommand::All {
            older_than,
            retain_last,
            orphans_older_than,
            target_file_size,
            dry_run,
        } => (
            None,
            Task::Daily {
                compact: CompactOptions {
                    target_file_size: target_file_size.map(|b| b.as_u64()),
                    dry_run,
                    ..CompactOptions::default()
                },
                expire: ExpireOptions {
                    older_than,
                    retain_last: retain_last as usize,
                    dry_run,
                },
                orphans: OrphanOptions {
                    older_than: orphans_older_than,
                    force: false,
                    dry_run,
                },
            },
            dry_run,
        ),
    }
}

/// One line per table and step, as each ends.
pub(super) struct Printer {
    pub(super) dry_run: bool,
}

impl lake_maintain::Observer for Printer {
    fn done(&self, step: &Done) {
        let dry_run = self.dry_run;
        match step {
            Done::Retention(r) => print_retention(r, dry_run),
            Done::Compact(r) => print_compact(r, dry_run),
            Done::CompactSkipped { table, why } => {
                eprintln!("{table}: compaction skipped: {why}")
            }
            Done::Manifests(r) => print_manifests(r),
            Done::Expire(r) => print_expire(r, dry_run),
            Done::Orphans(r) => print_orphans(r, dry_run),
        }
    }

    fn failed(&self, table: &TableIdent, error: &lake_maintain::Error) {
        eprintln!("{table}: failed: {error}");
    }
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

pub(super) fn print_compact(report: &CompactReport, dry_run: bool) {
    let size = |b: u64| ByteSize::b(b).display().si().to_string();
    if dry_run {
        eprintln!(
            "{}: {} files ({}); would rewrite {} groups towards {} files:",
            report.table,
            report.files_before,
            size(report.bytes_before),
            report.groups.len(),
            size(report.target_file_size)
        );
        for group in &report.groups {
            let partition = match group.earlier_spec {
                Some(spec) => format!("spec {spec}, into the current partitioning"),
                None => format!("{:?}", group.partition),
            };
            eprintln!(
                "  {partition}: {} files, {}, {} rows",
                group.files.len(),
                size(group.bytes()),
                group.rows()
            );
        }
        return;
    }
    if report.groups.is_empty() {
        eprintln!(
            "{}: nothing to compact ({} files, {})",
            report.table,
            report.files_before,
            size(report.bytes_before)
        );
        return;
    }
    let skipped = if report.skipped > 0 {
        format!(", {} skipped (input removed meanwhile)", report.skipped)
    } else {
        String::new()
    };
    eprintln!(
        "{}: {} files ({}) → {} files ({}); {} groups committed{skipped}, {} rows rewritten in {:.2}s{}",
        report.table,
        report.files_before,
        size(report.bytes_before),
        report.files_after,
        size(report.bytes_after),
        report.committed,
        report.rows_rewritten,
        report.elapsed.as_secs_f64(),
        super::memory_note(lake_core::peak_rss_bytes())
    );
}
