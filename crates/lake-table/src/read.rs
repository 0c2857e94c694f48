//! Reading an exact list of a table's data files.
//!
//! Incremental transforms and compaction must read precisely the files the
//! commit layer names, not whatever a snapshot scan would plan. Files are read
//! with iceberg's Arrow reader, so field ids, schema evolution and storage
//! (`file://`, `s3://`) work as for any Iceberg scan.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFileFormat, SchemaRef};

use crate::files::LiveFile;

/// Rows per batch the reader hands out.
pub const BATCH_ROWS: usize = 8192;

/// A task reading `file` whole, the columns `field_ids` of `schema`.
pub fn scan_task(file: &LiveFile, schema: &SchemaRef, field_ids: &[i32]) -> FileScanTask {
    let data = &file.data_file;
    FileScanTask {
        file_size_in_bytes: data.file_size_in_bytes(),
        start: 0,
        length: data.file_size_in_bytes(),
        record_count: Some(data.record_count()),
        data_file_path: data.file_path().to_string(),
        data_file_format: DataFileFormat::Parquet,
        schema: schema.clone(),
        project_field_ids: field_ids.to_vec(),
        predicate: None,
        deletes: Vec::new(),
        partition: None,
        partition_spec: None,
        name_mapping: None,
        case_sensitive: true,
    }
}

/// The batches of `tasks`, `concurrency` files read at a time (1: in order,
/// one after another; more interleaves batches of different files).
pub fn read_tasks(
    file_io: FileIO,
    tasks: Vec<FileScanTask>,
    concurrency: usize,
) -> BoxStream<'static, iceberg::Result<arrow_array::RecordBatch>> {
    futures::stream::once(async move {
        let runtime = iceberg::Runtime::try_current()?;
        let reader = ArrowReaderBuilder::new(file_io, runtime)
            .with_batch_size(BATCH_ROWS)
            .with_data_file_concurrency_limit(concurrency.max(1))
            .build();
        let tasks = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
        Ok::<_, iceberg::Error>(reader.read(tasks)?.stream())
    })
    .try_flatten()
    .boxed()
}

/// `batches` polled by a task of its own, up to `ahead` batches ahead of
/// the consumer: decoding then runs on another core than whatever consumes
/// it (compaction's encoder), instead of taking turns with it on one. The
/// task stops when the returned stream is dropped.
pub fn read_ahead(
    mut batches: BoxStream<'static, iceberg::Result<arrow_array::RecordBatch>>,
    ahead: usize,
) -> BoxStream<'static, iceberg::Result<arrow_array::RecordBatch>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(ahead.max(1));
    tokio::spawn(async move {
        while let Some(batch) = batches.next().await {
            let failed = batch.is_err();
            // The consumer went away (it failed or is done): stop reading.
            if sender.send(batch).await.is_err() || failed {
                break;
            }
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|batch| (batch, receiver))
    })
    .boxed()
}
