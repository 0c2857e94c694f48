//! Orphan removal: files under a table's location that neither a snapshot nor
//! the metadata references, older than a threshold.
//!
//! The threshold protects writes in flight: a file a writer has just written
//! and not yet committed is unreferenced too. Under an hour is refused
//! without `force`, as no commit of lake takes that long, but one of
//! another engine might.

use std::time::{Duration, Instant};

use iceberg::TableIdent;
use lake_core::config::StorageConfig;
use lake_table::LakeCatalog;
use lake_table::files::{self, StoredFile};

use crate::error::{Error, Result};

/// The shortest threshold accepted without `force`.
pub const MIN_AGE: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct OrphanOptions {
    /// Only files last modified before now minus this are removed.
    pub older_than: Duration,
    /// Accept a threshold under [`MIN_AGE`].
    pub force: bool,
    pub dry_run: bool,
}

impl Default for OrphanOptions {
    fn default() -> Self {
        Self {
            older_than: Duration::from_secs(3 * 24 * 3600),
            force: false,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OrphanReport {
    pub table: String,
    /// Files stored under the table's location.
    pub stored: usize,
    /// Unreferenced files old enough: removed (or, on a dry run, listed).
    pub orphans: Vec<StoredFile>,
    /// Unreferenced files younger than the threshold, left alone.
    pub too_young: usize,
    pub delete_failures: usize,
    pub elapsed: Duration,
}

impl OrphanReport {
    pub fn bytes(&self) -> u64 {
        self.orphans.iter().map(|f| f.size).sum()
    }
}

pub async fn remove_orphan_files(
    catalog: &LakeCatalog,
    storage: &StorageConfig,
    ident: &TableIdent,
    options: &OrphanOptions,
) -> Result<OrphanReport> {
    if options.older_than < MIN_AGE && !options.force {
        return Err(Error::Invalid(format!(
            "--older-than {}s is under an hour: files of commits still in flight could be deleted; \
             add --force if no writer is running",
            options.older_than.as_secs()
        )));
    }
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    let cutoff_ms = crate::age_cutoff_micros(lake_core::now_micros(), options.older_than) / 1000;
    // Listed before reachability is read: a file committed in between is
    // then seen as reachable, never as an orphan.
    let stored = files::list_location(storage, table.metadata().location()).await?;
    let table = catalog.load(ident).await?;
    let reachable = files::reachable_files(&table).await?;
    let mut report = OrphanReport {
        table: ident.to_string(),
        stored: stored.len(),
        ..OrphanReport::default()
    };
    for file in stored {
        if reachable.contains(&file.location) {
            continue;
        }
        // A file without a modification time cannot be shown old enough.
        match file.last_modified_ms {
            Some(modified) if modified < cutoff_ms => report.orphans.push(file),
            _ => report.too_young += 1,
        }
    }
    if !options.dry_run {
        report.delete_failures =
            files::delete_paths(&table, report.orphans.iter().map(|f| &f.location)).await;
        crate::count_deleted(
            &report.table,
            "orphan",
            report.orphans.len(),
            report.delete_failures,
        );
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
