//! What `lake tables`, `lake status` and `lake snapshots` show: per table
//! rows, files, sizes and commits from its metadata, and for silver and gold
//! how far they trail the table they are built from.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use iceberg::TableIdent;
use iceberg::spec::{Operation, Snapshot};
use iceberg::table::Table;
use lake_table::LakeCatalog;
use lake_table::files::{self, SOURCE_KEY_PREFIX};

use crate::error::{Error, Result};

/// One table's state at its current snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct TableStatus {
    /// `namespace.table`.
    pub table: String,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// Snapshots the metadata keeps (expiry removes old ones).
    pub snapshots: usize,
    /// Commit time of the current snapshot, ms since the epoch.
    pub last_commit_ms: Option<i64>,
    /// For tables built by `lake transform`: each source and the lag behind it.
    pub sources: Vec<SourceLag>,
    /// The newest Kafka record timestamp (ms since the epoch) that has
    /// reached the table (`lake.newest-record-ms`), when a writer recorded it.
    pub newest_record_ms: Option<i64>,
}

impl TableStatus {
    pub fn average_file_bytes(&self) -> u64 {
        self.bytes.checked_div(self.files).unwrap_or(0)
    }
}

/// How far a transformed table trails one of its sources.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceLag {
    /// `namespace.table` of the source.
    pub source: String,
    /// The source snapshot the table was last built from.
    pub consumed: i64,
    /// Source commits that added rows since, and the rows they added.
    pub commits_behind: usize,
    pub rows_behind: u64,
    /// Commit time of the oldest of those, ms since the epoch.
    pub oldest_pending_ms: Option<i64>,
}

/// One snapshot as `lake snapshots` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRow {
    pub id: i64,
    pub parent: Option<i64>,
    pub timestamp_ms: i64,
    pub operation: String,
    pub added_rows: u64,
    pub deleted_rows: u64,
    pub added_files: u64,
    pub deleted_files: u64,
    /// Rows in the table after this snapshot.
    pub total_rows: u64,
    /// The table's current snapshot.
    pub current: bool,
    /// lake's own summary entries (Kafka offsets, consumed sources,
    /// compaction counts), sorted by key.
    pub lake: Vec<(String, String)>,
}

fn summary_u64(snapshot: &Snapshot, key: &str) -> Option<u64> {
    snapshot
        .summary()
        .additional_properties
        .get(key)
        .and_then(|v| v.parse().ok())
}

/// `namespace.table` → its identifier.
fn parse_name(name: &str) -> Result<TableIdent> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Invalid(format!(
            "`{name}` is not namespace.table (e.g. silver.tweets_clean)"
        )));
    }
    Ok(TableIdent::from_strs(parts)?)
}

/// Every table's status, in name order.
pub async fn statuses(catalog: &LakeCatalog) -> Result<Vec<TableStatus>> {
    let mut statuses = Vec::new();
    for ident in catalog.tables().await? {
        let status = table_status(catalog, &ident)
            .await
            .map_err(|source| Error::Reading {
                table: ident.to_string(),
                source: Box::new(source),
            })?;
        statuses.push(status);
    }
    statuses.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(statuses)
}

/// The status of `ident`, reading only metadata and, where the summary lacks
/// totals (tables other writers made), the current manifests.
pub async fn table_status(catalog: &LakeCatalog, ident: &TableIdent) -> Result<TableStatus> {
    let table = catalog.load(ident).await?;
    let metadata = table.metadata();
    let current = metadata.current_snapshot();
    let (rows, files, bytes) = match current.map(|s| {
        (
            summary_u64(s, "total-records"),
            summary_u64(s, "total-data-files"),
            summary_u64(s, "total-files-size"),
        )
    }) {
        None => (0, 0, 0),
        Some((Some(rows), Some(files), Some(bytes))) => (rows, files, bytes),
        Some(_) => {
            let live = files::live_files(&table, None).await?;
            (
                live.iter().map(|f| f.data_file.record_count()).sum(),
                live.len() as u64,
                live.iter().map(|f| f.data_file.file_size_in_bytes()).sum(),
            )
        }
    };
    let mut sources = Vec::new();
    if let Some(snapshot) = current {
        let mut consumed: Vec<(&String, &String)> = snapshot
            .summary()
            .additional_properties
            .iter()
            .filter(|(k, _)| k.starts_with(SOURCE_KEY_PREFIX))
            .collect();
        consumed.sort();
        for (key, value) in consumed {
            let Some(name) = key.strip_prefix(SOURCE_KEY_PREFIX) else {
                continue;
            };
            let Ok(consumed) = value.parse::<i64>() else {
                continue;
            };
            let source = catalog.load(&parse_name(name)?).await?;
            sources.push(lag(&source, name, consumed));
        }
    }
    Ok(TableStatus {
        table: ident.to_string(),
        rows,
        files,
        bytes,
        snapshots: metadata.snapshots().count(),
        last_commit_ms: current.map(|s| s.timestamp_ms()),
        sources,
        newest_record_ms: files::newest_record_ms(&table),
    })
}

