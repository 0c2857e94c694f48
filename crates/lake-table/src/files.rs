//! Reading a table's file sets: what is live in a snapshot, what was appended
//! between two snapshots, what any live snapshot still reaches, and what is
//! actually stored under the table's location.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::TableIdent;
use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, ManifestEntry, ManifestFile, ManifestStatus,
    Operation, SnapshotRef,
};
use iceberg::table::Table;
use lake_core::config::StorageConfig;
use lake_core::storage::Location;

use crate::error::{Error, Result};

/// Manifests read at once when loading a snapshot's file list.
const MANIFEST_CONCURRENCY: usize = 16;

/// A data file live in a snapshot, with the bookkeeping a rewrite must keep.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveFile {
    pub data_file: DataFile,
    /// The snapshot that added the file.
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: Option<i64>,
    /// The partition spec the file was written under (its manifest's).
    pub partition_spec_id: i32,
}

impl LiveFile {
    pub fn path(&self) -> &str {
        self.data_file.file_path()
    }
}

/// One manifest of a snapshot with its entries (inherited values resolved).
#[derive(Clone, Debug)]
pub(crate) struct LoadedManifest {
    pub file: ManifestFile,
    /// Shared with the cache and other attempts: never copied per attempt.
    pub entries: Arc<Vec<ManifestEntry>>,
}

impl LoadedManifest {
    /// A data manifest smaller than `limit` bytes: one rewrite-manifests merges.
    pub fn is_small_data(&self, limit: u64) -> bool {
        self.file.content == ManifestContentType::Data
            && u64::try_from(self.file.manifest_length).is_ok_and(|length| length < limit)
    }
}

/// Manifests already read, by path. Manifests are immutable once written, so
/// a commit retrying against a newer snapshot, or the next of a run of
/// commits to one table (compaction groups), reads only the manifests that
/// appeared since. Holds only the manifests of the snapshot read last.
#[derive(Debug, Default)]
pub struct ManifestCache(HashMap<String, Arc<Vec<ManifestEntry>>>);

/// Loads every manifest of `snapshot`, in manifest-list order, reading only
/// the manifests `cache` does not hold yet.
pub(crate) async fn load_manifests(
    table: &Table,
    snapshot: &SnapshotRef,
    cache: &mut ManifestCache,
) -> Result<Vec<LoadedManifest>> {
    let list = table.manifest_list_reader(snapshot).load().await?;
    let file_io = table.file_io().clone();
    let missing: Vec<ManifestFile> = list
        .entries()
        .iter()
        .filter(|file| !cache.0.contains_key(&file.manifest_path))
        .cloned()
        .collect();
    let loaded: Vec<(String, Arc<Vec<ManifestEntry>>)> = futures::stream::iter(missing)
        .map(|file| {
            let file_io = file_io.clone();
            async move {
                let manifest = file.load_manifest(&file_io).await?;
                let (entries, _) = manifest.into_parts();
                let entries = entries.iter().map(|e| e.as_ref().clone()).collect();
                Ok::<_, Error>((file.manifest_path, Arc::new(entries)))
            }
        })
        .buffer_unordered(MANIFEST_CONCURRENCY)
        .try_collect()
        .await?;
    cache.0.extend(loaded);
    let listed: HashSet<&str> = list
        .entries()
        .iter()
        .map(|file| file.manifest_path.as_str())
        .collect();
    cache.0.retain(|path, _| listed.contains(path.as_str()));
    list.entries()
        .iter()
        .map(|file| {
            cache
                .0
                .get(&file.manifest_path)
                .map(|entries| LoadedManifest {
                    file: file.clone(),
                    entries: entries.clone(),
                })
                .ok_or_else(|| {
                    Error::Internal(format!("manifest {} not loaded", file.manifest_path))
                })
        })
        .collect()
}

/// The data files live in `snapshot_id` (the current snapshot when `None`).
pub async fn live_files(table: &Table, snapshot_id: Option<i64>) -> Result<Vec<LiveFile>> {
    live_files_cached(table, snapshot_id, &mut ManifestCache::default()).await
}

/// [`live_files`] keeping the manifests in `cache` for commits that follow.
pub async fn live_files_cached(
    table: &Table,
    snapshot_id: Option<i64>,
    cache: &mut ManifestCache,
) -> Result<Vec<LiveFile>> {
    let snapshot = match snapshot_id {
        Some(id) => table.metadata().snapshot_by_id(id).ok_or_else(|| {
            Error::Invalid(format!("{} has no snapshot {id}", table.identifier()))
        })?,
        None => match table.metadata().current_snapshot() {
            Some(snapshot) => snapshot,
            None => return Ok(Vec::new()),
        },
    };
    Ok(live_in(&load_manifests(table, snapshot, cache).await?))
}

