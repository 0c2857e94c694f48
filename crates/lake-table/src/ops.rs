//! Snapshot operations and the commit loop.
//!
//! Each operation is resolved against the table as it is at each attempt: on a
//! 409 the table is reloaded and the operation decides whether it still holds
//! (rebase) or must be refused (typed conflict). Nothing commits twice: every
//! attempt asserts the snapshot it was built on, and a commit whose answer was
//! lost is looked for before anything is sent again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use iceberg::TableIdent;
use iceberg::spec::{DataFile, Operation, Struct};
use iceberg::table::Table;

use crate::catalog::{LakeCatalog, Outcome};
use crate::error::{Error, Result};
use crate::files::{
    LiveFile, LoadedManifest, ManifestCache, appended_between, live_in, load_manifests,
};
use crate::produce::{self, Change, Staged};

/// Attempts before a commit that keeps losing races gives up.
pub const MAX_ATTEMPTS: usize = 40;

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(MAX_ATTEMPTS)
        .build()
}

/// Which live data files an overwrite or delete removes. Files are removed
/// whole; a selector never splits one.
#[derive(Clone)]
pub enum FileSelector {
    /// Exactly these paths.
    Paths(HashSet<String>),
    /// Every file whose partition tuple is one of these (under the table's
    /// default partition spec).
    Partitions(HashSet<Struct>),
    /// Every file written under one of these partition specs with one of
    /// these tuples: partitions of a table whose spec evolved.
    SpecPartitions(HashSet<(i32, Struct)>),
    /// Every file the predicate accepts.
    Matching(Arc<dyn Fn(&DataFile) -> bool + Send + Sync>),
}

impl std::fmt::Debug for FileSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSelector::Paths(p) => write!(f, "Paths({} files)", p.len()),
            FileSelector::Partitions(p) => write!(f, "Partitions({} partitions)", p.len()),
            FileSelector::SpecPartitions(p) => {
                write!(f, "SpecPartitions({} partitions)", p.len())
            }
            FileSelector::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

impl FileSelector {
    pub fn paths<S: Into<String>>(paths: impl IntoIterator<Item = S>) -> Self {
        FileSelector::Paths(paths.into_iter().map(Into::into).collect())
    }

    pub fn partitions(values: impl IntoIterator<Item = Struct>) -> Self {
        FileSelector::Partitions(values.into_iter().collect())
    }

    /// Partitions as (spec id, tuple) pairs.
    pub fn spec_partitions(values: impl IntoIterator<Item = (i32, Struct)>) -> Self {
        FileSelector::SpecPartitions(values.into_iter().collect())
    }

    pub fn matching(predicate: impl Fn(&DataFile) -> bool + Send + Sync + 'static) -> Self {
        FileSelector::Matching(Arc::new(predicate))
    }

    fn selects(&self, file: &LiveFile, default_spec_id: i32) -> bool {
        match self {
            FileSelector::Paths(paths) => paths.contains(file.path()),
            FileSelector::Partitions(values) => {
                file.partition_spec_id == default_spec_id
                    && values.contains(file.data_file.partition())
            }
            FileSelector::SpecPartitions(values) => {
                values.contains(&(file.partition_spec_id, file.data_file.partition().clone()))
            }
            FileSelector::Matching(predicate) => predicate(&file.data_file),
        }
    }
}

/// The condition `expect_parent` sets: the table's main branch must be at
/// this snapshot (`None`: the table must have no snapshot yet).
type ExpectedParent = Option<Option<i64>>;

fn check_parent(base: &Table, expected: ExpectedParent) -> Result<()> {
    match expected {
        Some(expected) if base.metadata().current_snapshot_id() != expected => {
            Err(Error::Conflict {
                table: base.identifier().clone(),
                reason: format!(
                    "expected it at snapshot {}, it is at {}",
                    show(expected),
                    show(base.metadata().current_snapshot_id())
                ),
                current: Box::new(base.clone()),
            })
        }
        _ => Ok(()),
    }
}

