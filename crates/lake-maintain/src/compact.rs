//! Bin-pack compaction: per partition, small files are rewritten into files
//! near the target size.
//!
//! Each group of files is read whole, written anew with the table's writer and
//! swapped in by a `replace` commit. A replace rebases over concurrent appends,
//! so ingest running at the same time neither loses a row nor waits for long;
//! it is refused only when one of its input files was removed meanwhile (by
//! another compaction or a retention delete), and then its new files are
//! deleted and the group is reported as skipped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iceberg::TableIdent;
use iceberg::spec::{DataFile, ManifestContentType, Struct};
use iceberg::table::Table;
use lake_table::files::{self, LiveFile};
use lake_table::{LakeCatalog, Replace, TableWriter, WriterOptions};

use crate::error::{Error, Result};

/// Small files of a group read at once: their reads are mostly waiting on
/// storage round trips, and row order within a group does not matter.
const READ_CONCURRENCY: usize = 8;

/// Files below this share of the target size are candidates.
const SMALL_SHARE: f64 = 0.75;

#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Size the rewritten files aim at.
    pub target_file_size: u64,
    /// A group is rewritten only when it holds at least this many files.
    pub min_input_files: usize,
    /// Groups rewritten at the same time.
    pub max_concurrent: usize,
    /// List the groups, change nothing.
    pub dry_run: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_file_size: lake_table::writer::DEFAULT_TARGET_FILE_SIZE,
            min_input_files: 5,
            max_concurrent: 1,
            dry_run: false,
        }
    }
}

/// Files of one partition to be rewritten together.
#[derive(Clone, Debug)]
pub struct Group {
    pub partition: Struct,
    pub files: Vec<LiveFile>,
}

impl Group {
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.data_file.file_size_in_bytes())
            .sum()
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.data_file.record_count()).sum()
    }
}

/// What a compaction did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct CompactReport {
    pub table: String,
    /// Live data files and their bytes before.
    pub files_before: usize,
    pub bytes_before: u64,
    /// After (equal to before on a dry run).
    pub files_after: usize,
    pub bytes_after: u64,
    /// Groups planned, committed, and refused because an input file was
    /// removed meanwhile.
    pub groups: Vec<Group>,
    pub committed: usize,
    pub skipped: usize,
    pub rows_rewritten: u64,
    pub elapsed: Duration,
}

/// The groups to rewrite among `live` files of a table whose default
/// partition spec is `spec_id`: per partition, the files under
/// `SMALL_SHARE` of the target, packed first-fit by decreasing size into
/// groups of at most the target size, kept when they hold at least
/// `min_input_files` (and two) files. Files written under an older spec are
/// left alone: the writer writes only the current one.
pub fn plan(live: &[LiveFile], spec_id: i32, options: &CompactOptions) -> Vec<Group> {
    let small = (options.target_file_size as f64 * SMALL_SHARE) as u64;
    let mut by_partition: HashMap<&Struct, Vec<&LiveFile>> = HashMap::new();
    for file in live {
        if file.partition_spec_id == spec_id && file.data_file.file_size_in_bytes() < small {
            by_partition
                .entry(file.data_file.partition())
                .or_default()
                .push(file);
        }
    }
    let mut groups = Vec::new();
    for (partition, mut files) in by_partition {
        files.sort_by_key(|f| std::cmp::Reverse(f.data_file.file_size_in_bytes()));
        let mut bins: Vec<(u64, Vec<LiveFile>)> = Vec::new();
        for file in files {
            let size = file.data_file.file_size_in_bytes();
            match bins
                .iter_mut()
                .find(|(used, _)| used + size <= options.target_file_size)
            {
                Some((used, members)) => {
                    *used += size;
                    members.push(file.clone());
                }
                None => bins.push((size, vec![file.clone()])),
            }
        }
        groups.extend(
            bins.into_iter()
                .filter(|(_, members)| members.len() >= options.min_input_files.max(2))
                .map(|(_, files)| Group {
                    partition: partition.clone(),
                    files,
                }),
        );
    }
    // Oldest partitions first: a stable, readable order.
    groups.sort_by(|a, b| {
        format!("{:?}", a.partition)
            .cmp(&format!("{:?}", b.partition))
            .then(b.files.len().cmp(&a.files.len()))
    });
    groups
}

