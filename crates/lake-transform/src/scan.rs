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
    build(table, files, columns, partitions, None)
}

/// [`file_set_table`] of every column, reading only the rows `predicate`
/// holds: iceberg's reader skips the row groups whose statistics rule it
/// out and filters the rows of the rest as it decodes them.
pub fn file_set_table_where(
    table: &Table,
    files: &[LiveFile],
    partitions: usize,
    predicate: &iceberg::expr::Predicate,
) -> Result<Arc<FileSetTable>> {
    use iceberg::expr::Bind;
    let schema = table.metadata().current_schema().clone();
    let bound = predicate.bind(schema, true)?;
    build(table, files, &[], partitions, Some(bound))
}

fn build(
    table: &Table,
    files: &[LiveFile],
    columns: &[&str],
    partitions: usize,
    predicate: Option<iceberg::expr::BoundPredicate>,
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
    let whole: Vec<FileScanTask> = files
        .iter()
        .map(|file| FileScanTask {
            predicate: predicate.clone(),
            ..lake_table::read::scan_task(file, &schema, &[])
        })
        .collect();
    let mut groups = balance(whole.clone(), partitions);
    // Whole files read faster and with less memory; row groups only when
    // whole files leave one stream well behind the others.
    if !even(&groups, partitions) {
        let split = whole
            .into_iter()
            .zip(files)
            .flat_map(|(task, file)| row_group_tasks(task, file))
            .collect();
        groups = balance(split, partitions);
    }
    Ok(Arc::new(FileSetTable {
        table: table.clone(),
        arrow,
        field_ids,
        groups,
    }))
}

/// `tasks` in up to `partitions` groups of about equal bytes: largest
/// first, each to the group with the fewest bytes so far.
fn balance(mut tasks: Vec<FileScanTask>, partitions: usize) -> Vec<Vec<FileScanTask>> {
    let partitions = partitions.clamp(1, tasks.len().max(1));
    let mut groups: Vec<Vec<FileScanTask>> = vec![Vec::new(); partitions];
    tasks.sort_by_key(|t| std::cmp::Reverse(t.length));
    let mut loads = vec![0u64; partitions];
    for task in tasks {
        let lightest = (0..partitions).min_by_key(|&i| loads[i]).unwrap_or(0);
        loads[lightest] += task.length;
        groups[lightest].push(task);
    }
    groups
}

/// No group holds more than a tenth above an equal share of the bytes
/// among `partitions` (fewer groups than that leave the share unmet).
fn even(groups: &[Vec<FileScanTask>], partitions: usize) -> bool {
    let loads: Vec<u64> = groups
        .iter()
        .map(|group| group.iter().map(|t| t.length).sum())
        .collect();
    let total: u64 = loads.iter().sum();
    let share = total as f64 / partitions.max(1) as f64;
    loads.iter().all(|&load| load as f64 <= share * 1.1)
}