fn show(snapshot: Option<i64>) -> String {
    snapshot.map_or("none (empty table)".into(), |id| id.to_string())
}

/// Adds files (operation `append`). Without `expect_parent` it rebases over
/// anything: appends commute.
#[derive(Clone, Debug, Default)]
pub struct Append {
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
    expected_parent: ExpectedParent,
}

impl Append {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_files(mut self, files: impl IntoIterator<Item = DataFile>) -> Self {
        self.files.extend(files);
        self
    }

    /// A property for the snapshot summary (`lake.kafka.tweets` = offsets…).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Commit only if the table is still at `snapshot`; otherwise fail with
    /// [`Error::Conflict`] and commit nothing.
    pub fn expect_parent(mut self, snapshot: Option<i64>) -> Self {
        self.expected_parent = Some(snapshot);
        self
    }

    pub async fn commit(self, catalog: &LakeCatalog, table: &Table) -> Result<Table> {
        commit(catalog, table, Op::Append(self)).await
    }
}

/// Swaps files for files holding the same rows (operation `replace`, e.g.
/// compaction). Rebases over concurrent appends; refused with
/// [`Error::FileNotLive`] when a file to remove was already removed.
#[derive(Clone, Debug, Default)]
pub struct Replace {
    remove: HashSet<String>,
    add: Vec<DataFile>,
    properties: HashMap<String, String>,
}

impl Replace {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn remove_paths<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        self.remove.extend(paths.into_iter().map(Into::into));
        self
    }

    pub fn remove_files<'a>(self, files: impl IntoIterator<Item = &'a DataFile>) -> Self {
        self.remove_paths(files.into_iter().map(|f| f.file_path().to_string()))
    }

    pub fn add_files(mut self, files: impl IntoIterator<Item = DataFile>) -> Self {
        self.add.extend(files);
        self
    }

    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub async fn commit(self, catalog: &LakeCatalog, table: &Table) -> Result<Table> {
        commit(catalog, table, Op::Replace(self)).await
    }

    /// [`Replace::commit`] reusing the manifests `cache` read for an earlier
    /// commit to this table.
    pub async fn commit_cached(
        self,
        catalog: &LakeCatalog,
        table: &Table,
        cache: &mut ManifestCache,
    ) -> Result<Table> {
        commit_cached(catalog, table, Op::Replace(self), cache).await
    }
}

/// Removes every live file the selector picks and adds new ones in one
/// snapshot (operation `overwrite`, e.g. rebuilding gold partitions).
///
/// Refused with [`Error::Conflict`] when data was appended, after the
/// snapshot the caller read (`validate_from`, default: the table passed to
/// `commit`), into files the selector picks: overwriting them would drop rows
/// the caller never saw.
#[derive(Clone, Debug)]
pub struct Overwrite {
    selector: FileSelector,
    add: Vec<DataFile>,
    properties: HashMap<String, String>,
    expected_parent: ExpectedParent,
    validate_from: Option<Option<i64>>,
}

impl Overwrite {
    pub fn new(selector: FileSelector) -> Self {
        Self {
            selector,
            add: Vec::new(),
            properties: HashMap::new(),
            expected_parent: None,
            validate_from: None,
        }
    }

    pub fn add_files(mut self, files: impl IntoIterator<Item = DataFile>) -> Self {
        self.add.extend(files);
        self
    }

    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub fn expect_parent(mut self, snapshot: Option<i64>) -> Self {
        self.expected_parent = Some(snapshot);
        self
    }

    /// The snapshot the new files were computed from; appends after it into
    /// selected files make the overwrite a conflict.
    pub fn validate_from(mut self, snapshot: Option<i64>) -> Self {
        self.validate_from = Some(snapshot);
        self
    }

    pub async fn commit(self, catalog: &LakeCatalog, table: &Table) -> Result<Table> {
        commit(catalog, table, Op::Overwrite(self)).await
    }
}

