//! Merging one partition's small files into files near the target size
//! without encoding again what need not be.
//!
//! The columns a table writes without a dictionary and without statistics
//! (its `lake.write.distinct-columns`: raw payloads, ids, free text) are
//! most of a file's bytes and of a rewrite's work, yet their pages do not
//! depend on the rows around them: each data page carries its own header,
//! values and compression. Those columns are therefore copied page by page,
//! still compressed, from the small files into the new one, each new row
//! group's column chunk the concatenation of whole input chunks; only the
//! other columns are decoded and encoded again, so their dictionaries and
//! statistics cover the new row groups. Rows keep the input files' order,
//! which keeps the copied and the encoded columns of a row together.
//!
//! A file qualifies when it has the schema the table writes now and its
//! copied columns have no dictionary and the table's codec at the table's
//! level (a footer does not keep the level: lake's writers record it in the
//! file's key-value metadata, and a file without that record counts as the
//! codec's default level); when any file
//! of a group does not, [`merge`] declines and the caller rewrites the
//! group in full.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::{ArrowFileReader, schema_to_arrow_schema};
use iceberg::io::{FileIO, FileMetadata, FileWrite};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, PartitionKey, Struct,
};
use iceberg::table::Table;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator, FileNameGenerator, LocationGenerator,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriter, compute_leaves,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{ColumnChunkMetaData, PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;

use crate::error::{Error, Result};
use crate::files::LiveFile;
use crate::writer::{
    COMPRESSION_LEVEL_KEY, WriterOptions, codec_name, level_of, writer_properties,
};

/// Footers read at once while checking a group's files.
const FOOTER_CONCURRENCY: usize = 16;
/// Bytes of input files loaded ahead of the encoder, and at most this many
/// files: enough to keep storage round trips out of its way, few enough to
/// bound memory when the small files are not that small.
const LOAD_AHEAD_BYTES: u64 = 256 * 1024 * 1024;
const LOAD_AHEAD_FILES: usize = 8;
/// Bytes of a new file handed to storage at once at least (its end may be
/// less): every write to an object store is a part of a multipart upload,
/// which S3 wants at least 5 MiB large, and a file written at once is one
/// PUT.
const WRITE_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// What one merge wrote.
#[derive(Debug)]
pub struct Merged {
    pub files: Vec<DataFile>,
    /// Top-level columns copied page by page rather than encoded again.
    pub copied_columns: Vec<String>,
}

/// Merges `files`, all of `partition` under the table's current spec, into
/// new data files of at most about `target` bytes (not committed).
/// `None` when some file does not qualify (see the module documentation)
/// or the table has no column to copy: nothing was written then.
pub async fn merge(
    table: &Table,
    files: &[LiveFile],
    partition: &Struct,
    target: u64,
) -> Result<Option<Merged>> {
    let plan = match Plan::new(table, target)? {
        Some(plan) => Arc::new(plan),
        None => return Ok(None),
    };
    let spec_id = table.metadata().default_partition_spec_id();
    if files.iter().any(|f| {
        f.partition_spec_id != spec_id || f.data_file.file_format() != DataFileFormat::Parquet
    }) {
        return Ok(None);
    }
    let file_io = table.file_io().clone();
    // Owned, so the tasks borrow nothing from the caller.
    let sized: Vec<(String, u64)> = files
        .iter()
        .map(|f| (f.path().to_string(), f.data_file.file_size_in_bytes()))
        .collect();
    // Every footer is checked before anything is written, so a group that
    // must be rewritten in full leaves no file behind. The loads below read
    // each footer again (with its page index) rather than hold them all: a
    // group of tiny files may have tens of thousands.
    let checks = futures::stream::iter(sized.clone().into_iter().map(|(path, size)| {
        let (file_io, plan) = (file_io.clone(), plan.clone());
        tokio::spawn(async move {
            let (_, metadata) = open(&file_io, &path, size, false).await?;
            Ok::<_, Error>(
                plan.unfit(metadata.metadata())
                    .map(|why| format!("{path}: {why}")),
            )
        })
    }))
    .buffered(FOOTER_CONCURRENCY);
    futures::pin_mut!(checks);
    while let Some(check) = checks.next().await {
        let check = check.map_err(|e| Error::Internal(format!("a footer check failed: {e}")))?;
        if let Some(why) = check? {
            tracing::debug!(table = %table.identifier(), %why, "files rewritten in full");
            return Ok(None);
        }
    }

    let largest = files
        .iter()
        .map(|f| f.data_file.file_size_in_bytes())
        .max()
        .unwrap_or(1)
        .max(1);
    let ahead = usize::try_from(LOAD_AHEAD_BYTES / largest)
        .unwrap_or(LOAD_AHEAD_FILES)
        .clamp(1, LOAD_AHEAD_FILES);
    // Each file is loaded (its copied chunks fetched, the rest decoded) on a
    // task of its own, so decoding runs beside the encoder; `buffered` hands
    // them over in the files' order.
    let loads =
        futures::stream::iter(sized.into_iter().enumerate().map(|(input, (path, size))| {
            let (file_io, plan) = (file_io.clone(), plan.clone());
            tokio::spawn(async move { load(&file_io, &plan, input, &path, size).await })
        }))
        .buffered(ahead);
    futures::pin_mut!(loads);

    let mut output = Output::new(table, plan.clone(), partition.clone())?;
    while let Some(loaded) = loads.next().await {
        let loaded =
            loaded.map_err(|e| Error::Internal(format!("a file's load failed: {e}")))??;
        output.add(loaded).await?;
    }
    let written = output.finish(files).await?;
    Ok(Some(Merged {
        files: written,
        copied_columns: plan.copied_names.clone(),
    }))
}

/// What the table writes now, and which leaves are copied.
struct Plan {
    properties: Arc<WriterProperties>,
    arrow_schema: ArrowSchemaRef,
    parquet_schema: Arc<SchemaDescriptor>,
    /// Per leaf column: copied (true) or encoded again.
    copied: Vec<bool>,
    copied_names: Vec<String>,
    /// Top-level fields decoded, by position in the schema.
    decoded_roots: Vec<usize>,
    /// Per top-level field, its first leaf.
    first_leaf: Vec<usize>,
    target: u64,
    row_group_bytes: u64,
    row_group_rows: u64,
}

impl Plan {
    fn new(table: &Table, target: u64) -> Result<Option<Self>> {
        let options = WriterOptions::default();
        let properties = Arc::new(writer_properties(table, &options)?);
        let arrow_schema = Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?);
        // The schema an `ArrowWriter` derives is the one every lake writer
        // (iceberg's, over the same Arrow schema) puts in its files.
        let (probe, _) = serialized_writer(&arrow_schema, &properties)?;
        let parquet_schema = Arc::new(SchemaDescriptor::new(
            probe.schema_descr().root_schema_ptr(),
        ));
        let leaves = parquet_schema.num_columns();
        let mut copied = vec![false; leaves];
        let mut copied_names = Vec::new();
        let mut decoded_roots = Vec::new();
        let mut first_leaf = vec![usize::MAX; arrow_schema.fields().len()];
        let mut leaves_of = vec![0usize; arrow_schema.fields().len()];
        for leaf in 0..leaves {
            let root = parquet_schema.get_column_root_idx(leaf);
            first_leaf[root] = first_leaf[root].min(leaf);
            leaves_of[root] += 1;
        }
        for (root, field) in arrow_schema.fields().iter().enumerate() {
            if leaves_of[root] != 1 {
                decoded_roots.push(root);
                continue;
            }
            let leaf = first_leaf[root];
            let column = parquet_schema.column(leaf);
            let path = column.path();
            // A top-level primitive the table writes as plain pages without
            // statistics: nothing in its pages depends on its neighbours.
            let copy = path.parts().len() == 1
                && !properties.dictionary_enabled(path)
                && properties.statistics_enabled(path) == EnabledStatistics::None;
            if copy {
                copied[leaf] = true;
                copied_names.push(field.name().clone());
            } else {
                decoded_roots.push(root);
            }
        }
        if copied_names.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            row_group_bytes: properties.max_row_group_bytes().unwrap_or(usize::MAX) as u64,
            row_group_rows: properties.max_row_group_row_count().unwrap_or(usize::MAX) as u64,
            properties,
            arrow_schema,
            parquet_schema,
            copied,
            copied_names,
            decoded_roots,
            first_leaf,
            target,
        }))
    }

    /// No copied chunk yet for any leaf.
    fn no_chunks(&self) -> Vec<Vec<Chunk>> {
        self.copied.iter().map(|_| Vec::new()).collect()
    }

    /// Why `metadata`'s file cannot be merged, if it cannot.
    fn unfit(&self, metadata: &ParquetMetaData) -> Option<String> {
        let schema = metadata.file_metadata().schema_descr();
        if schema.root_schema() != self.parquet_schema.root_schema() {
            return Some("written under another schema".into());
        }
        // The level the file's pages were compressed at, where lake's writer
        // recorded it; otherwise the codec's default, as the footer reads.
        let recorded = metadata
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .find(|kv| kv.key == COMPRESSION_LEVEL_KEY)
            .and_then(|kv| kv.value.as_deref()?.parse::<i64>().ok());
        for group in metadata.row_groups() {
            for (leaf, chunk) in group.columns().iter().enumerate() {
                if !self.copied[leaf] {
                    continue;
                }
                let path = chunk.column_descr().path();
                let name = path.string();
                if chunk.dictionary_page_offset().is_some() {
                    return Some(format!("{name} has a dictionary"));
                }
                // A footer names the codec but not its level (a zstd chunk
                // reads back as level 1): the codecs are compared as named,
                // the levels as recorded.
                let table_codec = self.properties.compression(path);
                if std::mem::discriminant(&chunk.compression())
                    != std::mem::discriminant(&table_codec)
                {
                    return Some(format!(
                        "{name} is {}, the table writes {}",
                        codec_name(chunk.compression()),
                        codec_name(table_codec)
                    ));
                }
                let written = recorded.or_else(|| level_of(chunk.compression()));
                if let (Some(written), Some(wanted)) = (written, level_of(table_codec))
                    && written != wanted
                {
                    return Some(format!(
                        "{name} was compressed at level {written}, the table writes level {wanted}"
                    ));
                }
                if chunk.num_values() != group.num_rows() {
                    return Some(format!("{name} holds a value count unlike its rows"));
                }
            }
        }
        None
    }
}

