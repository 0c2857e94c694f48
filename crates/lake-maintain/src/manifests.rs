//! Manifest rewriting: the current snapshot's small data manifests merged
//! into one per partition spec, so reads plan from a few files instead of one
//! per ingest commit.

use std::time::{Duration, Instant};

use iceberg::TableIdent;
use iceberg::spec::ManifestContentType;
use iceberg::table::Table;
use lake_table::{LakeCatalog, RewriteManifests};

use crate::error::Result;

#[derive(Clone, Debug, Default)]
pub struct ManifestReport {
    pub table: String,
    /// Data manifests of the current snapshot before and after.
    pub before: usize,
    pub after: usize,
    pub elapsed: Duration,
}

pub async fn rewrite_manifests(
    catalog: &LakeCatalog,
    ident: &TableIdent,
    dry_run: bool,
) -> Result<ManifestReport> {
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    let before = data_manifests(&table).await?;
    let after = if dry_run {
        before
    } else {
        let rewritten = RewriteManifests::default().commit(catalog, &table).await?;
        data_manifests(&rewritten).await?
    };
    Ok(ManifestReport {
        table: ident.to_string(),
        before,
        after,
        elapsed: started.elapsed(),
    })
}

async fn data_manifests(table: &Table) -> Result<usize> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(0);
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    Ok(list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .count())
}