/// Removes every live file the selector picks (operation `delete`, e.g.
/// retention). Commits nothing when nothing is selected.
#[derive(Clone, Debug)]
pub struct Delete {
    selector: FileSelector,
    properties: HashMap<String, String>,
    expected_parent: ExpectedParent,
}

impl Delete {
    pub fn new(selector: FileSelector) -> Self {
        Self {
            selector,
            properties: HashMap::new(),
            expected_parent: None,
        }
    }

    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub fn expect_parent(mut self, snapshot: Option<i64>) -> Self {
        self.expected_parent = Some(snapshot);
        self
    }

    pub async fn commit(self, catalog: &LakeCatalog, table: &Table) -> Result<Table> {
        commit(catalog, table, Op::Delete(self)).await
    }
}

/// Merges the current snapshot's small data manifests into one per partition
/// spec (operation `replace`, no data change): reads plan from fewer files.
/// Commits nothing when no spec has two manifests to merge.
#[derive(Clone, Debug)]
pub struct RewriteManifests {
    /// Manifests at least this large are left as they are.
    pub small_below: u64,
}

impl Default for RewriteManifests {
    fn default() -> Self {
        Self {
            small_below: 8 * 1024 * 1024,
        }
    }
}

impl RewriteManifests {
    pub async fn commit(self, catalog: &LakeCatalog, table: &Table) -> Result<Table> {
        commit(catalog, table, Op::RewriteManifests(self)).await
    }
}

/// Any of the operations, for committing several tables at once.
#[derive(Clone, Debug)]
pub enum Op {
    Append(Append),
    Replace(Replace),
    Overwrite(Overwrite),
    Delete(Delete),
    RewriteManifests(RewriteManifests),
}

