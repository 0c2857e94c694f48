//! Running maintenance over many tables: one step on a selection
//! (`lake maintain expire-snapshots …`), or the daily policy on every table
//! (`lake maintain all`) in the order that keeps each step safe.
//!
//! A table's failure does not stop the others: it goes to the observer and
//! is counted, so one broken table cannot starve the rest of their upkeep.

use iceberg::TableIdent;
use iceberg::table::Table;
use lake_core::config::StorageConfig;
use lake_table::LakeCatalog;

use crate::compact::{CompactOptions, CompactReport};
use crate::error::{Error, Result};
use crate::expire::{ExpireOptions, ExpireReport};
use crate::manifests::ManifestReport;
use crate::orphans::{OrphanOptions, OrphanReport};
use crate::retention::RetentionReport;

/// One maintenance step, or all of them.
#[derive(Clone, Debug)]
pub enum Task {
    Retention {
        dry_run: bool,
    },
    Compact(CompactOptions),
    RewriteManifests {
        dry_run: bool,
    },
    ExpireSnapshots(ExpireOptions),
    RemoveOrphanFiles(OrphanOptions),
    /// Retention, compaction and manifests table by table, then snapshot
    /// expiry and orphan removal on every table.
    Daily {
        compact: CompactOptions,
        expire: ExpireOptions,
        orphans: OrphanOptions,
    },
}

/// What one step did to one table.
#[derive(Debug)]
pub enum Done {
    Retention(RetentionReport),
    Compact(CompactReport),
    /// The table's layout rules compaction out; the reason why.
    CompactSkipped {
        table: TableIdent,
        why: String,
    },
    Manifests(ManifestReport),
    Expire(ExpireReport),
    Orphans(OrphanReport),
}

/// Hears of every step as it ends, to show progress on long runs.
pub trait Observer {
    fn done(&self, step: &Done);
    fn failed(&self, table: &TableIdent, error: &Error);
}

/// How a run went: tables touched and step failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub tables: usize,
    pub failed: usize,
}

/// Runs `task` on `tables`, or on every table of the catalog when `None`.
/// Only listing or loading the catalog fails the whole run; a table's step
/// failing is reported to `observer` and counted in the outcome.
pub async fn run(
    catalog: &LakeCatalog,
    storage: &StorageConfig,
    tables: Option<&[TableIdent]>,
    task: &Task,
    observer: &dyn Observer,
) -> Result<Outcome> {
    let idents = match tables {
        Some(tables) => tables.to_vec(),
        None => catalog.tables().await?,
    };
    let mut run = Run {
        catalog,
        storage,
        observer,
        failed: 0,
    };
    match task {
        Task::Retention { dry_run } => {
            for ident in &idents {
                run.retention(ident, *dry_run).await;
            }
        }
        Task::Compact(options) => {
            for ident in &idents {
                run.compact(ident, options).await;
            }
        }
        Task::RewriteManifests { dry_run } => {
            for ident in &idents {
                run.manifests(ident, *dry_run).await;
            }
        }
        Task::ExpireSnapshots(options) => {
            let readers = readers(catalog).await?;
            for ident in &idents {
                run.expire(ident, options, &readers).await;
            }
        }
        Task::RemoveOrphanFiles(options) => {
            for ident in &idents {
                run.orphans(ident, options).await;
            }
        }
        Task::Daily {
            compact,
            expire,
            orphans,
        } => {
            // Retention first so compaction does not rewrite partitions that
            // are about to go; manifests last so they describe the result.
            for ident in &idents {
                run.retention(ident, compact.dry_run).await;
                run.compact(ident, compact).await;
                run.manifests(ident, compact.dry_run).await;
            }
            // Positions are read after every table's own steps, as expiry
            // must keep what the transforms have not consumed yet; orphans
            // after expiry, which is what turns files into orphans.
            let readers = readers(catalog).await?;
            for ident in &idents {
                run.expire(ident, expire, &readers).await;
                run.orphans(ident, orphans).await;
            }
        }
    }
    Ok(Outcome {
        tables: idents.len(),
        failed: run.failed,
    })
}

/// Every table of the catalog, as the readers whose consumed positions
/// snapshot expiry keeps.
async fn readers(catalog: &LakeCatalog) -> Result<Vec<Table>> {
    let mut tables = Vec::new();
    for ident in catalog.tables().await? {
        tables.push(catalog.load(&ident).await?);
    }
    Ok(tables)
}

struct Run<'a> {
    catalog: &'a LakeCatalog,
    storage: &'a StorageConfig,
    observer: &'a dyn Observer,
    failed: usize,
}

impl Run<'_> {
    fn report<T>(&mut self, ident: &TableIdent, result: Result<T>, done: impl FnOnce(T) -> Done) {
        match result {
            Ok(report) => self.observer.done(&done(report)),
            Err(e) => {
                self.observer.failed(ident, &e);
                self.failed += 1;
            }
        }
    }

    async fn retention(&mut self, ident: &TableIdent, dry_run: bool) {
        let now = lake_core::now_micros();
        let result = crate::apply_retention(self.catalog, ident, now, dry_run).await;
        self.report(ident, result, Done::Retention);
    }

    async fn compact(&mut self, ident: &TableIdent, options: &CompactOptions) {
        match crate::compact(self.catalog, ident, options).await {
            Err(Error::Unsupported(why)) => self.observer.done(&Done::CompactSkipped {
                table: ident.clone(),
                why,
            }),
            result => self.report(ident, result, Done::Compact),
        }
    }

    async fn manifests(&mut self, ident: &TableIdent, dry_run: bool) {
        let result = crate::rewrite_manifests(self.catalog, ident, dry_run).await;
        self.report(ident, result, Done::Manifests);
    }

    async fn expire(&mut self, ident: &TableIdent, options: &ExpireOptions, readers: &[Table]) {
        let positions = crate::positions_in(readers, ident);
        let result = crate::expire_snapshots(self.catalog, ident, options, &positions).await;
        self.report(ident, result, Done::Expire);
    }

    async fn orphans(&mut self, ident: &TableIdent, options: &OrphanOptions) {
        let result = crate::remove_orphan_files(self.catalog, self.storage, ident, options).await;
        self.report(ident, result, Done::Orphans);
    }
}