/// Commits on `source` after `consumed` that added rows; replaces (compaction)
/// add none and do not count.
fn lag(source: &Table, name: &str, consumed: i64) -> SourceLag {
    let metadata = source.metadata();
    let mut lag = SourceLag {
        source: name.to_string(),
        consumed,
        commits_behind: 0,
        rows_behind: 0,
        oldest_pending_ms: None,
    };
    for snapshot in files::ancestry(metadata).take_while(|s| s.snapshot_id() != consumed) {
        let added = summary_u64(snapshot, "added-records").unwrap_or(0);
        if snapshot.summary().operation != Operation::Replace && added > 0 {
            lag.commits_behind += 1;
            lag.rows_behind += added;
            lag.oldest_pending_ms = Some(snapshot.timestamp_ms());
        }
    }
    lag
}

/// Every snapshot the metadata of `name` keeps, oldest first.
pub async fn snapshots(catalog: &LakeCatalog, name: &str) -> Result<Vec<SnapshotRow>> {
    let table = catalog.load(&parse_name(name)?).await?;
    let metadata = table.metadata();
    let current = metadata.current_snapshot_id();
    let mut rows: Vec<SnapshotRow> = metadata
        .snapshots()
        .map(|s| {
            let mut lake: Vec<(String, String)> = s
                .summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| k.starts_with("lake."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            lake.sort();
            SnapshotRow {
                id: s.snapshot_id(),
                parent: s.parent_snapshot_id(),
                timestamp_ms: s.timestamp_ms(),
                operation: s.summary().operation.as_str().to_string(),
                added_rows: summary_u64(s, "added-records").unwrap_or(0),
                deleted_rows: summary_u64(s, "deleted-records").unwrap_or(0),
                added_files: summary_u64(s, "added-data-files").unwrap_or(0),
                deleted_files: summary_u64(s, "deleted-data-files").unwrap_or(0),
                total_rows: summary_u64(s, "total-records").unwrap_or(0),
                current: Some(s.snapshot_id()) == current,
                lake,
            }
        })
        .collect();
    rows.sort_by_key(|r| (r.timestamp_ms, r.id));
    Ok(rows)
}

/// Age of `ms` at `now_ms`, coarse: `42s`, `7m`, `3h 5m`, `2d 4h`.
pub fn age(now_ms: i64, ms: i64) -> String {
    let seconds = (now_ms - ms).max(0) / 1000;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn time_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1e5).round() / 10.0
}