impl From<Append> for Op {
    fn from(op: Append) -> Self {
        Op::Append(op)
    }
}
impl From<Replace> for Op {
    fn from(op: Replace) -> Self {
        Op::Replace(op)
    }
}
impl From<Overwrite> for Op {
    fn from(op: Overwrite) -> Self {
        Op::Overwrite(op)
    }
}
impl From<Delete> for Op {
    fn from(op: Delete) -> Self {
        Op::Delete(op)
    }
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Append(_) => "append",
            Op::Replace(_) => "replace",
            Op::Overwrite(_) => "overwrite",
            Op::Delete(_) => "delete",
            Op::RewriteManifests(_) => "rewrite-manifests",
        }
    }

    /// Appends carry the base manifests over unread; the others need them to
    /// find the files they remove.
    fn reads_manifests(&self) -> bool {
        !matches!(self, Op::Append(_))
    }

    /// What this operation does on top of `base`, or `None` when there is
    /// nothing to commit. `first` is the table the caller handed in.
    async fn resolve(
        &self,
        base: &Table,
        first: &Table,
        manifests: Option<&[LoadedManifest]>,
    ) -> Result<Option<Change>> {
        let default_spec = base.metadata().default_partition_spec_id();
        let live = || live_in(manifests.unwrap_or_default());
        match self {
            Op::Append(op) => {
                check_parent(base, op.expected_parent)?;
                Ok(Some(Change {
                    operation: Operation::Append,
                    added: op.files.clone(),
                    removed: HashSet::new(),
                    properties: op.properties.clone(),
                    merge_below: None,
                }))
            }
            Op::Replace(op) => {
                if op.remove.is_empty() && op.add.is_empty() {
                    return Ok(None);
                }
                let live: HashSet<String> =
                    live().into_iter().map(|f| f.path().to_string()).collect();
                if let Some(gone) = op.remove.iter().find(|p| !live.contains(*p)) {
                    return Err(Error::FileNotLive {
                        table: base.identifier().clone(),
                        path: gone.clone(),
                        current: Box::new(base.clone()),
                    });
                }
                Ok(Some(Change {
                    operation: Operation::Replace,
                    added: op.add.clone(),
                    removed: op.remove.clone(),
                    properties: op.properties.clone(),
                    merge_below: None,
                }))
            }
            Op::Overwrite(op) => {
                check_parent(base, op.expected_parent)?;
                let from = op
                    .validate_from
                    .unwrap_or_else(|| first.metadata().current_snapshot_id());
                if let Some(current) = base.metadata().current_snapshot_id()
                    && from != Some(current)
                {
                    let landed = appended_between(base, from, current).await?;
                    if let Some(file) = landed.iter().find(|f| op.selector.selects(f, default_spec))
                    {
                        return Err(Error::Conflict {
                            table: base.identifier().clone(),
                            reason: format!(
                                "{} was appended after snapshot {} into data this overwrite replaces",
                                file.path(),
                                show(from)
                            ),
                            current: Box::new(base.clone()),
                        });
                    }
                }
                let removed: HashSet<String> = live()
                    .into_iter()
                    .filter(|f| op.selector.selects(f, default_spec))
                    .map(|f| f.path().to_string())
                    .collect();
                if removed.is_empty() && op.add.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Change {
                    operation: Operation::Overwrite,
                    added: op.add.clone(),
                    removed,
                    properties: op.properties.clone(),
                    merge_below: None,
                }))
            }
            Op::RewriteManifests(op) => {
                let mut small_per_spec: HashMap<i32, usize> = HashMap::new();
                for manifest in manifests.unwrap_or_default() {
                    if manifest.is_small_data(op.small_below) {
                        *small_per_spec
                            .entry(manifest.file.partition_spec_id)
                            .or_default() += 1;
                    }
                }
                if small_per_spec.values().all(|n| *n < 2) {
                    return Ok(None);
                }
                Ok(Some(Change {
                    operation: Operation::Replace,
                    added: Vec::new(),
                    removed: HashSet::new(),
                    properties: HashMap::new(),
                    merge_below: Some(op.small_below),
                }))
            }
            Op::Delete(op) => {
                check_parent(base, op.expected_parent)?;
                let removed: HashSet<String> = live()
                    .into_iter()
                    .filter(|f| op.selector.selects(f, default_spec))
                    .map(|f| f.path().to_string())
                    .collect();
                if removed.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Change {
                    operation: Operation::Delete,
                    added: Vec::new(),
                    removed,
                    properties: op.properties.clone(),
                    merge_below: None,
                }))
            }
        }
    }

    /// Resolves and writes one attempt; `None` when there is nothing to commit.
    async fn stage(
        &self,
        base: &Table,
        first: &Table,
        cache: &mut ManifestCache,
    ) -> Result<Option<Staged>> {
        let manifests = match (self.reads_manifests(), base.metadata().current_snapshot()) {
            (false, _) => None,
            (true, Some(snapshot)) => Some(load_manifests(base, snapshot, cache).await?),
            (true, None) => Some(Vec::new()),
        };
        let Some(change) = self.resolve(base, first, manifests.as_deref()).await? else {
            return Ok(None);
        };
        Ok(Some(
            produce::stage(base, manifests.as_deref(), change).await?,
        ))
    }
}