/// A Parquet writer into memory for `arrow_schema` with `properties`, the
/// way `ArrowWriter` (and so iceberg's writer) derives the file's schema,
/// and the factory of its column writers.
fn serialized_writer(
    arrow_schema: &ArrowSchemaRef,
    properties: &WriterProperties,
) -> Result<(SerializedFileWriter<Vec<u8>>, ArrowRowGroupWriterFactory)> {
    let writer = ArrowWriter::try_new(Vec::new(), arrow_schema.clone(), Some(properties.clone()))?;
    Ok(writer.into_serialized_writer()?)
}

/// An input file's footer, `page_index` with its offset index.
async fn open(
    file_io: &FileIO,
    path: &str,
    size: u64,
    page_index: bool,
) -> Result<(ArrowFileReader, ArrowReaderMetadata)> {
    let reader = file_io.new_input(path)?.reader().await?;
    let mut reader = ArrowFileReader::new(FileMetadata { size }, reader);
    let options = ArrowReaderOptions::new().with_page_index_policy(if page_index {
        PageIndexPolicy::Optional
    } else {
        PageIndexPolicy::Skip
    });
    let metadata = ArrowReaderMetadata::load_async(&mut reader, options).await?;
    Ok((reader, metadata))
}

/// One copied column chunk of an input file, still compressed.
struct Chunk {
    bytes: Bytes,
    metadata: ColumnChunkMetaData,
    offset_index: Option<OffsetIndexMetaData>,
}

