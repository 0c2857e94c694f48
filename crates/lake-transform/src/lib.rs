//! `lake transform`: incremental silver and gold tables.
//!
//! Models are SQL run by DataFusion over exact sets of Iceberg data files
//! (those the commit layer names as new, or those of the partitions being
//! rebuilt); results are written by `lake-table`'s writer and committed by
//! its producers, with the source snapshot consumed in the snapshot summary.
//!
//! - [`models`]: the SQL a dataset's models run (silver wrapped in
//!   deduplication and the dataset's rules).
//! - [`transform`]: running silver and gold models incrementally.
//! - [`scan`]: DataFusion tables over exact file sets.
//! - [`pii`]: silver's protection of personal data (hash, redact, drop).
//! - `first_copies`: the Kafka positions of the new rows silver keeps.
//! - `builtins`: fast paths of `cardinality` and `date_trunc` for the shapes
//!   Iceberg tables give them.

mod builtins;
pub mod error;
mod first_copies;
pub mod models;
pub mod pii;
mod pipeline;
pub mod scan;
pub mod transform;
mod validate;

pub use error::{Error, Result};
pub use models::{model_sql, silver_sql};
pub use pii::PiiKey;
pub use pipeline::run_pipeline;
pub use transform::{
    DEFAULT_GOLD_ROWS_PER_QUERY, DEFAULT_SILVER_ROWS_PER_COMMIT, Layers, ModelReport, Observer,
    Quiet, TransformOptions, run_gold, run_layers, run_silver,
};
pub use validate::validate;

/// A query's answer, for the crate's tests.
#[cfg(test)]
pub(crate) async fn answer(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Vec<arrow_array::RecordBatch> {
    ctx.sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
}

/// A query's answer as a printed table, for the crate's tests.
#[cfg(test)]
pub(crate) async fn printed(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
    arrow_cast::pretty::pretty_format_batches(&answer(ctx, sql).await)
        .expect("format")
        .to_string()
}
