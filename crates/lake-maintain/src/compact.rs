//! Bin-pack compaction: per partition, small files are rewritten into files
//! near the target size. Files written under an earlier partition spec are
//! all rewritten, into the current one, so a table whose partitioning
//! evolved converges to one layout.
//!
//! Each group of files is read whole, written anew with the table's writer and
//! swapped in by a `replace` commit. A replace rebases over concurrent appends,
//! so ingest running at the same time neither loses a row nor waits for long;
//! it is refused only when one of its input files was removed meanwhile (by
//! another compaction or a retention delete), and then its new files are
//! deleted and the group is reported as skipped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::StreamExt;
use iceberg::TableIdent;
use iceberg::spec::{DataFile, Datum, ManifestContentType, PartitionSpec, Struct};
use iceberg::table::Table;
use lake_core::metrics as names;
use lake_table::files::{self, LiveFile};
use lake_table::{LakeCatalog, ManifestCache, Replace, TableWriter, WriterOptions};

use crate::error::{Error, Result};

/// Small files of a group read at once: their reads are mostly waiting on
/// storage round trips, and row order within a group does not matter.
const READ_CONCURRENCY: usize = 8;
/// Batches decoded ahead of the encoder (8 k rows each): enough to keep it
/// fed, few enough to bound memory.
const READ_AHEAD_BATCHES: usize = 8;

/// Files below this share of the target size are candidates.
const SMALL_SHARE: f64 = 0.75;

#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Size the rewritten files aim at; each table's own
    /// `write.target-file-size-bytes` (else 512 MiB) when `None`.
    pub target_file_size: Option<u64>,
    /// A group is rewritten only when it holds at least this many files.
    pub min_input_files: usize,
    /// Groups rewritten at the same time.
    pub max_concurrent: usize,
    /// List the groups, change nothing.
    pub dry_run: bool,
    /// Only files that may hold rows matching this (see [`crate::filter`]).
    pub filter: Option<String>,
    /// Groups per commit; 0 commits all groups of a table at once.
    pub groups_per_commit: usize,
    /// Columns the rows of each rewritten group are sorted by, so that the
    /// new files' column ranges are narrow and readers skip more of them.
    pub sort_by: Vec<String>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_file_size: None,
            min_input_files: 5,
            max_concurrent: 1,
            dry_run: false,
            filter: None,
            groups_per_commit: 1,
            sort_by: Vec::new(),
        }
    }
}

