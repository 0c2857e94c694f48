//! Turning a change (files to add, live files to remove) into a new snapshot:
//! manifests with ADDED / EXISTING / DELETED entries, a manifest list, the
//! snapshot with its summary, and the commit request asserting its parent.

use std::collections::{BTreeMap, HashMap, HashSet};

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestWriter, ManifestWriterBuilder, Operation, Snapshot, SnapshotReference,
    SnapshotRetention, SnapshotSummaryCollector, Summary,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use iceberg_catalog_rest::CommitTableRequest;

use crate::error::{Error, Result};
use crate::files::LoadedManifest;

/// What one snapshot does, resolved against a base table.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub operation: Operation,
    pub added: Vec<DataFile>,
    /// Paths of live data files this snapshot removes.
    pub removed: HashSet<String>,
    /// Caller properties for the summary (computed totals win on collisions).
    pub properties: HashMap<String, String>,
    /// Also merge data manifests smaller than this many bytes, per partition
    /// spec, whether or not they hold a removed file (rewrite-manifests).
    pub merge_below: Option<u64>,
}

/// A snapshot written to storage and ready to commit.
#[derive(Debug)]
pub(crate) struct Staged {
    pub snapshot_id: i64,
    pub request: CommitTableRequest,
    /// Manifests and the manifest list this attempt wrote; deleted if the
    /// attempt is abandoned.
    pub written: Vec<String>,
}

impl Staged {
    /// Deletes what this attempt wrote. Best effort: leftovers are orphans
    /// that orphan removal finds.
    pub async fn discard(self, table: &Table) {
        crate::files::delete_paths(table, &self.written).await;
    }
}

/// Position keys (see [`crate::files::offsets_key`], [`crate::files::source_key`]):
/// every snapshot carries them over from its parent unless it sets them
/// itself, so the newest snapshot always holds them and expiring older
/// snapshots loses none.
const POSITION_KEY_PREFIXES: [&str; 2] = [
    crate::files::OFFSETS_KEY_PREFIX,
    crate::files::SOURCE_KEY_PREFIX,
];

const TOTALS: [(&str, &str, &str); 4] = [
    ("total-data-files", "added-data-files", "deleted-data-files"),
    ("total-records", "added-records", "deleted-records"),
    ("total-files-size", "added-files-size", "removed-files-size"),
    (
        "total-delete-files",
        "added-delete-files",
        "removed-delete-files",
    ),
];

/// Writes the snapshot for `change` on top of `base`.
///
/// `manifests` are the base snapshot's manifests, loaded; `None` means the
/// change removes nothing and the base manifests are carried over unread.
pub(crate) async fn stage(
    base: &Table,
    manifests: Option<&[LoadedManifest]>,
    change: Change,
) -> Result<Staged> {
    let metadata = base.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::Invalid(format!(
            "{}: format version {} tables are not supported for writing; use v2",
            base.identifier(),
            metadata.format_version()
        )));
    }
    let snapshot_id = unique_snapshot_id(base);
    let sequence_number = metadata.next_sequence_number();
    let parent = metadata.current_snapshot_id();
    let commit_id = uuid::Uuid::new_v4();
    let mut written = Vec::new();
    let mut counter = 0u32;
    let mut next_manifest_path = || {
        counter += 1;
        format!(
            "{}/metadata/{commit_id}-m{counter}.avro",
            metadata.location()
        )
    };

    let mut summary = SnapshotSummaryCollector::default();
    summary.set_partition_summary_limit(partition_summary_limit(base));
    let schema = metadata.current_schema().clone();

    // Carry the base snapshot's manifests. Those holding a file this change
    // removes are rewritten, and all of them under one partition spec go into
    // a single new manifest: a compaction touching files from hundreds of
    // small append manifests then writes one manifest, not hundreds.
    let mut manifest_files: Vec<ManifestFile> = Vec::new();
    let mut found = HashSet::new();
    match (manifests, parent) {
        (Some(loaded), _) => {
            let mut touched: BTreeMap<i32, Vec<&LoadedManifest>> = BTreeMap::new();
            for manifest in loaded {
                let touches = change
                    .merge_below
                    .is_some_and(|limit| manifest.is_small_data(limit))
                    || (manifest.file.content == ManifestContentType::Data
                        && manifest
                            .entries
                            .iter()
                            .any(|e| e.is_alive() && change.removed.contains(e.file_path())));
                if touches {
                    touched
                        .entry(manifest.file.partition_spec_id)
                        .or_default()
                        .push(manifest);
                } else {
                    manifest_files.push(manifest.file.clone());
                }
            }
            for (spec_id, manifests) in touched {
                // Old manifests may be written under an earlier spec; keep the
                // rewrite under the spec its entries were written with.
                let spec = metadata
                    .partition_spec_by_id(spec_id)
                    .cloned()
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "a manifest of {} names unknown partition spec {spec_id}",
                            base.identifier()
                        ))
                    })?;
                let path = next_manifest_path();
                let mut writer = manifest_writer(base, &path, snapshot_id, spec.as_ref())?;
                for manifest in manifests {
                    for entry in manifest.entries.iter() {
                        if !entry.is_alive() {
                            // Deleted by an earlier snapshot: not carried further.
                            continue;
                        }
                        let sequence = entry.sequence_number.ok_or_else(|| {
                            Error::Invalid(format!(
                                "{} has no data sequence number in {}",
                                entry.file_path(),
                                manifest.file.manifest_path
                            ))
                        })?;
                        if change.removed.contains(entry.file_path()) {
                            found.insert(entry.file_path().to_string());
                            summary.remove_file(&entry.data_file, schema.clone(), spec.clone());
                            writer.add_delete_file(
                                entry.data_file.clone(),
                                sequence,
                                entry.file_sequence_number,
                            )?;
                        } else {
                            writer.add_existing_file(
                                entry.data_file.clone(),
                                entry.snapshot_id.unwrap_or(manifest.file.added_snapshot_id),
                                sequence,
                                entry.file_sequence_number,
                            )?;
                        }
                    }
                }
                written.push(path);
                manifest_files.push(writer.write_manifest_file().await?);
            }
        }
        (None, Some(parent_id)) => {
            if !change.removed.is_empty() {
                return Err(Error::Internal(
                    "removing files needs the base manifests loaded".into(),
                ));
            }
            let snapshot = metadata.snapshot_by_id(parent_id).ok_or_else(|| {
                Error::Internal(format!("current snapshot {parent_id} is missing"))
            })?;
            let list = base.manifest_list_reader(snapshot).load().await?;
            manifest_files.extend(list.entries().iter().cloned());
        }
        (None, None) => {}
    }
    if let Some(missing) = change.removed.iter().find(|p| !found.contains(*p)) {
        return Err(Error::Invalid(format!(
            "{missing} is not live in {}; resolve the change against this table",
            base.identifier()
        )));
    }

    if !change.added.is_empty() {
        let spec = metadata.default_partition_spec().clone();
        let path = next_manifest_path();
        let mut writer = manifest_writer(base, &path, snapshot_id, spec.as_ref())?;
        for file in &change.added {
            summary.add_file(file, schema.clone(), spec.clone());
            // Sequence number and snapshot id are inherited from the manifest
            // list entry, so the manifest stays valid whatever they end up as.
            writer.add_file(file.clone(), -1)?;
        }
        written.push(path);
        manifest_files.push(writer.write_manifest_file().await?);
    }

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{commit_id}.avro",
        metadata.location()
    );
    let mut list = ManifestListWriter::v2(
        base.file_io().new_output(&list_path)?.writer().await?,
        snapshot_id,
        parent,
        sequence_number,
    );
    list.add_manifests(manifest_files.into_iter())?;
    list.close().await?;
    written.push(list_path.clone());

    let mut properties = change.properties;
    if let Some(parent) = metadata.current_snapshot() {
        for (key, value) in &parent.summary().additional_properties {
            if POSITION_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
                properties
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
    }
    properties.extend(summary.build());
    add_totals(
        &mut properties,
        base.metadata().current_snapshot().map(|s| s.summary()),
    );
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(list_path)
        .with_schema_id(metadata.current_schema_id())
        .with_summary(Summary {
            operation: change.operation,
            additional_properties: properties,
        })
        .build();

    let request = CommitTableRequest {
        identifier: Some(base.identifier().clone()),
        requirements: vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: parent,
            },
        ],
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(
                    snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ],
    };
    Ok(Staged {
        snapshot_id,
        request,
        written,
    })
}

