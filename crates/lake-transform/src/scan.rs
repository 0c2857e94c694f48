//! DataFusion tables over an exact set of a table's data files.
//!
//! Incremental models must read precisely the files the commit layer names
//! (those appended since the last run, or those of the partitions being
//! rebuilt), not whatever a snapshot scan would plan. Files are read with
//! iceberg's Arrow reader, so field ids, schema evolution and storage
//! (`file://`, `s3://`) work as for any Iceberg scan.

use std::any::Any;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::scan::FileScanTask;
use iceberg::table::Table;
use lake_table::files::LiveFile;

use crate::error::{Error, Result};

/// A DataFusion table reading `files` of `table`, only `columns` (all when
/// empty), split into up to `partitions` streams read concurrently.
pub fn file_set_table(
    table: &Table,
    files: &[LiveFile],
    columns: &[&str],
    partitions: usize,
) -> Result<Arc<FileSetTable>> {
    let schema = table.metadata().current_schema().clone();
    let field_ids: Vec<i32> = if columns.is_empty() {
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|field| field.id)
            .collect()
    } else {
        columns
            .iter()
            .map(|name| {
                schema.field_id_by_name(name).ok_or_else(|| {
                    Error::Internal(format!("{} has no column `{name}`", table.identifier()))
                })
            })
            .collect::<Result<_>>()?
    };
    let fields = field_ids
        .iter()
        .filter_map(|id| schema.as_struct().field_by_id(*id).cloned())
        .collect::<Vec<_>>();
    let projected = iceberg::spec::Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .build()?;
    // Without the top-level field ids: models combine columns of different
    // tables (a union of new and existing keys), whose ids differ.
    let arrow = schema_to_arrow_schema(&projected)?;
    let arrow: SchemaRef = Arc::new(arrow_schema::Schema::new(
        arrow
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ));
    let tasks: Vec<FileScanTask> = files
        .iter()
        .map(|file| lake_table::read::scan_task(file, &schema, &[]))
        .collect();
    let partitions = partitions.clamp(1, tasks.len().max(1));
    let mut groups: Vec<Vec<FileScanTask>> = vec![Vec::new(); partitions];
    // Largest first, each to the group with the fewest bytes: even streams.
    let mut by_size = tasks;
    by_size.sort_by_key(|t| std::cmp::Reverse(t.file_size_in_bytes));
    let mut loads = vec![0u64; partitions];
    for task in by_size {
        let lightest = (0..partitions).min_by_key(|&i| loads[i]).unwrap_or(0);
        loads[lightest] += task.file_size_in_bytes;
        groups[lightest].push(task);
    }
    Ok(Arc::new(FileSetTable {
        table: table.clone(),
        arrow,
        field_ids,
        groups,
    }))
}

/// See [`file_set_table`]. Scans read only the columns the plan uses.
#[derive(Debug)]
pub struct FileSetTable {
    table: Table,
    arrow: SchemaRef,
    field_ids: Vec<i32>,
    groups: Vec<Vec<FileScanTask>>,
}

#[async_trait::async_trait]
impl TableProvider for FileSetTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let (schema, mut ids) = match projection {
            Some(indices) => (
                Arc::new(self.arrow.project(indices)?),
                indices.iter().map(|&i| self.field_ids[i]).collect(),
            ),
            None => (self.arrow.clone(), self.field_ids.clone()),
        };
        // A plan that needs only row counts (`count(*)`) still reads one
        // column: the reader counts rows by the columns it decodes.
        if ids.is_empty() {
            ids.extend(self.field_ids.first());
        }
        let streams = self
            .groups
            .iter()
            .map(|tasks| {
                Arc::new(FileStream {
                    schema: schema.clone(),
                    table: self.table.clone(),
                    tasks: tasks
                        .iter()
                        .map(|task| FileScanTask {
                            project_field_ids: ids.clone(),
                            ..task.clone()
                        })
                        .collect(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            streams,
            None,
            Vec::<LexOrdering>::new(),
            false,
            limit,
        )?))
    }
}

/// One stream of a [`file_set_table`]: its files, read one after another.
#[derive(Debug)]
struct FileStream {
    schema: SchemaRef,
    table: Table,
    tasks: Vec<FileScanTask>,
}

impl PartitionStream for FileStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let labelled = schema.clone();
        let stream =
            lake_table::read::read_tasks(self.table.file_io().clone(), self.tasks.clone(), 1)
                .map(move |batch| relabel(batch?, &labelled))
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// The reader's batches carry its own schema metadata; DataFusion wants the
/// declared one.
fn relabel(
    batch: arrow_array::RecordBatch,
    schema: &SchemaRef,
) -> iceberg::Result<arrow_array::RecordBatch> {
    let invalid = |e: &dyn std::fmt::Display| {
        iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e.to_string())
    };
    if schema.fields().is_empty() {
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return arrow_array::RecordBatch::try_new_with_options(schema.clone(), vec![], &options)
            .map_err(|e| invalid(&e));
    }
    lake_table::writer::conform(&batch, schema).map_err(|e| invalid(&e))
}