pub(crate) fn live_in(manifests: &[LoadedManifest]) -> Vec<LiveFile> {
    manifests
        .iter()
        .filter(|m| m.file.content == ManifestContentType::Data)
        .flat_map(|m| m.entries.iter().map(move |e| (m.file.partition_spec_id, e)))
        .filter(|(_, e)| e.is_alive() && e.content_type() == DataContentType::Data)
        .map(|(spec_id, e)| LiveFile {
            data_file: e.data_file.clone(),
            snapshot_id: e.snapshot_id.unwrap_or_default(),
            sequence_number: e.sequence_number.unwrap_or_default(),
            file_sequence_number: e.file_sequence_number,
            partition_spec_id: spec_id,
        })
        .collect()
}

/// The snapshots from `to` back to (not including) `from`, newest first,
/// following parents. `from = None` walks to the first snapshot.
///
/// Fails when `from` is not an ancestor of `to`: the range would be
/// meaningless (expired history, or a rolled-back branch).
pub fn snapshots_between(table: &Table, from: Option<i64>, to: i64) -> Result<Vec<SnapshotRef>> {
    let metadata = table.metadata();
    let mut chain = Vec::new();
    let mut cursor = Some(to);
    while let Some(id) = cursor {
        if Some(id) == from {
            return Ok(chain);
        }
        let snapshot = metadata.snapshot_by_id(id).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: snapshot {id} is not in the table's history (expired?)",
                table.identifier()
            ))
        })?;
        cursor = snapshot.parent_snapshot_id();
        chain.push(snapshot.clone());
    }
    match from {
        None => Ok(chain),
        Some(from) => Err(Error::Invalid(format!(
            "{}: snapshot {from} is not an ancestor of {to}",
            table.identifier()
        ))),
    }
}

/// The data files appended after snapshot `from` up to and including `to`,
/// oldest first. `replace` snapshots (compaction) and `delete` snapshots add no
/// new rows and are skipped; `append` and `overwrite` snapshots count.
pub async fn appended_between(table: &Table, from: Option<i64>, to: i64) -> Result<Vec<LiveFile>> {
    let mut snapshots = snapshots_between(table, from, to)?;
    snapshots.reverse();
    let mut files = Vec::new();
    for snapshot in snapshots {
        let operation = &snapshot.summary().operation;
        if !matches!(operation, Operation::Append | Operation::Overwrite) {
            continue;
        }
        let id = snapshot.snapshot_id();
        let list = table.manifest_list_reader(&snapshot).load().await?;
        for manifest in list.entries() {
            // Entries a snapshot adds sit in manifests that snapshot wrote.
            if manifest.added_snapshot_id != id
                || manifest.content != ManifestContentType::Data
                || !manifest.has_added_files()
            {
                continue;
            }
            let loaded = manifest.load_manifest(table.file_io()).await?;
            files.extend(
                loaded
                    .entries()
                    .iter()
                    .filter(|e| e.status() == ManifestStatus::Added && e.snapshot_id() == Some(id))
                    .map(|e| LiveFile {
                        data_file: e.data_file().clone(),
                        snapshot_id: id,
                        sequence_number: e.sequence_number().unwrap_or(snapshot.sequence_number()),
                        file_sequence_number: e.file_sequence_number,
                        partition_spec_id: manifest.partition_spec_id,
                    }),
            );
        }
    }
    Ok(files)
}

/// Summary key prefix of ingest's Kafka offsets, per topic.
pub const OFFSETS_KEY_PREFIX: &str = "lake.kafka.";
/// Summary key prefix of the source snapshot a transform consumed, per source.
pub const SOURCE_KEY_PREFIX: &str = "lake.source.";

/// Summary key: the newest Kafka record timestamp (milliseconds since the
/// Unix epoch) among the records a table holds, or, for a table built from
/// another, among those its consumed source snapshot held. Each layer copies
/// its source's value, so a gold table says how far the topic has reached it.
pub const NEWEST_RECORD_KEY: &str = "lake.newest-record-ms";
/// Summary key: how old that record was when the snapshot was committed
/// (milliseconds), the table's freshness as of that commit.
pub const FRESHNESS_KEY: &str = "lake.freshness-ms";

