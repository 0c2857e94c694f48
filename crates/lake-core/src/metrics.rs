//! Names of every metric lake exports, in one place so dashboards and code
//! cannot drift. Convention: `lake_<area>_<what>_<unit>`.

/// Gauge, always 1, labelled with `version`.
pub const BUILD_INFO: &str = "lake_build_info";

/// Counter of HTTP requests the catalog served, labelled `method` and `status`.
pub const CATALOG_HTTP_REQUESTS_TOTAL: &str = "lake_catalog_http_requests_total";
/// Histogram of catalog request latency, labelled `method`.
pub const CATALOG_HTTP_REQUEST_DURATION_SECONDS: &str =
    "lake_catalog_http_request_duration_seconds";

/// Counter of table commits, labelled `operation` (append, replace, overwrite,
/// delete, transaction) and `outcome` (committed, conflict, unknown, refused).
pub const TABLE_COMMITS_TOTAL: &str = "lake_table_commits_total";
/// Histogram of one commit request's latency, labelled `operation`.
pub const TABLE_COMMIT_DURATION_SECONDS: &str = "lake_table_commit_duration_seconds";

/// Counter of records `lake generate` sent, labelled `dataset`.
pub const GENERATE_RECORDS_TOTAL: &str = "lake_generate_records_total";
/// Counter of records Kafka did not acknowledge, labelled `dataset`.
pub const GENERATE_ERRORS_TOTAL: &str = "lake_generate_errors_total";

/// Counter of records `lake ingest` read, labelled `table`.
pub const INGEST_RECORDS_TOTAL: &str = "lake_ingest_records_total";
/// Counter of payload bytes `lake ingest` read, labelled `table`.
pub const INGEST_BYTES_TOTAL: &str = "lake_ingest_bytes_total";
/// Counter of records sent to the dead-letter table, labelled `table`.
pub const INGEST_REJECTS_TOTAL: &str = "lake_ingest_rejects_total";
/// Histogram of an epoch's commit (close files, write, commit), labelled `table`.
pub const INGEST_COMMIT_DURATION_SECONDS: &str = "lake_ingest_commit_duration_seconds";
/// Gauge of records behind the partition's end, labelled `topic` and `partition`.
pub const INGEST_LAG_RECORDS: &str = "lake_ingest_lag_records";
/// Counter of epochs discarded (another writer got there first, or a rebalance), labelled `table`.
pub const INGEST_REWINDS_TOTAL: &str = "lake_ingest_rewinds_total";
/// Counter of times a running ingest started over after the catalog or its storage failed.
pub const INGEST_RECOVERIES_TOTAL: &str = "lake_ingest_recoveries_total";

/// Counter of rows a transform committed to its target, labelled `table`.
pub const TRANSFORM_ROWS_WRITTEN_TOTAL: &str = "lake_transform_rows_written_total";
/// Counter of rows silver sent to quarantine, labelled `table` (the clean
/// table) and `rule`.
pub const TRANSFORM_QUARANTINED_TOTAL: &str = "lake_transform_quarantined_total";
/// Counter of bronze rows silver dropped as duplicates, labelled `table`.
pub const TRANSFORM_DUPLICATES_TOTAL: &str = "lake_transform_duplicates_total";

/// Gauge of how old the newest Kafka record that has reached a table is, in
/// seconds, labelled `table`: set every second by `lake run` for its silver
/// and gold tables, so it grows while nothing new arrives.
pub const TABLE_FRESHNESS_SECONDS: &str = "lake_table_freshness_seconds";
/// Histogram of one `lake run` round (silver, then gold, over what is new).
pub const RUN_ROUND_DURATION_SECONDS: &str = "lake_run_round_duration_seconds";

/// Counter of small data files compaction replaced, labelled `table`.
pub const COMPACT_FILES_REWRITTEN_TOTAL: &str = "lake_compact_files_rewritten_total";
/// Counter of the bytes of those files, labelled `table`.
pub const COMPACT_BYTES_REWRITTEN_TOTAL: &str = "lake_compact_bytes_rewritten_total";

/// Counter of files maintenance deleted, labelled `table` and `reason`
/// (expired: only expired snapshots reached them; orphan: nothing did).
pub const MAINTAIN_FILES_DELETED_TOTAL: &str = "lake_maintain_files_deleted_total";

/// Every name above, for tests that check dashboards against the code.
pub const ALL: &[&str] = &[
    BUILD_INFO,
    CATALOG_HTTP_REQUESTS_TOTAL,
    CATALOG_HTTP_REQUEST_DURATION_SECONDS,
    TABLE_COMMITS_TOTAL,
    TABLE_COMMIT_DURATION_SECONDS,
    GENERATE_RECORDS_TOTAL,
    GENERATE_ERRORS_TOTAL,
    INGEST_RECORDS_TOTAL,
    INGEST_BYTES_TOTAL,
    INGEST_REJECTS_TOTAL,
    INGEST_COMMIT_DURATION_SECONDS,
    INGEST_LAG_RECORDS,
    INGEST_REWINDS_TOTAL,
    INGEST_RECOVERIES_TOTAL,
    TRANSFORM_ROWS_WRITTEN_TOTAL,
    TRANSFORM_QUARANTINED_TOTAL,
    TRANSFORM_DUPLICATES_TOTAL,
    TABLE_FRESHNESS_SECONDS,
    RUN_ROUND_DURATION_SECONDS,
    COMPACT_FILES_REWRITTEN_TOTAL,
    COMPACT_BYTES_REWRITTEN_TOTAL,
    MAINTAIN_FILES_DELETED_TOTAL,
];

/// Histogram buckets for request and commit latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