/// Compacts `ident`.
pub async fn compact(
    catalog: &LakeCatalog,
    ident: &TableIdent,
    options: &CompactOptions,
) -> Result<CompactReport> {
    if options.target_file_size == 0 || options.max_concurrent == 0 {
        return Err(Error::Invalid(
            "--target-file-size and --max-concurrent must be above 0".into(),
        ));
    }
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    refuse_delete_files(&table).await?;
    let live = files::live_files(&table, None).await?;
    let mut report = CompactReport {
        table: ident.to_string(),
        files_before: live.len(),
        bytes_before: live.iter().map(|f| f.data_file.file_size_in_bytes()).sum(),
        groups: plan(&live, table.metadata().default_partition_spec_id(), options),
        ..CompactReport::default()
    };
    if options.dry_run || report.groups.is_empty() {
        report.files_after = report.files_before;
        report.bytes_after = report.bytes_before;
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let outcomes: Vec<Result<Option<u64>>> = futures::stream::iter(report.groups.clone())
        .map(|group| rewrite(catalog, &table, group, options))
        .buffer_unordered(options.max_concurrent)
        .collect()
        .await;
    let mut failure = None;
    for outcome in outcomes {
        match outcome {
            Ok(Some(rows)) => {
                report.committed += 1;
                report.rows_rewritten += rows;
            }
            Ok(None) => report.skipped += 1,
            Err(e) => failure = Some(e),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let after = catalog.load(ident).await?;
    let live = files::live_files(&after, None).await?;
    report.files_after = live.len();
    report.bytes_after = live.iter().map(|f| f.data_file.file_size_in_bytes()).sum();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Rows from position-delete or equality-delete files would come back if
/// their data files were rewritten without applying them.
async fn refuse_delete_files(table: &Table) -> Result<()> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    if list
        .entries()
        .iter()
        .any(|m| m.content == ManifestContentType::Deletes)
    {
        return Err(Error::Unsupported(format!(
            "{} has delete files (row-level deletes, e.g. from Trino's DELETE); \
             compacting it would bring deleted rows back, so it is left alone",
            table.identifier()
        )));
    }
    Ok(())
}

/// Rewrites one group and commits it. `Some(rows)` when committed, `None`
/// when an input file was removed meanwhile (new files deleted).
async fn rewrite(
    catalog: &LakeCatalog,
    table: &Table,
    group: Group,
    options: &CompactOptions,
) -> Result<Option<u64>> {
    let started = Instant::now();
    let schema = table.metadata().current_schema().clone();
    let field_ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    let tasks = group
        .files
        .iter()
        .map(|file| lake_table::read::scan_task(file, &schema, &field_ids))
        .collect();
    let mut writer = TableWriter::new(
        table,
        WriterOptions {
            target_file_size: Some(options.target_file_size),
            ..WriterOptions::default()
        },
    )
    .await?;
    let mut batches =
        lake_table::read::read_tasks(table.file_io().clone(), tasks, READ_CONCURRENCY);
    while let Some(batch) = batches.next().await {
        writer.write(&batch?).await?;
    }
    let written = writer.close().await?;
    let rewritten = started.elapsed();
    let rows: u64 = written.iter().map(DataFile::record_count).sum();
    if rows != group.rows() {
        delete(table, &written).await;
        return Err(Error::Invalid(format!(
            "{}: rewriting {} files read {rows} rows where their metadata counts {}; nothing was committed",
            table.identifier(),
            group.files.len(),
            group.rows()
        )));
    }
    let replace = Replace::new()
        .remove_files(group.files.iter().map(|f| &f.data_file))
        .add_files(written.clone())
        .set("lake.compact.files-removed", group.files.len().to_string())
        .set("lake.compact.files-added", written.len().to_string());
    // Committing against the table as it is now, not as planned: other
    // groups and concurrent appends have most likely moved it.
    let current = catalog.load(table.identifier()).await?;
    match replace.commit(catalog, &current).await {
        Ok(_) => {
            tracing::debug!(
                table = %table.identifier(),
                files = group.files.len(),
                rows,
                rewrite_s = rewritten.as_secs_f64(),
                commit_s = (started.elapsed() - rewritten).as_secs_f64(),
                "group committed"
            );
            Ok(Some(rows))
        }
        Err(lake_table::Error::FileNotLive { .. }) => {
            tracing::info!(
                table = %table.identifier(),
                "a file to compact was removed meanwhile; group skipped"
            );
            delete(table, &written).await;
            Ok(None)
        }
        // The commit may have landed unheard: its files are left for orphan
        // removal rather than risk deleting live data.
        Err(e) => Err(e.into()),
    }
}

async fn delete(table: &Table, files: &[DataFile]) {
    for file in files {
        if let Err(e) = table.file_io().delete(file.file_path()).await {
            tracing::warn!(path = file.file_path(), error = %e, "could not delete an uncommitted file");
        }
    }
}
