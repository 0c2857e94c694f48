//! Reading the catalog's tables: `lake sql` (DataFusion over every namespace
//! through iceberg-datafusion, with time travel) and the table overviews of
//! `lake tables`, `lake snapshots` and `lake status`.

pub mod error;
pub mod output;
pub mod sql;
pub mod status;

pub use datafusion::arrow::array::RecordBatch;
pub use error::{Error, Result};
pub use output::{Format, write_batches};
pub use sql::{AsOf, QueryResult, Session};
pub use status::{
    SnapshotRow, SourceLag, TableStatus, snapshots, snapshots_batch, status_batch, statuses,
    table_status,
};
