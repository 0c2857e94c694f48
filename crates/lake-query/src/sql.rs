//! `lake sql`: every table of the catalog as `namespace.table`, read at its
//! current snapshot or as it was at a snapshot or a moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;
use lake_table::LakeCatalog;
use lake_table::files;

use crate::error::{Error, Result};

/// The catalog name queries run in; tables are `namespace.table` inside it.
const CATALOG: &str = "lake";
/// Where unqualified names resolve: no table of ours lives there, so an
/// unqualified name fails with the list of real ones.
const DEFAULT_SCHEMA: &str = "public";
/// Tables loaded from the catalog at once when a session opens.
const LOAD_CONCURRENCY: usize = 8;

/// Which state of the tables a session reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// The table holding this snapshot reads it; every other table reads
    /// its state at that snapshot's commit time.
    Snapshot(i64),
    /// Every table as it was at this moment (milliseconds since the epoch).
    Timestamp(i64),
}

impl AsOf {
    /// An integer is a snapshot id; anything else a time, RFC 3339
    /// (`2026-01-01T10:00:00Z`) or a date (`2026-01-01`, midnight UTC).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Ok(id) = text.parse::<i64>() {
            return Ok(AsOf::Snapshot(id));
        }
        if let Ok(at) = text.parse::<jiff::Timestamp>() {
            return Ok(AsOf::Timestamp(at.as_millisecond()));
        }
        if let Ok(date) = text.parse::<jiff::civil::Date>()
            && let Ok(midnight) = date.to_zoned(jiff::tz::TimeZone::UTC)
        {
            return Ok(AsOf::Timestamp(midnight.timestamp().as_millisecond()));
        }
        Err(Error::Invalid(format!(
            "--as-of `{text}` is neither a snapshot id nor a time \
             (2026-01-01T10:00:00Z, 2026-01-01)"
        )))
    }
}

/// What a query returned.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Planning and running, not opening the session.
    pub elapsed: Duration,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A read-only DataFusion session over every table of the catalog.
pub struct Session {
    ctx: SessionContext,
    /// `namespace.table` of every table a query can name.
    names: Vec<String>,
    /// Tables with no state at the requested moment (created later, or their
    /// snapshots from then have expired).
    absent: Vec<String>,
}

impl Session {
    /// Loads every table of every namespace once; queries then read the
    /// snapshots chosen here, so all of a session's queries agree.
    pub async fn open(catalog: &LakeCatalog, as_of: Option<AsOf>) -> Result<Self> {
        let idents = catalog.tables().await?;
        let tables: Vec<Table> = futures::stream::iter(idents)
            .map(|ident| async move { catalog.load(&ident).await })
            .buffered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let moment = match as_of {
            None => None,
            Some(AsOf::Timestamp(ms)) => Some(ms),
            Some(AsOf::Snapshot(id)) => Some(
                tables
                    .iter()
                    .find_map(|t| t.metadata().snapshot_by_id(id))
                    .map(|s| s.timestamp_ms())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "no table has snapshot {id}; `lake snapshots TABLE` lists a table's"
                        ))
                    })?,
            ),
        };

        let root = MemoryCatalogProvider::new();
        let mut schemas: HashMap<String, Arc<MemorySchemaProvider>> = HashMap::new();
        schemas.insert(
            DEFAULT_SCHEMA.to_string(),
            Arc::new(MemorySchemaProvider::new()),
        );
        let mut names = Vec::new();
        let mut absent = Vec::new();
        for table in tables {
            let ident = table.identifier().clone();
            let name = ident.to_string();
            let snapshot = match (as_of, moment) {
                (Some(AsOf::Snapshot(id)), _) if table.metadata().snapshot_by_id(id).is_some() => {
                    Some(id)
                }
                (_, Some(ms)) => match snapshot_at(&table, ms) {
                    Some(id) => Some(id),
                    None => {
                        absent.push(name);
                        continue;
                    }
                },
                (_, None) => None,
            };
            let provider = match snapshot {
                None => IcebergStaticTableProvider::try_new_from_table(table).await?,
                Some(id) => {
                    IcebergStaticTableProvider::try_new_from_table_snapshot(table, id).await?
                }
            };
            let schema = schemas
                .entry(ident.namespace().join("."))
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            schema
                .register_table(ident.name().to_string(), Arc::new(provider))
                .map_err(|e| Error::Query(format!("registering {name}: {e}")))?;
            names.push(name);
        }
        for (namespace, schema) in schemas {
            root.register_schema(&namespace, schema)
                .map_err(|e| Error::Query(format!("registering namespace {namespace}: {e}")))?;
        }
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_catalog(CATALOG, Arc::new(root));
        names.sort();
        absent.sort();
        Ok(Session { ctx, names, absent })
    }

    /// Every table a query can name, as `namespace.table`.
    pub fn tables(&self) -> &[String] {
        &self.names
    }

    /// Runs one read-only statement to the end.
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        let started = Instant::now();
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .ctx
            .sql_with_options(sql, read_only)
            .await
            .map_err(|e| self.explain(e))?;
        let schema = frame.schema().inner().clone();
        let batches = frame.collect().await.map_err(|e| self.explain(e))?;
        Ok(QueryResult {
            schema,
            batches,
            elapsed: started.elapsed(),
        })
    }

    /// DataFusion's error, with what a user needs to fix it.
    fn explain(&self, error: DataFusionError) -> Error {
        let root = error.find_root();
        match root {
            DataFusionError::SQL(parse, _) => {
                Error::Query(format!("the query does not parse: {parse}"))
            }
            DataFusionError::Plan(message) if message.contains("not found") => {
                let mut text = if self.names.is_empty() {
                    format!("{message}\n  no table has data at that moment")
                } else {
                    format!(
                        "{message}\n  tables are named namespace.table: {}",
                        self.names.join(", ")
                    )
                };
                if !self.absent.is_empty() {
                    text.push_str(&format!(
                        "\n  not there at that moment (created later, or expired): {}",
                        self.absent.join(", ")
                    ));
                }
                Error::Query(text)
            }
            _ if root.to_string().contains("not supported")
                || root.to_string().contains("Only statements") =>
            {
                Error::Query(format!("lake sql only reads: {root}"))
            }
            _ => Error::Query(root.to_string()),
        }
    }
}

/// The snapshot that was current at `ms`: the newest along the current
/// snapshot's ancestry committed at or before it.
fn snapshot_at(table: &Table, ms: i64) -> Option<i64> {
    files::ancestry(table.metadata())
        .find(|s| s.timestamp_ms() <= ms)
        .map(|s| s.snapshot_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_reads_ids_times_and_dates() {
        assert_eq!(
            AsOf::parse("8234567890123").ok(),
            Some(AsOf::Snapshot(8_234_567_890_123))
        );
        assert_eq!(
            AsOf::parse("2026-01-01T00:00:01Z").ok(),
            Some(AsOf::Timestamp(1_767_225_601_000))
        );
        assert_eq!(
            AsOf::parse("2026-01-01").ok(),
            Some(AsOf::Timestamp(1_767_225_600_000))
        );
        assert!(AsOf::parse("yesterday").is_err());
    }
}