/// `task` split at the row groups its file's `split_offsets` name, so that
/// streams can be balanced by row group rather than by whole file: a few
/// large files (a busy hour's) otherwise left one stream with twice the
/// rows of the other and a core idle while it finished. The reader takes a
/// row group into the split holding its midpoint, so each is read once. The
/// whole file when the offsets are absent or do not fit it.
fn row_group_tasks(task: FileScanTask, file: &LiveFile) -> Vec<FileScanTask> {
    let size = task.file_size_in_bytes;
    let offsets = file.data_file.split_offsets().unwrap_or_default();
    let fits = offsets.len() > 1
        && offsets.first().is_some_and(|&first| first >= 4)
        && offsets.windows(2).all(|pair| pair[0] < pair[1])
        && offsets.last().is_some_and(|&last| (last as u64) < size);
    if !fits {
        return vec![task];
    }
    let mut bounds: Vec<u64> = offsets.iter().map(|&offset| offset as u64).collect();
    bounds[0] = 0;
    bounds.push(size);
    bounds
        .windows(2)
        .map(|range| FileScanTask {
            start: range[0],
            length: range[1] - range[0],
            record_count: None,
            ..task.clone()
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::{Int64Array, RecordBatch};
    use datafusion::prelude::SessionContext;
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type, UnboundPartitionSpec};
    use lake_table::{TableWriter, WriterOptions};

    use super::*;

    /// One file of 100 000 ids in ten row groups, each with a column of
    /// scrambled values that makes its row groups outweigh the footer.
    async fn one_file_of_row_groups(dir: &std::path::Path) -> (Table, Vec<LiveFile>) {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "noise", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .expect("schema");
        let table = lake_table::testing::local_table_with(
            dir,
            "ids",
            schema,
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .expect("table");
        let mut writer = TableWriter::new(
            &table,
            WriterOptions {
                row_group_rows: 10_000,
                ..WriterOptions::default()
            },
        )
        .await
        .expect("writer");
        let ids = RecordBatch::try_new(
            writer.schema().clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..100_000)),
                Arc::new(Int64Array::from_iter_values(
                    (0..100_000i64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)),
                )),
            ],
        )
        .expect("batch");
        writer.write(&ids).await.expect("write");
        let files = writer.close().await.expect("close");
        let live = files
            .into_iter()
            .map(|data_file| LiveFile {
                data_file,
                snapshot_id: 1,
                sequence_number: 1,
                file_sequence_number: Some(1),
                partition_spec_id: 0,
            })
            .collect();
        (table, live)
    }

    /// The first row of `sql`'s answer over `scan` registered as `ids`, its
    /// columns as integers.
    async fn first_row(scan: Arc<FileSetTable>, sql: &str) -> Vec<i64> {
        let ctx = SessionContext::new();
        ctx.register_table("ids", scan).expect("register");
        let answer = crate::answer(&ctx, sql).await;
        let row = &answer[0];
        (0..row.num_columns())
            .map(|i| {
                row.column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .value(0)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_file_s_row_groups_are_spread_over_the_streams_and_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, files) = one_file_of_row_groups(dir.path()).await;
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].data_file.split_offsets().map(<[i64]>::len),
            Some(10)
        );

        let scan = file_set_table(&table, &files, &[], 2).expect("file set");
        let per_stream: Vec<usize> = scan.groups.iter().map(Vec::len).collect();
        assert_eq!(per_stream, [5, 5], "ten row groups, five per stream");
        // Two files of one size balance whole: they are not split.
        let twice = [files[0].clone(), files[0].clone()];
        let whole = file_set_table(&table, &twice, &[], 2).expect("file set");
        let per_stream: Vec<usize> = whole.groups.iter().map(Vec::len).collect();
        assert_eq!(per_stream, [1, 1]);

        assert_eq!(
            first_row(
                scan,
                "SELECT count(*) AS n, count(DISTINCT id) AS d, sum(id) AS s FROM ids"
            )
            .await,
            [100_000, 100_000, 4_999_950_000]
        );
    }

    #[tokio::test]
    async fn a_predicate_keeps_exactly_its_rows_over_split_row_groups() {
        use iceberg::expr::Reference;
        use iceberg::spec::Datum;
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, files) = one_file_of_row_groups(dir.path()).await;
        // Parts of the third and fourth row groups, and all of the last.
        let predicate = Reference::new("id")
            .greater_than_or_equal_to(Datum::long(25_000))
            .and(Reference::new("id").less_than(Datum::long(35_000)))
            .or(Reference::new("id").greater_than_or_equal_to(Datum::long(90_000)));
        let scan = file_set_table_where(&table, &files, 2, &predicate).expect("file set");
        assert_eq!(scan.groups.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
        assert_eq!(
            first_row(
                scan,
                "SELECT count(*) AS n, min(id) AS lo, sum(id) AS s FROM ids"
            )
            .await,
            [20_000, 25_000, 299_995_000 + 949_995_000]
        );
    }

    #[test]
    fn files_without_usable_offsets_stay_whole() {
        let schema = Arc::new(
            Schema::builder()
                .with_fields(vec![
                    NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                ])
                .build()
                .expect("schema"),
        );
        let file = |offsets: Option<Vec<i64>>| LiveFile {
            data_file: iceberg::spec::DataFileBuilder::default()
                .content(iceberg::spec::DataContentType::Data)
                .file_path("file:///t/data/a.parquet".into())
                .file_format(iceberg::spec::DataFileFormat::Parquet)
                .partition(iceberg::spec::Struct::empty())
                .record_count(30)
                .file_size_in_bytes(3000)
                .split_offsets(offsets)
                .build()
                .expect("data file"),
            snapshot_id: 1,
            sequence_number: 1,
            file_sequence_number: Some(1),
            partition_spec_id: 0,
        };
        let ranges = |file: LiveFile| -> Vec<(u64, u64)> {
            row_group_tasks(lake_table::read::scan_task(&file, &schema, &[]), &file)
                .iter()
                .map(|t| (t.start, t.length))
                .collect()
        };
        assert_eq!(
            ranges(file(Some(vec![4, 1000, 2000]))),
            [(0, 1000), (1000, 1000), (2000, 1000)]
        );
        for unusable in [
            None,
            Some(vec![4]),
            Some(vec![4, 2000, 1000]),
            Some(vec![4, 3000]),
        ] {
            assert_eq!(ranges(file(unusable.clone())), [(0, 3000)], "{unusable:?}");
        }
    }
}