fn record(op: &str, outcome: &str, started: Instant) {
    use lake_core::metrics as names;
    metrics::counter!(names::TABLE_COMMITS_TOTAL, "operation" => op.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!(names::TABLE_COMMIT_DURATION_SECONDS, "operation" => op.to_string())
        .record(started.elapsed().as_secs_f64());
}

/// Commits one operation to one table, rebasing on conflicts where the
/// operation allows it. Returns the table as committed (or unchanged when
/// there was nothing to commit).
pub async fn commit(catalog: &LakeCatalog, table: &Table, op: impl Into<Op>) -> Result<Table> {
    commit_cached(catalog, table, op, &mut ManifestCache::default()).await
}

/// [`commit`] reading only the manifests `cache` does not hold yet.
pub async fn commit_cached(
    catalog: &LakeCatalog,
    table: &Table,
    op: impl Into<Op>,
    cache: &mut ManifestCache,
) -> Result<Table> {
    let op = op.into();
    let ident = table.identifier().clone();
    let first = table.clone();
    let mut base = table.clone();
    let mut delays = backoff();
    // Snapshots whose commit may have landed without our hearing back.
    let mut unconfirmed: Vec<i64> = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let Some(staged) = op.stage(&base, &first, cache).await? else {
            return Ok(base);
        };
        let started = Instant::now();
        let outcome = catalog.commit_table(&ident, &staged.request, &base).await?;
        match outcome {
            Outcome::Committed(table) => {
                record(op.name(), "committed", started);
                tracing::debug!(table = %ident, operation = op.name(), attempt, snapshot = staged.snapshot_id, "committed");
                return Ok(table);
            }
            Outcome::Refused(message) => {
                record(op.name(), "refused", started);
                staged.discard(&base).await;
                return Err(Error::Catalog(message));
            }
            Outcome::Conflict(message) | Outcome::Retry(message) => {
                record(op.name(), "conflict", started);
                tracing::debug!(table = %ident, operation = op.name(), attempt, %message, "retrying commit");
                staged.discard(&base).await;
            }
            Outcome::Unknown(message) => {
                record(op.name(), "unknown", started);
                tracing::warn!(table = %ident, operation = op.name(), %message, "commit outcome unknown; checking the table");
                unconfirmed.push(staged.snapshot_id);
            }
        }
        if let Some(delay) = delays.next() {
            tokio::time::sleep(delay).await;
        }
        base = reload(catalog, &ident, &unconfirmed).await?;
        if let Some(id) = landed(&base, &unconfirmed) {
            tracing::info!(table = %ident, snapshot = id, "an unconfirmed commit had landed");
            return Ok(base);
        }
    }
    Err(Error::TooManyConflicts {
        table: ident,
        attempts: MAX_ATTEMPTS as u32,
    })
}

async fn reload(catalog: &LakeCatalog, ident: &TableIdent, unconfirmed: &[i64]) -> Result<Table> {
    match catalog.load(ident).await {
        Ok(table) => Ok(table),
        Err(e) if !unconfirmed.is_empty() => Err(Error::CommitStateUnknown {
            table: ident.clone(),
            message: format!("and reloading failed: {e}"),
        }),
        Err(e) => Err(e),
    }
}

fn landed(table: &Table, unconfirmed: &[i64]) -> Option<i64> {
    unconfirmed
        .iter()
        .copied()
        .find(|id| table.metadata().snapshot_by_id(*id).is_some())
}