/// Files of one partition to be rewritten together.
#[derive(Clone, Debug)]
pub struct Group {
    /// The partition, under the current spec (empty for an earlier spec's
    /// group, whose files span partitions).
    pub partition: Struct,
    /// The spec the files were written under when it is not the current
    /// one: the group moves them into the current partitioning.
    pub earlier_spec: Option<i32>,
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
    /// The size files were merged towards (the option, else the table's).
    pub target_file_size: u64,
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
/// partition spec is `spec`: per partition, the files under `SMALL_SHARE`
/// of the target, packed first-fit by decreasing size into groups of at
/// most the `target` size, kept when they hold at least `min_input_files`
/// (and two) files.
///
/// Files written under an earlier spec are taken whatever their size or
/// number, ordered by the lower bound of the current spec's first source
/// column and packed in that order up to the target: each group then covers
/// a run of the current partitions, and the rewrites rarely put two files
/// into one of them.
pub fn plan(
    live: &[LiveFile],
    spec: &PartitionSpec,
    target: u64,
    options: &CompactOptions,
) -> Vec<Group> {
    let small = (target as f64 * SMALL_SHARE) as u64;
    let mut by_partition: HashMap<&Struct, Vec<&LiveFile>> = HashMap::new();
    let mut earlier: BTreeMap<i32, Vec<&LiveFile>> = BTreeMap::new();
    for file in live {
        if file.partition_spec_id != spec.spec_id() {
            earlier
                .entry(file.partition_spec_id)
                .or_default()
                .push(file);
        } else if file.data_file.file_size_in_bytes() < small {
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
            match bins.iter_mut().find(|(used, _)| used + size <= target) {
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
                    earlier_spec: None,
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
    let order_by = spec.fields().first().map(|f| f.source_id);
    for (spec_id, mut files) in earlier {
        // Files without the bound (no statistics, all null) sort first.
        fn bound(file: &LiveFile, field: Option<i32>) -> Option<&Datum> {
            file.data_file.lower_bounds().get(&field?)
        }
        files.sort_by(|a, b| {
            bound(a, order_by)
                .partial_cmp(&bound(b, order_by))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.path().cmp(b.path()))
        });
        let mut used = 0;
        let mut members: Vec<LiveFile> = Vec::new();
        for file in files {
            let size = file.data_file.file_size_in_bytes();
            if !members.is_empty() && used + size > target {
                groups.push(Group {
                    partition: Struct::empty(),
                    earlier_spec: Some(spec_id),
                    files: std::mem::take(&mut members),
                });
                used = 0;
            }
            used += size;
            members.push(file.clone());
        }
        if !members.is_empty() {
            groups.push(Group {
                partition: Struct::empty(),
                earlier_spec: Some(spec_id),
                files: members,
            });
        }
    }
    groups
}

/// Compacts `ident`.
pub async fn compact(
    catalog: &LakeCatalog,
    ident: &TableIdent,
    options: &CompactOptions,
) -> Result<CompactReport> {
    if options.target_file_size == Some(0) || options.max_concurrent == 0 {
        return Err(Error::Invalid(
            "--target-file-size and --max-concurrent must be above 0".into(),
        ));
    }
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    refuse_delete_files(&table).await?;
    let target = options
        .target_file_size
        .unwrap_or_else(|| lake_table::writer::target_file_size(&table));
    let schema = table.metadata().current_schema().clone();
    if let Some(missing) = options
        .sort_by
        .iter()
        .find(|c| schema.field_by_name(c).is_none())
    {
        return Err(Error::Invalid(format!(
            "--sort-by: {ident} has no column `{missing}`"
        )));
    }
    // Kept for the commits: each reads only the manifests the one before
    // it did not.
    let mut cache = ManifestCache::default();
    let live = files::live_files_cached(&table, None, &mut cache).await?;
    let candidates: Vec<LiveFile> = match &options.filter {
        None => live.clone(),
        Some(filter) => {
            let predicate = crate::filter::parse(filter, &schema)?;
            let matching = crate::filter::matching_files(&table, predicate).await?;
            live.iter()
                .filter(|f| matching.contains(f.path()))
                .cloned()
                .collect()
        }
    };
    let mut report = CompactReport {
        table: ident.to_string(),
        target_file_size: target,
        files_before: live.len(),
        bytes_before: live.iter().map(|f| f.data_file.file_size_in_bytes()).sum(),
        groups: plan(
            &candidates,
            table.metadata().default_partition_spec(),
            target,
            options,
        ),
        ..CompactReport::default()
    };
    if options.dry_run || report.groups.is_empty() {
        report.files_after = report.files_before;
        report.bytes_after = report.bytes_before;
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let per_commit = match options.groups_per_commit {
        0 => report.groups.len(),
        n => n,
    };
    // Groups are rewritten `max_concurrent` at a time, each on a task of its
    // own so that they run on the runtime's workers side by side rather than
    // taking turns on the thread that awaits them, and committed as every
    // `per_commit` of them are written. Dropping the set (on an error) aborts
    // the rewrites still in flight; what they wrote is left for orphan removal.
    let mut pending = report.groups.clone().into_iter();
    let mut running = tokio::task::JoinSet::new();
    let sort_by: std::sync::Arc<[String]> = options.sort_by.clone().into();
    let mut start_next = |running: &mut tokio::task::JoinSet<_>| {
        if let Some(group) = pending.next() {
            let (table, sort_by) = (table.clone(), sort_by.clone());
            running.spawn(async move {
                let files = rewrite(&table, &group, target, &sort_by).await;
                (group, files)
            });
        }
    };
    for _ in 0..options.max_concurrent {
        start_next(&mut running);
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut new_files: Vec<DataFile> = Vec::new();
    loop {
        let next = running.join_next().await;
        let done = next.is_none();
        if let Some(joined) = next {
            let (group, files) = match joined {
                Ok(rewritten) => rewritten,
                Err(e) => {
                    delete(&table, &new_files).await;
                    return Err(Error::Internal(format!("a group's rewrite failed: {e}")));
                }
            };
            match files {
                Ok(files) => {
                    groups.push(group);
                    new_files.extend(files);
                    start_next(&mut running);
                }
                Err(e) => {
                    delete(&table, &new_files).await;
                    return Err(e);
                }
            }
        }
        if groups.len() == per_commit || (done && !groups.is_empty()) {
            let rows: u64 = groups.iter().map(Group::rows).sum();
            let count = groups.len();
            if commit_groups(
                catalog,
                &table,
                &groups,
                std::mem::take(&mut new_files),
                &mut cache,
            )
            .await?
            {
                report.committed += count;
                report.rows_rewritten += rows;
                let label = report.table.clone();
                let files = groups.iter().map(|g| g.files.len() as u64).sum::<u64>();
                let bytes = groups.iter().map(Group::bytes).sum::<u64>();
                metrics::counter!(names::COMPACT_FILES_REWRITTEN_TOTAL, "table" => label.clone())
                    .increment(files);
                metrics::counter!(names::COMPACT_BYTES_REWRITTEN_TOTAL, "table" => label)
                    .increment(bytes);
            } else {
                report.skipped += count;
            }
            groups.clear();
        }
        if done {
            break;
        }
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

/// Rewrites one group into new data files (not committed), checking that
/// they hold exactly the group's rows. Files of the current spec left in
/// their order are merged (the table's plain columns copied page by page,
/// see [`lake_table::merge`]) where they qualify, else read and written
/// anew.
async fn rewrite(
    table: &Table,
    group: &Group,
    target: u64,
    sort_by: &[String],
) -> Result<Vec<DataFile>> {
    let merged = if sort_by.is_empty() && group.earlier_spec.is_none() {
        lake_table::merge::merge(table, &group.files, &group.partition, target).await?
    } else {
        None
    };
    let written = match merged {
        Some(merged) => {
            tracing::debug!(
                table = %table.identifier(),
                files = group.files.len(),
                copied = ?merged.copied_columns,
                "group merged"
            );
            merged.files
        }
        None => write_anew(table, group, target, sort_by).await?,
    };
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
    Ok(written)
}

/// The group's rows read and written again with the table's writer (sorted
/// by `sort_by` when given, into the current partitioning).
async fn write_anew(
    table: &Table,
    group: &Group,
    target: u64,
    sort_by: &[String],
) -> Result<Vec<DataFile>> {
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
            target_file_size: Some(target),
            ..WriterOptions::default()
        },
    )
    .await?;
    let mut batches = lake_table::read::read_ahead(
        lake_table::read::read_tasks(table.file_io().clone(), tasks, READ_CONCURRENCY),
        READ_AHEAD_BATCHES,
    );
    if sort_by.is_empty() {
        while let Some(batch) = batches.next().await {
            writer.write(&batch?).await?;
        }
    } else {
        let mut all = Vec::new();
        while let Some(batch) = batches.next().await {
            all.push(batch?);
        }
        let sorted = sort(&all, sort_by)?;
        let mut offset = 0;
        while offset < sorted.num_rows() {
            let length = SORTED_SLICE_ROWS.min(sorted.num_rows() - offset);
            writer.write(&sorted.slice(offset, length)).await?;
            offset += length;
        }
    }
    Ok(writer.close().await?)
}

/// Rows handed to the writer at once after sorting.
const SORTED_SLICE_ROWS: usize = 64 * 1024;

/// The rows of `batches` in one batch, ordered by `columns` (ascending,
/// nulls first).
fn sort(batches: &[RecordBatch], columns: &[String]) -> Result<RecordBatch> {
    let Some(first) = batches.first() else {
        return Err(Error::Invalid("nothing to sort".into()));
    };
    let all = arrow_select::concat::concat_batches(&first.schema(), batches)?;
    let keys: Vec<arrow_ord::sort::SortColumn> = columns
        .iter()
        .map(|name| {
            all.column_by_name(name)
                .map(|values| arrow_ord::sort::SortColumn {
                    values: values.clone(),
                    options: None,
                })
                .ok_or_else(|| Error::Invalid(format!("--sort-by: no column `{name}`")))
        })
        .collect::<Result<_>>()?;
    let indices = arrow_ord::sort::lexsort_to_indices(&keys, None)?;
    Ok(arrow_select::take::take_record_batch(&all, &indices)?)
}

/// Swaps the groups' files for `added` in one replace commit against the
/// table as it is now. `false` when an input file was removed meanwhile
/// (another compaction, retention): nothing is committed and `added` is
/// deleted.
async fn commit_groups(
    catalog: &LakeCatalog,
    table: &Table,
    groups: &[Group],
    added: Vec<DataFile>,
    cache: &mut ManifestCache,
) -> Result<bool> {
    let started = Instant::now();
    let removed = groups.iter().flat_map(|g| g.files.iter()).count();
    let replace = Replace::new()
        .remove_files(
            groups
                .iter()
                .flat_map(|g| g.files.iter().map(|f| &f.data_file)),
        )
        .add_files(added.clone())
        .set("lake.compact.files-removed", removed.to_string())
        .set("lake.compact.files-added", added.len().to_string());
    // Committing against the table as it is now, not as planned: other
    // groups and concurrent appends have most likely moved it.
    let current = catalog.load(table.identifier()).await?;
    // The new files are partitioned by the spec the rewrite began under;
    // a commit records them under the current one.
    if current.metadata().default_partition_spec_id()
        != table.metadata().default_partition_spec_id()
    {
        tracing::info!(
            table = %table.identifier(),
            "the partitioning changed during compaction; groups skipped"
        );
        delete(table, &added).await;
        return Ok(false);
    }
    match replace.commit_cached(catalog, &current, cache).await {
        Ok(_) => {
            tracing::debug!(
                table = %table.identifier(),
                groups = groups.len(),
                files = removed,
                commit_s = started.elapsed().as_secs_f64(),
                "groups committed"
            );
            Ok(true)
        }
        Err(lake_table::Error::FileNotLive { .. }) => {
            tracing::info!(
                table = %table.identifier(),
                "a file to compact was removed meanwhile; groups skipped"
            );
            delete(table, &added).await;
            Ok(false)
        }
        // The commit may have landed unheard: its files are left for orphan
        // removal rather than risk deleting live data.
        Err(e) => Err(e.into()),
    }
}

async fn delete(table: &Table, files: &[DataFile]) {
    let failed = files::delete_data_files(table, files).await;
    if failed > 0 {
        tracing::warn!(table = %table.identifier(), failed, "could not delete uncommitted files");
    }
}