/// An input file ready to append: its copied chunks (per copied leaf, in
/// row-group order) and its other columns decoded.
struct Loaded {
    /// Position among the merged files.
    input: usize,
    path: String,
    rows: u64,
    bytes: u64,
    chunks: Vec<Vec<Chunk>>,
    batches: Vec<RecordBatch>,
}

async fn load(
    file_io: &FileIO,
    plan: &Plan,
    input: usize,
    path: &str,
    size: u64,
) -> Result<Loaded> {
    let (mut reader, metadata) = open(file_io, path, size, true).await?;
    let parquet = metadata.metadata().clone();
    if let Some(why) = plan.unfit(&parquet) {
        // The footer passed the check a moment ago; files never change.
        return Err(Error::Internal(format!(
            "{path} changed while merging: {why}"
        )));
    }
    let mut ranges = Vec::new();
    let mut described = Vec::new();
    for (group, row_group) in parquet.row_groups().iter().enumerate() {
        for (leaf, chunk) in row_group.columns().iter().enumerate() {
            if plan.copied[leaf] {
                let (start, length) = chunk.byte_range();
                ranges.push(start..start + length);
                let offset_index = parquet
                    .offset_index()
                    .and_then(|index| index.get(group)?.get(leaf).cloned());
                described.push((leaf, chunk.clone(), offset_index));
            }
        }
    }
    let fetched = reader.get_byte_ranges(ranges).await?;
    let mut chunks = plan.no_chunks();
    for ((leaf, metadata, offset_index), bytes) in described.into_iter().zip(fetched) {
        chunks[leaf].push(Chunk {
            bytes,
            metadata,
            offset_index,
        });
    }
    let mask = ProjectionMask::roots(
        parquet.file_metadata().schema_descr(),
        plan.decoded_roots.iter().copied(),
    );
    let batches = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_projection(mask)
        .with_batch_size(crate::read::BATCH_ROWS)
        .build()?
        .try_collect::<Vec<_>>()
        .await?;
    let rows = u64::try_from(parquet.file_metadata().num_rows()).unwrap_or(0);
    let decoded: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if decoded as u64 != rows {
        return Err(Error::Invalid(format!(
            "{path}: decoded {decoded} rows where its footer counts {rows}"
        )));
    }
    Ok(Loaded {
        input,
        path: path.to_string(),
        rows,
        bytes: size,
        chunks,
        batches,
    })
}

/// The new file being written, and its open row group.
struct Output {
    plan: Arc<Plan>,
    file_io: FileIO,
    locations: DefaultLocationGenerator,
    names: DefaultFileNameGenerator,
    partition: Struct,
    partition_key: Option<PartitionKey>,
    spec_id: i32,
    file: Option<OpenFile>,
    written: Vec<Written>,
}

/// A closed file: its path, size, footer and the inputs it holds.
struct Written {
    path: String,
    size: u64,
    metadata: ParquetMetaData,
    inputs: Vec<usize>,
}