/// The newest Kafka record timestamp (ms) that has reached `table`, from the
/// newest snapshot along its ancestry that recorded one.
pub fn newest_record_ms(table: &Table) -> Option<i64> {
    summary_lookup(table, NEWEST_RECORD_KEY).and_then(|(_, value)| value.parse().ok())
}

/// [`newest_record_ms`] as of snapshot `snapshot_id`: what a reader of
/// that snapshot had received.
pub fn newest_record_ms_at(table: &Table, snapshot_id: i64) -> Option<i64> {
    let metadata = table.metadata();
    summary_lookup_from(
        metadata,
        metadata.snapshot_by_id(snapshot_id),
        NEWEST_RECORD_KEY,
    )
    .and_then(|(_, value)| value.parse().ok())
}

/// The summary entries a commit carries for `newest` (ms): the value itself
/// and its age now. Nothing when the source never recorded one.
pub fn freshness_summary(newest: Option<i64>) -> Vec<(String, String)> {
    let Some(newest) = newest else {
        return Vec::new();
    };
    let now = lake_core::now_micros() / 1000;
    vec![
        (NEWEST_RECORD_KEY.to_string(), newest.to_string()),
        (FRESHNESS_KEY.to_string(), (now - newest).max(0).to_string()),
    ]
}

/// The summary key holding the offsets ingest committed from `topic`.
pub fn offsets_key(topic: &str) -> String {
    format!("{OFFSETS_KEY_PREFIX}{topic}")
}

/// The summary key holding the snapshot of `source` a table was built from.
pub fn source_key(source: &TableIdent) -> String {
    format!("{SOURCE_KEY_PREFIX}{source}")
}

/// The current snapshot and its ancestors, newest first, as far as the
/// metadata still holds them.
pub fn ancestry(
    metadata: &iceberg::spec::TableMetadata,
) -> impl Iterator<Item = &SnapshotRef> + '_ {
    ancestry_from(metadata, metadata.current_snapshot())
}

/// `first` and its ancestors, newest first.
fn ancestry_from<'a>(
    metadata: &'a iceberg::spec::TableMetadata,
    first: Option<&'a SnapshotRef>,
) -> impl Iterator<Item = &'a SnapshotRef> + 'a {
    std::iter::successors(first, move |snapshot| {
        snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id))
    })
}

/// The newest snapshot along the current snapshot's ancestry whose summary
/// holds `key`, with its value.
pub fn summary_lookup(table: &Table, key: &str) -> Option<(i64, String)> {
    let metadata = table.metadata();
    summary_lookup_from(metadata, metadata.current_snapshot(), key)
}

/// [`summary_lookup`] along the ancestry of `first`.
fn summary_lookup_from(
    metadata: &iceberg::spec::TableMetadata,
    first: Option<&SnapshotRef>,
    key: &str,
) -> Option<(i64, String)> {
    ancestry_from(metadata, first).find_map(|snapshot| {
        snapshot
            .summary()
            .additional_properties
            .get(key)
            .map(|value| (snapshot.snapshot_id(), value.clone()))
    })
}

/// Files deleted at once by [`delete_paths`].
const DELETE_CONCURRENCY: usize = 16;

