//! Snapshot expiry, then deletion of every file only expired snapshots reached.
//!
//! A snapshot is kept when it is younger than the cutoff, among the last
//! `retain_last` of the main branch, pointed at by a branch or tag, or at or
//! after a position another table records as consumed (`lake.source.<table>`
//! of silver and gold): their incremental runs walk the history from there.
//! Files are deleted only after the removal is committed, and only those the
//! table reached before and no longer reaches after (reloaded, so commits
//! landing meanwhile are counted): never a file a live snapshot needs.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use iceberg::TableIdent;
use iceberg::table::Table;
use lake_table::LakeCatalog;
use lake_table::files::{self, Reachable};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct ExpireOptions {
    /// Snapshots older than this may expire.
    pub older_than: Duration,
    /// The newest snapshots of the main branch kept whatever their age.
    pub retain_last: usize,
    /// List what would be removed and deleted; change nothing.
    pub dry_run: bool,
}

impl Default for ExpireOptions {
    fn default() -> Self {
        Self {
            older_than: Duration::from_secs(5 * 24 * 3600),
            retain_last: 1,
            dry_run: false,
        }
    }
}

/// Files unreachable after expiry, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unreachable {
    pub manifest_lists: BTreeSet<String>,
    pub manifests: BTreeSet<String>,
    pub data_files: BTreeSet<String>,
}

impl Unreachable {
    fn between(before: &Reachable, after: &Reachable) -> Self {
        let minus = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect();
        Self {
            manifest_lists: minus(&before.manifest_lists, &after.manifest_lists),
            manifests: minus(&before.manifests, &after.manifests),
            data_files: minus(&before.data_files, &after.data_files),
        }
    }

    pub fn len(&self) -> usize {
        self.manifest_lists.len() + self.manifests.len() + self.data_files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.manifest_lists
            .iter()
            .chain(&self.manifests)
            .chain(&self.data_files)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ExpireReport {
    pub table: String,
    pub snapshots_before: usize,
    /// Snapshots removed (or, on a dry run, that would be).
    pub expired: Vec<i64>,
    /// Snapshots old enough that were kept because another table's
    /// incremental position needs them.
    pub kept_for_positions: usize,
    /// Files deleted (or that would be).
    pub files: Unreachable,
    /// Deletions that failed; the files are left for orphan removal.
    pub delete_failures: usize,
    pub elapsed: Duration,
}

/// Expires `ident`'s snapshots and deletes the files only they reached.
/// `positions` are snapshot ids of this table that other tables recorded as
/// consumed (see [`positions_in`]).
pub async fn expire_snapshots(
    catalog: &LakeCatalog,
    ident: &TableIdent,
    options: &ExpireOptions,
    positions: &HashSet<i64>,
) -> Result<ExpireReport> {
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    let cutoff_ms = crate::age_cutoff_micros(lake_core::now_micros(), options.older_than) / 1000;
    let (expired, kept_for_positions) = plan(&table, cutoff_ms, options.retain_last, positions);
    let mut report = ExpireReport {
        table: ident.to_string(),
        snapshots_before: table.metadata().snapshots().count(),
        expired: expired.clone(),
        kept_for_positions,
        ..ExpireReport::default()
    };
    if expired.is_empty() {
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let before = files::reachable_files(&table).await?;
    if options.dry_run {
        let gone: HashSet<i64> = expired.iter().copied().collect();
        let after = files::reachable_from(&table, |id| !gone.contains(&id)).await?;
        report.files = Unreachable::between(&before, &after);
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let committed = lake_table::remove_snapshots(catalog, &table, &expired).await?;
    // Reloaded: snapshots committed since `before` was read are counted.
    let current = catalog.load(committed.identifier()).await?;
    let still: Vec<i64> = expired
        .iter()
        .copied()
        .filter(|id| current.metadata().snapshot_by_id(*id).is_some())
        .collect();
    if !still.is_empty() {
        return Err(Error::Invalid(format!(
            "{ident}: the catalog kept {} of the snapshots it was asked to remove; no file was deleted",
            still.len()
        )));
    }
    let after = files::reachable_files(&current).await?;
    report.files = Unreachable::between(&before, &after);
    report.delete_failures = files::delete_paths(&current, report.files.iter()).await;
    crate::count_deleted(
        &report.table,
        "expired",
        report.files.iter().count(),
        report.delete_failures,
    );
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The snapshots to expire, oldest first, and how many old ones were kept
/// only for `positions`.
pub fn plan(
    table: &Table,
    cutoff_ms: i64,
    retain_last: usize,
    positions: &HashSet<i64>,
) -> (Vec<i64>, usize) {
    let metadata = table.metadata();
    let mut keep = files::referenced_snapshots(metadata);
    keep.extend(
        files::ancestry(metadata)
            .take(retain_last)
            .map(|s| s.snapshot_id()),
    );
    // Everything from the oldest consumed position on stays: incremental
    // readers walk parents from there to the current snapshot.
    let oldest_position = positions
        .iter()
        .filter_map(|id| metadata.snapshot_by_id(*id))
        .map(|s| s.sequence_number())
        .min();
    let mut expired = Vec::new();
    let mut kept_for_positions = 0;
    let mut snapshots: Vec<_> = metadata.snapshots().collect();
    snapshots.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    for snapshot in snapshots {
        let id = snapshot.snapshot_id();
        if keep.contains(&id) || snapshot.timestamp_ms() >= cutoff_ms {
            continue;
        }
        if oldest_position.is_some_and(|oldest| snapshot.sequence_number() >= oldest) {
            kept_for_positions += 1;
            continue;
        }
        expired.push(id);
    }
    (expired, kept_for_positions)
}

/// The snapshot ids of `source` that the tables in `readers` record as
/// consumed (`lake.source.<source>` in their current snapshot's summary).
pub fn positions_in(readers: &[Table], source: &TableIdent) -> HashSet<i64> {
    let key = files::source_key(source);
    readers
        .iter()
        .filter_map(|t| files::summary_lookup(t, &key))
        .filter_map(|(_, value)| value.parse().ok())
        .collect()
}
