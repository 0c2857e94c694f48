//! `--evolve-schema`: new top-level JSON fields become optional columns.

use std::sync::Arc;

use arrow_schema::{Field, Schema};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use lake_table::LakeCatalog;

use crate::error::{Error, Result};

/// Adds `fields` (as inferred from JSON) to `table` as optional columns and
/// returns the table afterwards. Fields another process added meanwhile are
/// left as they are.
pub async fn add_columns(catalog: &LakeCatalog, table: &Table, fields: &[Field]) -> Result<Table> {
    let current = catalog.load(table.identifier()).await?;
    let schema = current.metadata().current_schema();
    let missing: Vec<&Field> = fields
        .iter()
        .filter(|f| schema.field_by_name(f.name()).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(current);
    }
    let tx = Transaction::new(&current);
    let mut action = tx.update_schema();
    for field in missing {
        // Ids are placeholders here; the schema update assigns real ones.
        let single = Schema::new(vec![Arc::new(field.clone())]);
        let converted = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&single)?;
        let column = converted
            .as_struct()
            .fields()
            .first()
            .ok_or_else(|| Error::Internal(format!("cannot map field `{}`", field.name())))?;
        action = action.add_column(AddColumn::optional(
            field.name(),
            (*column.field_type).clone(),
        ));
    }
    let tx = action.apply(tx)?;
    match tx.commit(catalog.rest()).await {
        Ok(table) => Ok(table),
        // Another process evolved the schema first: take its version.
        Err(e) => {
            let reloaded = catalog.load(table.identifier()).await?;
            let now = reloaded.metadata().current_schema();
            if fields.iter().all(|f| now.field_by_name(f.name()).is_some()) {
                Ok(reloaded)
            } else {
                Err(e.into())
            }
        }
    }
}
