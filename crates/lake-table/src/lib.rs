//! lake's Iceberg write path.
//!
//! iceberg-rust's `Transaction` re-derives its commit requirements from a
//! fresh load on every retry and offers only fast appends. lake needs commits
//! that say "only if the table is still at snapshot S" (exactly-once ingest),
//! and replace / overwrite / delete snapshots (compaction, gold rebuilds,
//! retention). This crate writes those snapshots from iceberg's public spec
//! types and sends the commit requests itself.
//!
//! - [`writer`]: record batches → partitioned Parquet data files.
//! - [`ops`]: [`Append`], [`Replace`], [`Overwrite`], [`Delete`] and the commit
//!   loop; [`commit_all`] for several tables in one atomic step.
//! - [`evolve`]: a table following the schema its declaration wants.
//! - [`merge`]: small files of a partition merged, plain columns copied page
//!   by page.
//! - [`files`]: live files, files appended between snapshots, summary lookup,
//!   reachability and storage listing.

pub mod catalog;
pub mod error;
pub mod evolve;
pub mod files;
pub mod merge;
pub mod ops;
mod produce;
pub mod read;
#[doc(hidden)]
pub mod testing;
pub mod writer;

pub use catalog::{LakeCatalog, partition_by};
pub use error::{Error, Result};
pub use files::ManifestCache;
pub use ops::{
    Append, Delete, FileSelector, Op, Overwrite, Replace, RewriteManifests, commit, commit_all,
    commit_cached, remove_snapshots,
};
pub use writer::{TableWriter, WriterOptions};