struct OpenFile {
    path: String,
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    out: Box<dyn FileWrite>,
    inputs: Vec<usize>,
    /// The open row group: a writer per leaf (those of copied leaves unused),
    /// the copied chunks per leaf, and its rows and input bytes so far.
    columns: Vec<ArrowColumnWriter>,
    chunks: Vec<Vec<Chunk>>,
    rows: u64,
    bytes: u64,
}

impl Output {
    fn new(table: &Table, plan: Arc<Plan>, partition: Struct) -> Result<Self> {
        let metadata = table.metadata();
        let spec = metadata.default_partition_spec();
        let partition_key = (!spec.is_unpartitioned()).then(|| {
            PartitionKey::new(
                spec.as_ref().clone(),
                metadata.current_schema().clone(),
                partition.clone(),
            )
        });
        Ok(Self {
            plan,
            file_io: table.file_io().clone(),
            locations: DefaultLocationGenerator::new(metadata)?,
            names: DefaultFileNameGenerator::new(
                uuid::Uuid::new_v4().to_string(),
                None,
                DataFileFormat::Parquet,
            ),
            partition,
            partition_key,
            spec_id: metadata.default_partition_spec_id(),
            file: None,
            written: Vec::new(),
        })
    }

    async fn open_file(&mut self) -> Result<OpenFile> {
        let name = self.names.generate_file_name();
        let path = self
            .locations
            .generate_location(self.partition_key.as_ref(), &name);
        let out = self.file_io.new_output(&path)?.writer().await?;
        let (writer, factory) = serialized_writer(&self.plan.arrow_schema, &self.plan.properties)?;
        let columns = factory.create_column_writers(0)?;
        Ok(OpenFile {
            path,
            writer,
            factory,
            out,
            inputs: Vec::new(),
            columns,
            chunks: self.plan.no_chunks(),
            rows: 0,
            bytes: 0,
        })
    }

    /// Appends one input file's rows to the open row group, flushing it
    /// past the table's row-group size and rolling the file past the target.
    async fn add(&mut self, loaded: Loaded) -> Result<()> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open_file().await?,
        };
        let plan = &self.plan;
        for batch in &loaded.batches {
            for (column, &root) in batch.columns().iter().zip(&plan.decoded_roots) {
                let field = plan.arrow_schema.field(root);
                // The file's schema is the table's (checked): a column that
                // does not fit its field is lake's mistake, not the data's.
                let leaves = compute_leaves(field, column).map_err(|e| {
                    Error::Internal(format!("{}: column `{}`: {e}", loaded.path, field.name()))
                })?;
                for (offset, leaf) in leaves.iter().enumerate() {
                    file.columns[plan.first_leaf[root] + offset].write(leaf)?;
                }
            }
        }
        for (leaf, chunks) in loaded.chunks.into_iter().enumerate() {
            file.chunks[leaf].extend(chunks);
        }
        file.inputs.push(loaded.input);
        file.rows += loaded.rows;
        file.bytes += loaded.bytes;
        if file.bytes >= plan.row_group_bytes || file.rows >= plan.row_group_rows {
            flush_row_group(&mut file, plan).await?;
            if file.writer.bytes_written() as u64 >= plan.target {
                self.close_file(file).await?;
                return Ok(());
            }
        }
        self.file = Some(file);
        Ok(())
    }

    async fn close_file(&mut self, mut file: OpenFile) -> Result<()> {
        if file.rows > 0 {
            flush_row_group(&mut file, &self.plan).await?;
        }
        let metadata = file.writer.finish()?;
        let tail = std::mem::take(file.writer.inner_mut());
        file.out.write(Bytes::from(tail)).await?;
        file.out.close().await?;
        let size = file.writer.bytes_written() as u64;
        self.written.push(Written {
            path: file.path,
            size,
            metadata,
            inputs: file.inputs,
        });
        Ok(())
    }

    /// Closes the last file and describes every file written, its metrics
    /// from its own footer (sizes, value counts) and from those of the
    /// `inputs` it holds (null and NaN counts, bounds: exact, as the rows
    /// are the same).
    async fn finish(mut self, inputs: &[LiveFile]) -> Result<Vec<DataFile>> {
        if let Some(file) = self.file.take() {
            self.close_file(file).await?;
        }
        let mut files = Vec::new();
        for written in std::mem::take(&mut self.written) {
            let Written {
                path,
                size,
                metadata,
                inputs: held,
            } = written;
            let held: Vec<&DataFile> = held
                .iter()
                .filter_map(|i| inputs.get(*i))
                .map(|f| &f.data_file)
                .collect();
            let merged = InputMetrics::of(&held);
            let schema = metadata.file_metadata().schema_descr();
            let mut column_sizes: HashMap<i32, u64> = HashMap::new();
            let mut value_counts: HashMap<i32, u64> = HashMap::new();
            for group in metadata.row_groups() {
                for (leaf, chunk) in group.columns().iter().enumerate() {
                    let column = schema.column(leaf);
                    let info = column.self_type().get_basic_info();
                    if !info.has_id() {
                        continue;
                    }
                    *column_sizes.entry(info.id()).or_default() +=
                        u64::try_from(chunk.compressed_size()).unwrap_or(0);
                    *value_counts.entry(info.id()).or_default() +=
                        u64::try_from(chunk.num_values()).unwrap_or(0);
                }
            }
            let data_file = DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(path)
                .file_format(DataFileFormat::Parquet)
                .partition(self.partition.clone())
                .partition_spec_id(self.spec_id)
                .record_count(u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0))
                .file_size_in_bytes(size)
                .column_sizes(column_sizes)
                .value_counts(value_counts)
                .null_value_counts(merged.null_counts)
                .nan_value_counts(merged.nan_counts)
                .lower_bounds(merged.lower)
                .upper_bounds(merged.upper)
                .split_offsets(Some(
                    metadata
                        .row_groups()
                        .iter()
                        .filter_map(|g| g.file_offset())
                        .collect(),
                ))
                .build()
                .map_err(|e| Error::Internal(format!("describing a merged file: {e}")))?;
            files.push(data_file);
        }
        Ok(files)
    }
}

