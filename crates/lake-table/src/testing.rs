//! Tables without a catalog server, for unit tests and benchmarks: iceberg's
//! in-memory catalog over a local directory.

use std::collections::HashMap;

use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalogBuilder};
use iceberg::spec::{Schema, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation};

use crate::error::Result;

/// Creates `test.<name>` under `dir` with the given schema and partitioning.
pub async fn local_table(
    dir: &std::path::Path,
    name: &str,
    schema: Schema,
    spec: UnboundPartitionSpec,
) -> Result<Table> {
    local_table_with(dir, name, schema, spec, HashMap::new()).await
}

/// [`local_table`] with table properties.
pub async fn local_table_with(
    dir: &std::path::Path,
    name: &str,
    schema: Schema,
    spec: UnboundPartitionSpec,
    properties: HashMap<String, String>,
) -> Result<Table> {
    let catalog = MemoryCatalogBuilder::default()
        .with_storage_factory(lake_core::storage::storage_factory())
        .load(
            "local",
            HashMap::from([(
                MEMORY_CATALOG_WAREHOUSE.to_string(),
                format!("file://{}", dir.display()),
            )]),
        )
        .await?;
    let namespace = NamespaceIdent::new("test".into());
    catalog.create_namespace(&namespace, HashMap::new()).await?;
    let creation = TableCreation::builder()
        .name(name.to_string())
        .schema(schema)
        .partition_spec(spec)
        .properties(properties)
        .build();
    Ok(catalog.create_table(&namespace, creation).await?)
}