/// `lake tables` and `lake status` as rows for [`crate::write_batches`];
/// `lag` adds the columns on sources.
pub fn status_batch(statuses: &[TableStatus], now_ms: i64, lag: bool) -> Result<RecordBatch> {
    let mut fields = vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("size_mb", DataType::Float64, false),
        Field::new("avg_file_mb", DataType::Float64, false),
        Field::new("snapshots", DataType::UInt64, false),
        Field::new("last_commit", DataType::Utf8, true),
        Field::new("age", DataType::Utf8, true),
    ];
    let last = |s: &TableStatus| s.last_commit_ms;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            statuses.iter().map(|s| s.table.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            statuses.iter().map(|s| s.rows),
        )),
        Arc::new(UInt64Array::from_iter_values(
            statuses.iter().map(|s| s.files),
        )),
        Arc::new(Float64Array::from_iter_values(
            statuses.iter().map(|s| megabytes(s.bytes)),
        )),
        Arc::new(Float64Array::from_iter_values(
            statuses.iter().map(|s| megabytes(s.average_file_bytes())),
        )),
        Arc::new(UInt64Array::from_iter_values(
            statuses.iter().map(|s| s.snapshots as u64),
        )),
        Arc::new(StringArray::from_iter(
            statuses.iter().map(|s| last(s).map(time_text)),
        )),
        Arc::new(StringArray::from_iter(
            statuses.iter().map(|s| last(s).map(|ms| age(now_ms, ms))),
        )),
    ];
    if lag {
        let joined = |f: &dyn Fn(&SourceLag) -> Option<String>, s: &TableStatus| {
            let parts: Vec<String> = s.sources.iter().filter_map(f).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        };
        fields.extend([
            Field::new("source", DataType::Utf8, true),
            Field::new("behind_commits", DataType::UInt64, true),
            Field::new("behind_rows", DataType::UInt64, true),
            Field::new("behind_since", DataType::Utf8, true),
            Field::new("freshness_s", DataType::Float64, true),
        ]);
        columns.extend([
            Arc::new(StringArray::from_iter(
                statuses
                    .iter()
                    .map(|s| joined(&|l| Some(l.source.clone()), s)),
            )) as ArrayRef,
            Arc::new(UInt64Array::from_iter(statuses.iter().map(|s| {
                (!s.sources.is_empty())
                    .then(|| s.sources.iter().map(|l| l.commits_behind as u64).sum())
            }))),
            Arc::new(UInt64Array::from_iter(statuses.iter().map(|s| {
                (!s.sources.is_empty()).then(|| s.sources.iter().map(|l| l.rows_behind).sum())
            }))),
            Arc::new(StringArray::from_iter(statuses.iter().map(|s| {
                joined(&|l| l.oldest_pending_ms.map(|ms| age(now_ms, ms)), s)
            }))),
            // How old the newest Kafka record that reached the table is now.
            Arc::new(Float64Array::from_iter(statuses.iter().map(|s| {
                s.newest_record_ms
                    .map(|ms| ((now_ms - ms).max(0) as f64 / 100.0).round() / 10.0)
            }))),
        ]);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `lake snapshots` as rows for [`crate::write_batches`].
pub fn snapshots_batch(rows: &[SnapshotRow]) -> Result<RecordBatch> {
    let fields = vec![
        Field::new("snapshot_id", DataType::Int64, false),
        Field::new("parent_id", DataType::Int64, true),
        Field::new("committed_at", DataType::Utf8, false),
        Field::new("operation", DataType::Utf8, false),
        Field::new("added_rows", DataType::UInt64, false),
        Field::new("deleted_rows", DataType::UInt64, false),
        Field::new("added_files", DataType::UInt64, false),
        Field::new("deleted_files", DataType::UInt64, false),
        Field::new("total_rows", DataType::UInt64, false),
        Field::new("current", DataType::Boolean, false),
        Field::new("lake", DataType::Utf8, false),
    ];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.parent))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| time_text(r.timestamp_ms)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.operation.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.added_rows),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.deleted_rows),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.added_files),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.deleted_files),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.total_rows),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.current)),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
            r.lake
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }))),
    ];
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_namespace() {
        assert!(parse_name("tweets").is_err());
        assert!(parse_name("silver.").is_err());
        let ident = parse_name("silver.tweets_clean").expect("ident");
        assert_eq!(ident.to_string(), "silver.tweets_clean");
    }

    #[test]
    fn ages_are_coarse() {
        let now = 10 * 86_400_000;
        assert_eq!(age(now, now - 42_000), "42s");
        assert_eq!(age(now, now - 7 * 60_000 - 5_000), "7m");
        assert_eq!(age(now, now - (3 * 3600 + 5 * 60) * 1000), "3h 5m");
        assert_eq!(age(now, now - (2 * 86_400 + 4 * 3600) * 1000), "2d 4h");
        assert_eq!(age(now, now + 1_000), "0s");
    }
}