/// Writes the open row group: each leaf in schema order, a copied one as
/// its input chunks back to back, an encoded one from its writer.
async fn flush_row_group(file: &mut OpenFile, plan: &Plan) -> Result<()> {
    // The row groups before this one go to storage once they make a chunk;
    // the newest stays until the next, or the footer, joins it: a file of
    // one row group is then one PUT, as with iceberg's writer.
    if file.writer.inner().len() >= WRITE_CHUNK_BYTES {
        let written = std::mem::take(file.writer.inner_mut());
        file.out.write(Bytes::from(written)).await?;
    }
    let next = file
        .factory
        .create_column_writers(file.writer.flushed_row_groups().len() + 1)?;
    let columns = std::mem::replace(&mut file.columns, next);
    let chunks = std::mem::replace(&mut file.chunks, plan.no_chunks());
    let mut row_group = file.writer.next_row_group()?;
    for ((leaf, column), chunks) in columns.into_iter().enumerate().zip(chunks) {
        if plan.copied[leaf] {
            let (bytes, close) = concatenate(&plan.parquet_schema, leaf, chunks)?;
            row_group.append_column(&bytes, close)?;
        } else {
            column.close()?.append_to_row_group(&mut row_group)?;
        }
    }
    row_group.close()?;
    file.rows = 0;
    file.bytes = 0;
    file.writer
        .flush()
        .map_err(parquet::errors::ParquetError::from)?;
    Ok(())
}

/// One column chunk made of `chunks` back to back: their pages unchanged,
/// the offset index (when every input has one) moved to the new positions
/// and rows.
fn concatenate(
    schema: &SchemaDescriptor,
    leaf: usize,
    chunks: Vec<Chunk>,
) -> Result<(Bytes, ColumnCloseResult)> {
    let total: usize = chunks.iter().map(|c| c.bytes.len()).sum();
    let mut bytes = Vec::with_capacity(total);
    let mut pages: Option<Vec<PageLocation>> = Some(Vec::new());
    let mut unencoded_pages: Option<Vec<i64>> = Some(Vec::new());
    let mut encodings = None;
    let (mut compressed, mut uncompressed, mut values) = (0i64, 0i64, 0i64);
    let mut unencoded: Option<i64> = Some(0);
    let mut compression = None;
    for chunk in &chunks {
        let start = bytes.len() as i64;
        let (source, _) = chunk.metadata.byte_range();
        match (&chunk.offset_index, pages.as_mut()) {
            (Some(index), Some(pages)) => {
                pages.extend(index.page_locations.iter().map(|page| PageLocation {
                    offset: page.offset - source as i64 + start,
                    compressed_page_size: page.compressed_page_size,
                    first_row_index: page.first_row_index + values,
                }));
                match (
                    &index.unencoded_byte_array_data_bytes,
                    unencoded_pages.as_mut(),
                ) {
                    (Some(sizes), Some(all)) => all.extend(sizes),
                    _ => unencoded_pages = None,
                }
            }
            _ => pages = None,
        }
        bytes.extend_from_slice(&chunk.bytes);
        compressed += chunk.metadata.compressed_size();
        uncompressed += chunk.metadata.uncompressed_size();
        values += chunk.metadata.num_values();
        unencoded = unencoded
            .zip(chunk.metadata.unencoded_byte_array_data_bytes())
            .map(|(a, b)| a + b);
        let mask = encodings.get_or_insert_with(|| *chunk.metadata.encodings_mask());
        for encoding in chunk.metadata.encodings_mask().encodings() {
            mask.insert(encoding);
        }
        compression.get_or_insert(chunk.metadata.compression());
    }
    let descriptor = schema.column(leaf);
    let mut metadata = ColumnChunkMetaData::builder(descriptor)
        .set_total_compressed_size(compressed)
        .set_total_uncompressed_size(uncompressed)
        .set_num_values(values)
        .set_data_page_offset(0)
        .set_unencoded_byte_array_data_bytes(unencoded);
    if let Some(codec) = compression {
        metadata = metadata.set_compression(codec);
    }
    if let Some(mask) = encodings {
        metadata = metadata.set_encodings_mask(mask);
    }
    let close = ColumnCloseResult {
        bytes_written: compressed as u64,
        rows_written: values as u64,
        metadata: metadata.build()?,
        bloom_filter: None,
        column_index: None,
        offset_index: pages.map(|page_locations| OffsetIndexMetaData {
            page_locations,
            unencoded_byte_array_data_bytes: unencoded_pages,
        }),
    };
    Ok((Bytes::from(bytes), close))
}