/// Commits operations on several tables atomically (all or none), through the
/// catalog's multi-table transaction endpoint. Returns the tables afterwards,
/// in the order given.
pub async fn commit_all(catalog: &LakeCatalog, changes: Vec<(Table, Op)>) -> Result<Vec<Table>> {
    let firsts: Vec<Table> = changes.iter().map(|(t, _)| t.clone()).collect();
    let mut bases = firsts.clone();
    let mut delays = backoff();
    let mut unconfirmed: Vec<(usize, i64)> = Vec::new();
    let mut caches: Vec<ManifestCache> = changes.iter().map(|_| ManifestCache::default()).collect();
    for attempt in 1..=MAX_ATTEMPTS {
        let mut staged = Vec::new();
        for (i, (_, op)) in changes.iter().enumerate() {
            match op.stage(&bases[i], &firsts[i], &mut caches[i]).await {
                Ok(Some(s)) => staged.push((i, s)),
                Ok(None) => {}
                Err(e) => {
                    for (j, s) in staged {
                        s.discard(&bases[j]).await;
                    }
                    return Err(e);
                }
            }
        }
        if staged.is_empty() {
            return Ok(bases);
        }
        let requests: Vec<_> = staged.iter().map(|(_, s)| s.request.clone()).collect();
        let started = Instant::now();
        match catalog.commit_transaction(&requests).await? {
            Outcome::Committed(()) => {
                record("transaction", "committed", started);
                tracing::debug!(tables = staged.len(), attempt, "transaction committed");
                let mut tables = Vec::with_capacity(bases.len());
                for base in &bases {
                    tables.push(catalog.load(base.identifier()).await?);
                }
                return Ok(tables);
            }
            Outcome::Refused(message) => {
                record("transaction", "refused", started);
                for (j, s) in staged {
                    s.discard(&bases[j]).await;
                }
                return Err(Error::Catalog(message));
            }
            Outcome::Conflict(message) | Outcome::Retry(message) => {
                record("transaction", "conflict", started);
                tracing::debug!(attempt, %message, "retrying transaction");
                for (j, s) in staged {
                    s.discard(&bases[j]).await;
                }
            }
            Outcome::Unknown(message) => {
                record("transaction", "unknown", started);
                tracing::warn!(%message, "transaction outcome unknown; checking the tables");
                // All or none landed, so the first staged table tells.
                if let Some((i, s)) = staged.first() {
                    unconfirmed.push((*i, s.snapshot_id));
                }
            }
        }
        if let Some(delay) = delays.next() {
            tokio::time::sleep(delay).await;
        }
        for base in bases.iter_mut() {
            let ids: Vec<i64> = unconfirmed.iter().map(|(_, id)| *id).collect();
            *base = reload(catalog, base.identifier(), &ids).await?;
        }
        if unconfirmed
            .iter()
            .any(|(i, id)| bases[*i].metadata().snapshot_by_id(*id).is_some())
        {
            return Ok(bases);
        }
    }
    Err(Error::TooManyConflicts {
        table: firsts
            .first()
            .map(|t| t.identifier().clone())
            .ok_or_else(|| Error::Invalid("empty transaction".into()))?,
        attempts: MAX_ATTEMPTS as u32,
    })
}

/// Removes snapshots from the table's metadata (the commit half of snapshot
/// expiry; deleting the files they alone reach is the caller's next step).
///
/// The current snapshot and snapshots a branch or tag points at are never
/// removed, whatever `ids` holds. The commit asserts only the table's
/// identity: appends landing meanwhile do not make older snapshots any less
/// expired, so a conflict is retried against the reloaded table.
pub async fn remove_snapshots(catalog: &LakeCatalog, table: &Table, ids: &[i64]) -> Result<Table> {
    let ident = table.identifier().clone();
    let mut base = table.clone();
    let mut delays = backoff();
    for _ in 1..=MAX_ATTEMPTS {
        let metadata = base.metadata();
        let referenced = crate::files::referenced_snapshots(metadata);
        let remove: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| metadata.snapshot_by_id(*id).is_some() && !referenced.contains(id))
            .collect();
        if remove.is_empty() {
            return Ok(base);
        }
        let request = iceberg_catalog_rest::CommitTableRequest {
            identifier: Some(ident.clone()),
            requirements: vec![iceberg::TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            }],
            updates: vec![iceberg::TableUpdate::RemoveSnapshots {
                snapshot_ids: remove,
            }],
        };
        let started = Instant::now();
        match catalog.commit_table(&ident, &request, &base).await? {
            Outcome::Committed(table) => {
                record("expire", "committed", started);
                return Ok(table);
            }
            Outcome::Refused(message) => {
                record("expire", "refused", started);
                return Err(Error::Catalog(message));
            }
            // Removing snapshots twice is harmless: the reload shows what is
            // left to remove, if anything.
            Outcome::Conflict(message) | Outcome::Retry(message) | Outcome::Unknown(message) => {
                record("expire", "conflict", started);
                tracing::debug!(table = %ident, %message, "retrying snapshot removal");
            }
        }
        if let Some(delay) = delays.next() {
            tokio::time::sleep(delay).await;
        }
        base = catalog.load(&ident).await?;
    }
    Err(Error::TooManyConflicts {
        table: ident,
        attempts: MAX_ATTEMPTS as u32,
    })
}