/// Deletes `paths` from the table's storage, several at a time; returns how
/// many deletions failed. Callers delete what no snapshot references
/// (abandoned attempts, expired files), so a failure is logged and left for
/// orphan removal rather than raised.
pub async fn delete_paths<S: AsRef<str>>(
    table: &Table,
    paths: impl IntoIterator<Item = S>,
) -> usize {
    let io = table.file_io().clone();
    let paths: Vec<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
    futures::stream::iter(paths)
        .map(|path| {
            let io = io.clone();
            async move {
                match io.delete(&path).await {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::debug!(%path, error = %e, "could not delete");
                        1
                    }
                }
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .fold(0usize, |n, failed| async move { n + failed })
        .await
}

/// [`delete_paths`] for data files written but never committed.
pub async fn delete_data_files(table: &Table, files: &[DataFile]) -> usize {
    delete_paths(table, files.iter().map(DataFile::file_path)).await
}

/// Snapshots a branch or tag points at. iceberg's metadata has no accessor
/// for its refs, so they are read from its serialized form.
pub fn referenced_snapshots(metadata: &iceberg::spec::TableMetadata) -> HashSet<i64> {
    let mut ids = HashSet::new();
    if let Some(id) = metadata.current_snapshot_id() {
        ids.insert(id);
    }
    if let Ok(json) = serde_json::to_value(metadata)
        && let Some(refs) = json.get("refs").and_then(|r| r.as_object())
    {
        ids.extend(
            refs.values()
                .filter_map(|r| r.get("snapshot-id").and_then(|id| id.as_i64())),
        );
    }
    ids
}

/// Every file some live snapshot or the current metadata still needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reachable {
    /// The current metadata file and the previous ones it lists.
    pub metadata: BTreeSet<String>,
    pub manifest_lists: BTreeSet<String>,
    pub manifests: BTreeSet<String>,
    /// Data and delete files live in at least one live snapshot.
    pub data_files: BTreeSet<String>,
    /// Statistics and partition-statistics files.
    pub statistics: BTreeSet<String>,
}

impl Reachable {
    pub fn contains(&self, path: &str) -> bool {
        self.metadata.contains(path)
            || self.manifest_lists.contains(path)
            || self.manifests.contains(path)
            || self.data_files.contains(path)
            || self.statistics.contains(path)
    }

    pub fn len(&self) -> usize {
        self.metadata.len()
            + self.manifest_lists.len()
            + self.manifests.len()
            + self.data_files.len()
            + self.statistics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Walks every snapshot in the table's metadata and collects what they reach.
/// Manifests shared between snapshots are read once.
pub async fn reachable_files(table: &Table) -> Result<Reachable> {
    reachable_from(table, |_| true).await
}

/// What the snapshots `keep` accepts reach, with the table's metadata files
/// (e.g. what would remain after expiring the others).
pub async fn reachable_from(table: &Table, keep: impl Fn(i64) -> bool) -> Result<Reachable> {
    let metadata = table.metadata();
    let mut reachable = Reachable::default();
    if let Some(location) = table.metadata_location() {
        reachable.metadata.insert(location.to_string());
    }
    for entry in metadata.metadata_log() {
        reachable.metadata.insert(entry.metadata_file.clone());
    }
    for stats in metadata.statistics_iter() {
        reachable.statistics.insert(stats.statistics_path.clone());
    }
    for stats in metadata.partition_statistics_iter() {
        reachable.statistics.insert(stats.statistics_path.clone());
    }

    let mut manifests: BTreeMap<String, ManifestFile> = BTreeMap::new();
    for snapshot in metadata.snapshots().filter(|s| keep(s.snapshot_id())) {
        reachable
            .manifest_lists
            .insert(snapshot.manifest_list().to_string());
        let list = table.manifest_list_reader(snapshot).load().await?;
        for manifest in list.entries().iter().cloned() {
            manifests
                .entry(manifest.manifest_path.clone())
                .or_insert(manifest);
        }
    }
    let file_io = table.file_io().clone();
    let live: Vec<HashSet<String>> = futures::stream::iter(manifests.values().cloned())
        .map(|manifest| {
            let file_io = file_io.clone();
            async move {
                let loaded = manifest.load_manifest(&file_io).await?;
                Ok::<_, Error>(
                    loaded
                        .entries()
                        .iter()
                        .filter(|e| e.is_alive())
                        .map(|e| e.file_path().to_string())
                        .collect(),
                )
            }
        })
        .buffer_unordered(MANIFEST_CONCURRENCY)
        .try_collect()
        .await?;
    reachable.manifests = manifests.into_keys().collect();
    reachable.data_files = live.into_iter().flatten().collect();
    Ok(reachable)
}

/// A file stored under a table's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// Full location, in the same form the table's metadata uses.
    pub location: String,
    pub size: u64,
    /// Milliseconds since the epoch, when the store reports it.
    pub last_modified_ms: Option<i64>,
}

/// Lists every file under `location` (recursively).
pub async fn list_location(storage: &StorageConfig, location: &str) -> Result<Vec<StoredFile>> {
    let parsed = Location::parse(location)?;
    let op = parsed.operator(storage)?;
    let base = location.trim_end_matches('/');
    let mut lister = op.lister_with("/").recursive(true).await?;
    let mut files = Vec::new();
    while let Some(entry) = lister.try_next().await? {
        if entry.metadata().is_dir() {
            continue;
        }
        // Listing metadata may omit size and time; stat fills them in.
        let meta = if entry.metadata().content_length() == 0
            || entry.metadata().last_modified().is_none()
        {
            op.stat(entry.path()).await?
        } else {
            entry.metadata().clone()
        };
        files.push(StoredFile {
            location: format!("{base}/{}", entry.path().trim_start_matches('/')),
            size: meta.content_length(),
            last_modified_ms: meta
                .last_modified()
                .map(|t| t.into_inner().as_millisecond()),
        });
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}