/// The rows' null and NaN counts and bounds per field, from the input
/// files' metrics. A count is kept when every input has it; a bound when
/// every input holding a value of the field (not all null or NaN) has one.
struct InputMetrics {
    null_counts: HashMap<i32, u64>,
    nan_counts: HashMap<i32, u64>,
    lower: HashMap<i32, Datum>,
    upper: HashMap<i32, Datum>,
}

impl InputMetrics {
    fn of(files: &[&DataFile]) -> Self {
        let sum = |of: fn(&DataFile) -> &HashMap<i32, u64>| -> HashMap<i32, u64> {
            let Some(first) = files.first() else {
                return HashMap::new();
            };
            of(first)
                .keys()
                .filter_map(|id| {
                    files
                        .iter()
                        .map(|f| of(f).get(id).copied())
                        .sum::<Option<u64>>()
                        .map(|total| (*id, total))
                })
                .collect()
        };
        let null_counts = sum(DataFile::null_value_counts);
        let nan_counts = sum(DataFile::nan_value_counts);
        // A file without a bound for a field may leave it out only when it
        // holds no value there that a bound would have to cover.
        let only_nulls = |file: &DataFile, id: i32| {
            let values = file.value_counts().get(&id);
            let nulls = file.null_value_counts().get(&id).copied().unwrap_or(0);
            let nans = file.nan_value_counts().get(&id).copied().unwrap_or(0);
            values.is_some_and(|v| *v == nulls + nans)
        };
        let bound = |of: fn(&DataFile) -> &HashMap<i32, Datum>, lower: bool| {
            let mut ids: Vec<i32> = files.iter().flat_map(|f| of(f).keys().copied()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter()
                .filter_map(|id| {
                    let mut best: Option<&Datum> = None;
                    for file in files {
                        match of(file).get(&id) {
                            Some(value) => {
                                let better =
                                    best.is_none_or(|b| if lower { value < b } else { value > b });
                                if better {
                                    best = Some(value);
                                }
                            }
                            None if only_nulls(file, id) => {}
                            None => return None,
                        }
                    }
                    best.map(|b| (id, b.clone()))
                })
                .collect::<HashMap<_, _>>()
        };
        Self {
            null_counts,
            nan_counts,
            lower: bound(DataFile::lower_bounds, true),
            upper: bound(DataFile::upper_bounds, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use iceberg::spec::{
        NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
    };
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

    use crate::writer::{
        COMPRESSION_CODEC_PROPERTY, COMPRESSION_LEVEL_PROPERTY, DISTINCT_COLUMNS_PROPERTY,
        ROW_GROUP_BYTES_PROPERTY, TableWriter,
    };

    const HOUR: i64 = 3_600_000_000;

    fn schema() -> Schema {
        Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(3, "raw", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(4, "name", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(5, "score", Type::Primitive(PrimitiveType::Double)).into(),
            ])
            .build()
            .unwrap()
    }

    async fn table(dir: &std::path::Path, name: &str, properties: &[(&str, &str)]) -> Table {
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, "ts_hour", Transform::Hour)
            .unwrap()
            .build();
        crate::testing::local_table_with(
            dir,
            name,
            schema(),
            spec,
            properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .await
        .unwrap()
    }

    /// Rows `ids`, all in one hour: payloads long enough for several pages
    /// per file, some null; names of few values; scores with NaNs and nulls.
    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        let raw: Vec<Option<String>> = ids
            .clone()
            .map(|i| {
                (i % 11 != 0).then(|| {
                    // Hex of a simple generator: text that compresses little.
                    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let pad: String = (0..i % 2000)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
                        })
                        .collect();
                    format!("{{\"id\":{i},\"pad\":\"{pad}\"}}")
                })
            })
            .collect();
        let names: Vec<Option<String>> = ids
            .clone()
            .map(|i| (i % 7 != 0).then(|| format!("n{}", i % 13)))
            .collect();
        let scores: Vec<Option<f64>> = ids
            .clone()
            .map(|i| match i % 9 {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some(i as f64 / 3.0),
            })
            .collect();
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(ids.clone().map(|i| 5 * HOUR + i))
                        .with_timezone("+00:00"),
                ),
            ),
            ("raw", Arc::new(StringArray::from(raw))),
            ("name", Arc::new(StringArray::from(names))),
            ("score", Arc::new(Float64Array::from(scores))),
        ])
        .unwrap()
    }

    fn live(table: &Table, data_file: DataFile) -> LiveFile {
        LiveFile {
            data_file,
            snapshot_id: 1,
            sequence_number: 1,
            file_sequence_number: Some(1),
            partition_spec_id: table.metadata().default_partition_spec_id(),
        }
    }

    /// Files of `rows` rows each, one writer per file as many appends leave them.
    async fn small_files(table: &Table, files: i64, rows: i64) -> Vec<LiveFile> {
        let mut out = Vec::new();
        for f in 0..files {
            let mut writer = TableWriter::new(table, WriterOptions::default())
                .await
                .unwrap();
            writer
                .write(&batch(f * rows..(f + 1) * rows))
                .await
                .unwrap();
            for file in writer.close().await.unwrap() {
                out.push(live(table, file));
            }
        }
        out
    }

    /// Every row of `files`, read in their order, as one batch.
    async fn read(table: &Table, files: &[DataFile]) -> RecordBatch {
        let schema = table.metadata().current_schema().clone();
        let ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
        let tasks = files
            .iter()
            .map(|f| crate::read::scan_task(&live(table, f.clone()), &schema, &ids))
            .collect();
        let batches: Vec<RecordBatch> = crate::read::read_tasks(table.file_io().clone(), tasks, 1)
            .try_collect()
            .await
            .unwrap();
        arrow_select_concat(&batches)
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
        arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
    }

    /// The bytes of the file at `path` and its footer with the page index.
    async fn with_page_index(table: &Table, path: &str) -> (Bytes, ArrowReaderMetadata) {
        let bytes = table
            .file_io()
            .new_input(path)
            .unwrap()
            .read()
            .await
            .unwrap();
        let footer = ArrowReaderMetadata::load(
            &bytes,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        (bytes, footer)
    }

    #[tokio::test]
    async fn merged_files_hold_every_row_in_order_with_the_metrics_of_a_full_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        // Row groups of about two input files: each new row group's copied
        // chunk is made of several input chunks.
        let properties = [
            (DISTINCT_COLUMNS_PROPERTY, "raw"),
            (ROW_GROUP_BYTES_PROPERTY, "1500000"),
        ];
        let table = table(dir.path(), "merged", &properties).await;
        let inputs = small_files(&table, 8, 1500).await;
        assert_eq!(inputs.len(), 8);
        let input_bytes: u64 = inputs
            .iter()
            .map(|f| f.data_file.file_size_in_bytes())
            .sum();
        let partition = inputs[0].data_file.partition().clone();

        // A target of half the input: two new files.
        let merged = merge(&table, &inputs, &partition, input_bytes / 2)
            .await
            .unwrap()
            .expect("the files qualify");
        assert_eq!(merged.copied_columns, vec!["raw".to_string()]);
        assert_eq!(merged.files.len(), 2, "{:?}", merged.files);
        let rows: Vec<u64> = merged.files.iter().map(DataFile::record_count).collect();
        assert_eq!(rows.iter().sum::<u64>(), 12_000);

        let inputs_data: Vec<DataFile> = inputs.iter().map(|f| f.data_file.clone()).collect();
        let before = read(&table, &inputs_data).await;
        let after = read(&table, &merged.files).await;
        assert_eq!(after.num_rows(), 12_000);
        for (c, field) in before.schema().fields().iter().enumerate() {
            assert_eq!(after.column(c), before.column(c), "column {}", field.name());
        }

        // Each new file records what the table's writer records for its rows.
        let expected_table = self::table(dir.path(), "expected", &properties).await;
        let mut offset = 0;
        for file in &merged.files {
            assert_eq!(file.partition(), &partition);
            let rows = file.record_count() as usize;
            let mut writer = TableWriter::new(&expected_table, WriterOptions::default())
                .await
                .unwrap();
            writer.write(&before.slice(offset, rows)).await.unwrap();
            let expected = writer.close().await.unwrap();
            assert_eq!(expected.len(), 1);
            let expected = &expected[0];
            assert_eq!(file.value_counts(), expected.value_counts());
            assert_eq!(file.null_value_counts(), expected.null_value_counts());
            assert_eq!(file.nan_value_counts(), expected.nan_value_counts());
            assert_eq!(file.lower_bounds(), expected.lower_bounds());
            assert_eq!(file.upper_bounds(), expected.upper_bounds());
            assert!(
                file.null_value_counts().get(&3).is_none(),
                "raw has no statistics"
            );
            assert_eq!(
                file.null_value_counts().get(&4),
                Some(&(expected.null_value_counts()[&4]))
            );
            offset += rows;
        }

        // The copied column is plain pages from the inputs, several chunks
        // per row group; the page index leads a reader skipping rows to the
        // right pages.
        let (bytes, footer) = with_page_index(&table, merged.files[0].file_path()).await;
        let parquet = footer.metadata();
        assert!(
            parquet.num_row_groups() >= 2,
            "{} row groups",
            parquet.num_row_groups()
        );
        let input_pages: usize = {
            let mut pages = 0;
            for input in &inputs {
                let (_, meta) = with_page_index(&table, input.path()).await;
                pages += meta.metadata().offset_index().unwrap()[0][2]
                    .page_locations
                    .len();
            }
            pages
        };
        let merged_pages = |file: &ParquetMetaData| -> usize {
            file.offset_index()
                .unwrap()
                .iter()
                .map(|g| g[2].page_locations.len())
                .sum()
        };
        let (_, second) = with_page_index(&table, merged.files[1].file_path()).await;
        assert_eq!(
            merged_pages(parquet) + merged_pages(second.metadata()),
            input_pages
        );
        assert!(
            input_pages > inputs.len(),
            "several pages per input chunk: {input_pages}"
        );
        for group in parquet.row_groups() {
            let raw = group.column(2);
            assert!(raw.dictionary_page_offset().is_none());
            assert!(
                !raw.encodings_mask()
                    .is_set(parquet::basic::Encoding::RLE_DICTIONARY)
            );
        }
        let skip = 2_500;
        let selected =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(
                bytes.clone(),
                footer.clone(),
            )
            .with_row_selection(RowSelection::from(vec![
                RowSelector::skip(skip),
                RowSelector::select(100),
            ]))
            .build()
            .unwrap()
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap();
        let selected = arrow_select_concat(&selected);
        assert_eq!(selected.num_rows(), 100);
        assert_eq!(selected.column(2), &before.column(2).slice(skip, 100));
        assert_eq!(selected.column(0), &before.column(0).slice(skip, 100));
    }

    #[tokio::test]
    async fn files_with_a_dictionary_in_a_copied_column_are_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        // Written before the table declared `raw` distinct: dictionary pages.
        let older = table(dir.path(), "older", &[]).await;
        let inputs = small_files(&older, 3, 500).await;
        let table = table(dir.path(), "now", &[(DISTINCT_COLUMNS_PROPERTY, "raw")]).await;
        let partition = inputs[0].data_file.partition().clone();
        let merged = merge(&table, &inputs, &partition, u64::MAX).await.unwrap();
        assert!(merged.is_none(), "{merged:?}");

        let plan = Plan::new(&table, u64::MAX).unwrap().unwrap();
        let bytes = older
            .file_io()
            .new_input(inputs[0].path())
            .unwrap()
            .read()
            .await
            .unwrap();
        let footer = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).unwrap();
        assert_eq!(
            plan.unfit(footer.metadata()).as_deref(),
            Some("raw has a dictionary")
        );

        // A table without distinct columns has nothing to copy.
        assert!(
            merge(&older, &inputs, &partition, u64::MAX)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn copied_columns_keep_the_table_s_codec_and_level() {
        let dir = tempfile::tempdir().unwrap();
        // Written at zstd level 3, a copied column reads back as zstd
        // level 1 (the footer keeps no level), but the file records its
        // level, so it is copied into a table that writes level 3.
        let leveled = [
            (DISTINCT_COLUMNS_PROPERTY, "raw"),
            (COMPRESSION_LEVEL_PROPERTY, "3"),
        ];
        let zstd3 = table(dir.path(), "zstd3", &leveled).await;
        let files = small_files(&zstd3, 3, 500).await;
        let partition = files[0].data_file.partition().clone();
        let merged = merge(&zstd3, &files, &partition, u64::MAX).await.unwrap();
        let merged = merged.expect("files of the table's codec and level merge");
        assert_eq!(merged.copied_columns, ["raw"]);
        let rows: u64 = merged.files.iter().map(|f| f.record_count()).sum();
        assert_eq!(rows, 1500);
        // Files written at the default level are compressed again for a
        // table that now wants level 3, and so are files of another codec.
        let plan = Plan::new(&zstd3, u64::MAX).unwrap().unwrap();
        let older = table(dir.path(), "zstd1", &[(DISTINCT_COLUMNS_PROPERTY, "raw")]).await;
        let older_files = small_files(&older, 1, 500).await;
        let (_, footer) = with_page_index(&older, older_files[0].path()).await;
        assert_eq!(
            plan.unfit(footer.metadata()).as_deref(),
            Some("raw was compressed at level 1, the table writes level 3")
        );
        let lz4 = [
            (DISTINCT_COLUMNS_PROPERTY, "raw"),
            (COMPRESSION_CODEC_PROPERTY, "lz4"),
        ];
        let lz4 = table(dir.path(), "lz4", &lz4).await;
        let plan = Plan::new(&lz4, u64::MAX).unwrap().unwrap();
        let (_, footer) = with_page_index(&zstd3, files[0].path()).await;
        assert_eq!(
            plan.unfit(footer.metadata()).as_deref(),
            Some("raw is zstd, the table writes lz4")
        );
    }
}
