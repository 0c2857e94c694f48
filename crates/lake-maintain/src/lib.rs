//! Table upkeep: `lake compact` (bin-pack small files per partition) and
//! `lake maintain` (snapshot expiry with file deletion, orphan removal,
//! manifest rewriting, retention, and the daily policy running them all).

pub mod compact;
pub mod error;
pub mod expire;
pub mod filter;
pub mod manifests;
pub mod orphans;
pub mod policy;
pub mod retention;

/// Microseconds since the epoch `age` before `now_micros`: the cutoff of an
/// `--older-than` or a retention.
pub(crate) fn age_cutoff_micros(now_micros: i64, age: std::time::Duration) -> i64 {
    now_micros.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX))
}

/// Counts the files a maintenance step deleted (`attempted` less the
/// deletions that failed) in the process's metrics.
pub(crate) fn count_deleted(table: &str, reason: &'static str, attempted: usize, failed: usize) {
    metrics::counter!(
        lake_core::metrics::MAINTAIN_FILES_DELETED_TOTAL,
        "table" => table.to_string(),
        "reason" => reason
    )
    .increment(attempted.saturating_sub(failed) as u64);
}

pub use compact::{CompactOptions, CompactReport, Group, compact, plan};
pub use error::{Error, Result};
pub use expire::{ExpireOptions, ExpireReport, expire_snapshots, positions_in};
pub use manifests::{ManifestReport, rewrite_manifests};
pub use orphans::{OrphanOptions, OrphanReport, remove_orphan_files};
pub use policy::{Done, Observer, Outcome, Task};
pub use retention::{RetentionReport, apply_retention, retention_of};