/// Running totals: the parent's plus what this snapshot adds and removes.
/// A parent without a total (written by a tool that keeps none) leaves the
/// total out rather than restarting it from zero.
fn add_totals(properties: &mut HashMap<String, String>, parent: Option<&Summary>) {
    for (total, added, removed) in TOTALS {
        let previous = match parent {
            None => Some(0),
            Some(summary) => summary
                .additional_properties
                .get(total)
                .and_then(|v| v.parse::<u64>().ok()),
        };
        let Some(previous) = previous else {
            properties.remove(total);
            continue;
        };
        let get = |key: &str| -> u64 {
            properties
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let value = (previous + get(added)).saturating_sub(get(removed));
        properties.insert(total.to_string(), value.to_string());
    }
}

fn partition_summary_limit(table: &Table) -> u64 {
    table
        .metadata()
        .properties()
        .get("write.summary.partition-limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A positive snapshot id not used by the table.
fn unique_snapshot_id(table: &Table) -> i64 {
    loop {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((high ^ low) & (i64::MAX as u64)) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn manifest_writer(
    base: &Table,
    path: &str,
    snapshot_id: i64,
    spec: &iceberg::spec::PartitionSpec,
) -> Result<ManifestWriter> {
    Ok(ManifestWriterBuilder::new(
        base.file_io().new_output(path)?,
        Some(snapshot_id),
        base.metadata().current_schema().clone(),
        spec.clone(),
    )
    .build_v2_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(pairs: &[(&str, &str)]) -> Summary {
        Summary {
            operation: Operation::Append,
            additional_properties: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn totals_add_and_subtract_from_the_parent() {
        let parent = summary(&[
            ("total-data-files", "10"),
            ("total-records", "1000"),
            ("total-files-size", "5000"),
            ("total-delete-files", "0"),
        ]);
        let mut props: HashMap<String, String> = [
            ("added-data-files", "1"),
            ("deleted-data-files", "4"),
            ("added-records", "400"),
            ("deleted-records", "400"),
            ("added-files-size", "900"),
            ("removed-files-size", "1800"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        add_totals(&mut props, Some(&parent));
        assert_eq!(props["total-data-files"], "7");
        assert_eq!(props["total-records"], "1000");
        assert_eq!(props["total-files-size"], "4100");
        assert_eq!(props["total-delete-files"], "0");
    }

    #[test]
    fn totals_start_at_zero_and_are_omitted_when_the_parent_has_none() {
        let mut first: HashMap<String, String> =
            [("added-records".to_string(), "5".to_string())].into();
        add_totals(&mut first, None);
        assert_eq!(first["total-records"], "5");
        assert_eq!(first["total-data-files"], "0");

        let mut after_unknown: HashMap<String, String> =
            [("added-records".to_string(), "5".to_string())].into();
        add_totals(&mut after_unknown, Some(&summary(&[])));
        assert!(!after_unknown.contains_key("total-records"));
    }
}
