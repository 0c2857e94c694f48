//! Record batches → partitioned, rolling Parquet data files, compressed as
//! the table's properties say.
//!
//! Batches are split by the table's partition spec, each partition writes
//! files up to the target size, and every file comes back as an Iceberg
//! `DataFile` with its partition tuple and column metrics (value/null counts,
//! sizes, lower/upper bounds) so readers can prune.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, Scalar};
use arrow_schema::{DataType, SchemaRef};
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};

/// Iceberg's default target size for data files.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 512 * 1024 * 1024;

/// The size `table`'s data files aim at: its `write.target-file-size-bytes`
/// (which a dataset's `target_file_size` sets), else Iceberg's default.
pub fn target_file_size(table: &Table) -> u64 {
    size_property(
        table.metadata().properties(),
        iceberg::spec::TableProperties::PROPERTY_WRITE_TARGET_FILE_SIZE_BYTES,
        DEFAULT_TARGET_FILE_SIZE,
    )
}

/// A size in bytes from the table property `name`, else `default` (also
/// when it is not a positive whole number, as Iceberg's writers treat it).
fn size_property<T: std::str::FromStr + PartialOrd + Default>(
    properties: &std::collections::HashMap<String, String>,
    name: &str,
    default: T,
) -> T {
    properties
        .get(name)
        .and_then(|v| v.trim().parse::<T>().ok())
        .filter(|bytes| *bytes > T::default())
        .unwrap_or(default)
}

/// Iceberg's table property naming the codec of Parquet data files.
pub const COMPRESSION_CODEC_PROPERTY: &str = "write.parquet.compression-codec";
/// Iceberg's table property for the codec's level.
pub const COMPRESSION_LEVEL_PROPERTY: &str = "write.parquet.compression-level";
/// The zstd level of a table that names none: files are written once and
/// read many times, and level 1 decodes as fast as higher ones while
/// compressing several times faster than zstd's own default of 3.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The key, in a data file's Parquet key-value metadata, of the level its
/// pages were compressed at: Parquet's footer names a codec but not its
/// level, and compaction copies pages only at the level the table wants.
pub const COMPRESSION_LEVEL_KEY: &str = "lake.compression-level";

/// The level `compression` compresses at, for the codecs that have one.
/// For a codec read from a footer that is the codec's default level.
pub fn level_of(compression: Compression) -> Option<i64> {
    match compression {
        Compression::ZSTD(level) => Some(i64::from(level.compression_level())),
        Compression::GZIP(level) => Some(i64::from(level.compression_level())),
        Compression::BROTLI(level) => Some(i64::from(level.compression_level())),
        _ => None,
    }
}

/// `compression`'s codec by its Iceberg name, without a level.
pub fn codec_name(compression: Compression) -> &'static str {
    match compression {
        Compression::UNCOMPRESSED => "uncompressed",
        Compression::SNAPPY => "snappy",
        Compression::GZIP(_) => "gzip",
        Compression::LZO => "lzo",
        Compression::BROTLI(_) => "brotli",
        Compression::LZ4 => "lz4 (Hadoop's framing)",
        Compression::ZSTD(_) => "zstd",
        Compression::LZ4_RAW => "lz4",
    }
}

/// How `table`'s data files are compressed, from its properties: the codec
/// (`zstd` when unset; `snappy`, `gzip`, `lz4`, `brotli`, `uncompressed`)
/// and its level where the codec has one (zstd: [`DEFAULT_ZSTD_LEVEL`]
/// when unset). Every lake writer of the table uses it, so the choice is
/// the table's.
pub fn compression(table: &Table) -> Result<Compression> {
    compression_from(table.metadata().properties())
        .map_err(|message| Error::Invalid(format!("{}: {message}", table.identifier())))
}

fn compression_from(
    properties: &std::collections::HashMap<String, String>,
) -> std::result::Result<Compression, String> {
    let codec = properties
        .get(COMPRESSION_CODEC_PROPERTY)
        .map_or("zstd", |c| c.as_str());
    let level = match properties.get(COMPRESSION_LEVEL_PROPERTY) {
        None => None,
        Some(text) => Some(text.trim().parse::<i32>().map_err(|_| {
            format!("table property {COMPRESSION_LEVEL_PROPERTY} = `{text}` is not a whole number")
        })?),
    };
    // Codecs without levels ignore the level, as Iceberg's own writers do.
    let level = level.filter(|_| codec_takes_level(codec) != Some(false));
    compression_of(codec, level).map_err(|message| {
        format!(
            "table properties {COMPRESSION_CODEC_PROPERTY}/{COMPRESSION_LEVEL_PROPERTY}: {message}"
        )
    })
}

/// The codecs lake writes, by their Iceberg names, each with whether it
/// takes a level.
pub const CODECS: [(&str, bool); 6] = [
    ("zstd", true),
    ("snappy", false),
    ("gzip", true),
    ("lz4", false),
    ("brotli", true),
    ("uncompressed", false),
];

/// Whether `codec` (an Iceberg codec name, any case) takes a level; `None`
/// when lake does not write it.
pub fn codec_takes_level(codec: &str) -> Option<bool> {
    let codec = codec.trim().to_ascii_lowercase();
    let codec = if codec == "none" {
        "uncompressed"
    } else {
        &codec
    };
    CODECS
        .iter()
        .find(|(name, _)| *name == codec)
        .map(|(_, leveled)| *leveled)
}

/// Parquet's compression for `codec` (an Iceberg codec name, any case) at
/// `level` (the codec's default when `None`: zstd [`DEFAULT_ZSTD_LEVEL`],
/// gzip 6, brotli 1); a level given to a codec without one is refused here,
/// so a caller that tolerates it drops it first.
pub fn compression_of(codec: &str, level: Option<i32>) -> std::result::Result<Compression, String> {
    let name = codec.trim().to_ascii_lowercase();
    let leveled = codec_takes_level(&name).ok_or_else(|| {
        let names: Vec<&str> = CODECS.iter().map(|(name, _)| *name).collect();
        format!(
            "`{}` is not a codec lake writes: {}",
            codec.trim(),
            names.join(", ")
        )
    })?;
    if let (false, Some(l)) = (leveled, level) {
        return Err(format!("{name} takes no level, but level {l} is given"));
    }
    let out_of_range = |e: parquet::errors::ParquetError| format!("level for {name}: {e}");
    let unsigned = |default: u32| {
        level.map_or(Ok(default), |l| {
            u32::try_from(l).map_err(|_| format!("level {l} for {name} is negative"))
        })
    };
    Ok(match name.as_str() {
        "zstd" => Compression::ZSTD(
            ZstdLevel::try_new(level.unwrap_or(DEFAULT_ZSTD_LEVEL)).map_err(out_of_range)?,
        ),
        "gzip" => Compression::GZIP(GzipLevel::try_new(unsigned(6)?).map_err(out_of_range)?),
        "brotli" => Compression::BROTLI(BrotliLevel::try_new(unsigned(1)?).map_err(out_of_range)?),
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        // `uncompressed` or `none`: codec_takes_level knew the name.
        _ => Compression::UNCOMPRESSED,
    })
}

/// The table property listing (comma-separated) the top-level columns
/// whose values are (nearly) all distinct: every lake writer of the table
/// writes them without a dictionary and without min/max statistics, so a
/// rewrite (compaction) encodes them as the first writer did.
pub const DISTINCT_COLUMNS_PROPERTY: &str = "lake.write.distinct-columns";

/// `DISTINCT_COLUMNS_PROPERTY` as a table owning `columns` wants it
/// (`None`: not set).
pub fn distinct_property(columns: &[String]) -> (&'static str, Option<String>) {
    (
        DISTINCT_COLUMNS_PROPERTY,
        (!columns.is_empty()).then(|| columns.join(",")),
    )
}

/// Iceberg's table property for the size a Parquet row group is flushed at.
pub const ROW_GROUP_BYTES_PROPERTY: &str = "write.parquet.row-group-size-bytes";
/// Iceberg's default for [`ROW_GROUP_BYTES_PROPERTY`]: 128 MiB.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;

/// Iceberg's table property for the size a column's dictionary may reach
/// in a row group before the column falls back to plain encoding.
pub const DICTIONARY_BYTES_PROPERTY: &str = "write.parquet.dict-size-bytes";
/// lake's default for [`DICTIONARY_BYTES_PROPERTY`]: 4 MiB, where Iceberg's
/// Java writers use 2 and Parquet's Rust writer 1. A 128 k-row row group
/// of hashed user ids (64 hex digits, ~46 k distinct) needs ~3 MiB of
/// dictionary; at 1 MiB the column fell back to plain after ~16 k values,
/// and every later value was compressed and written in full. Only columns
/// with many distinct values reach the limit, and for each the writer
/// holds at most this much per open file.
pub const DEFAULT_DICTIONARY_BYTES: usize = 4 * 1024 * 1024;

/// How files are written.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Roll to a new file past this size. Default: the table's
    /// `write.target-file-size-bytes`, else 512 MiB.
    pub target_file_size: Option<u64>,
    /// Rows per Parquet row group at most; a row group is also flushed at
    /// the table's `write.parquet.row-group-size-bytes` (Iceberg's 128 MiB
    /// when unset), whichever comes first.
    pub row_group_rows: usize,
    /// File names start with this; make it unique per writer (the default is a
    /// random UUID) so concurrent writers never collide.
    pub file_prefix: String,
    /// Top-level columns whose values are (nearly) all distinct: written
    /// without a dictionary and without min/max statistics, which would cost
    /// time and help no reader. Added to those the table's
    /// `lake.write.distinct-columns` names.
    pub distinct_columns: Vec<String>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            target_file_size: None,
            row_group_rows: 1024 * 1024,
            file_prefix: uuid::Uuid::new_v4().to_string(),
            distinct_columns: Vec::new(),
        }
    }
}

/// The Parquet settings every lake writer of `table` uses: the table's codec
/// and level, row-group and dictionary sizes, and its distinct columns (with
/// those `options` adds) without dictionary or statistics.
pub fn writer_properties(table: &Table, options: &WriterOptions) -> Result<WriterProperties> {
    let table_properties = table.metadata().properties();
    let row_group_bytes = size_property(
        table_properties,
        ROW_GROUP_BYTES_PROPERTY,
        DEFAULT_ROW_GROUP_BYTES,
    );
    let compression = compression(table)?;
    let mut properties = WriterProperties::builder()
        .set_compression(compression)
        .set_key_value_metadata(level_of(compression).map(|level| {
            vec![KeyValue::new(
                COMPRESSION_LEVEL_KEY.to_string(),
                level.to_string(),
            )]
        }))
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_max_row_group_bytes(Some(row_group_bytes))
        .set_dictionary_page_size_limit(size_property(
            table_properties,
            DICTIONARY_BYTES_PROPERTY,
            DEFAULT_DICTIONARY_BYTES,
        ));
    let of_table = table_properties
        .get(DISTINCT_COLUMNS_PROPERTY)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for column in options.distinct_columns.iter().chain(&of_table) {
        let path = ColumnPath::from(column.as_str());
        properties = properties
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    Ok(properties.build())
}

type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

// One per writer, never in a collection: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Partitioned {
        splitter: RecordBatchPartitionSplitter,
        writer: FanoutWriter<Builder>,
        /// Each partition field's source column (its position in a batch)
        /// and transform, to see whether a batch lies in one partition;
        /// `None` when a source is not a top-level column or its transform
        /// has no Arrow kernel (the splitter then decides for every row).
        sources: Option<Vec<(usize, BoxedTransformFunction)>>,
    },
    Unpartitioned(
        DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>,
    ),
}

/// Writes record batches into data files for one table.
pub struct TableWriter {
    inner: Inner,
    schema: SchemaRef,
    rows: u64,
}

impl TableWriter {
    pub async fn new(table: &Table, options: WriterOptions) -> Result<Self> {
        let metadata = table.metadata();
        let iceberg_schema = metadata.current_schema().clone();
        let schema = Arc::new(schema_to_arrow_schema(&iceberg_schema)?);
        let properties = writer_properties(table, &options)?;
        let target = options
            .target_file_size
            .unwrap_or_else(|| target_file_size(table));
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(properties, iceberg_schema.clone()),
            usize::try_from(target).unwrap_or(usize::MAX),
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            DefaultFileNameGenerator::new(options.file_prefix, None, DataFileFormat::Parquet),
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec = metadata.default_partition_spec().clone();
        let inner = if spec.is_unpartitioned() {
            Inner::Unpartitioned(builder.build(None).await?)
        } else {
            let top_level = iceberg_schema.as_struct().fields();
            let sources = spec
                .fields()
                .iter()
                .map(|field| {
                    let index = top_level.iter().position(|f| f.id == field.source_id)?;
                    let transform = create_transform_function(&field.transform).ok()?;
                    Some((index, transform))
                })
                .collect();
            Inner::Partitioned {
                splitter: RecordBatchPartitionSplitter::try_new_with_computed_values(
                    iceberg_schema,
                    spec,
                )?,
                writer: FanoutWriter::new(builder),
                sources,
            }
        };
        Ok(Self {
            inner,
            schema,
            rows: 0,
        })
    }

    /// The Arrow schema batches are written with (the table's, with field ids).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes one batch. Its columns must match the table's schema by position
    /// and type; field metadata (ids) may differ and is taken from the table.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform(batch, &self.schema)?;
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Partitioned {
                splitter,
                writer,
                sources,
            } => {
                // A stream's batches mostly fall in one partition (an hour of
                // Kafka time, a day of event time). The splitter builds and
                // hashes a partition tuple for every row; a batch whose
                // transformed sources hold one value needs only its first
                // row's.
                if let Some(sources) = sources
                    && one_partition(&batch, sources)
                    && let Some((key, _)) = splitter.split(&batch.slice(0, 1))?.pop()
                {
                    writer.write(key, batch).await?;
                    return Ok(());
                }
                for (key, part) in splitter.split(&batch)? {
                    writer.write(key, part).await?;
                }
            }
            Inner::Unpartitioned(writer) => writer.write(batch).await?,
        }
        Ok(())
    }

    /// Finishes every open file and returns the data files written.
    pub async fn close(self) -> Result<Vec<DataFile>> {
        Ok(match self.inner {
            Inner::Partitioned { writer, .. } => writer.close().await?,
            Inner::Unpartitioned(mut writer) => writer.close().await?,
        })
    }
}

/// Whether every row of `batch` has the same partition: each transformed
/// source holds one value and no null. Anything the kernels cannot compare
/// answers no, and the splitter decides row by row.
fn one_partition(batch: &RecordBatch, sources: &[(usize, BoxedTransformFunction)]) -> bool {
    sources.iter().all(|(index, transform)| {
        let Ok(values) = transform.transform(batch.column(*index).clone()) else {
            return false;
        };
        if values.is_empty() || values.null_count() > 0 {
            return false;
        }
        let first = Scalar::new(values.slice(0, 1));
        arrow_ord::cmp::eq(&values, &first).is_ok_and(|same| same.true_count() == values.len())
    })
}

/// Re-labels `batch` with `schema` (the table's field ids and names), casting
/// columns whose type differs only in nested field metadata.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::Internal(format!(
            "batch has {} columns, the table {}: {:?}",
            batch.num_columns(),
            schema.fields().len(),
            schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if equal_ignoring_metadata(column.data_type(), field.data_type()) {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    Ok(arrow_cast::cast(column, field.data_type())?)
                }
            } else {
                Err(Error::Invalid(format!(
                    "column `{}` is {}, the table's is {}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )))
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn equal_ignoring_metadata(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    match (a, b) {
        (Struct(x), Struct(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(fx, fy)| {
                    fx.name() == fy.name()
                        && equal_ignoring_metadata(fx.data_type(), fy.data_type())
                })
        }
        (List(x), List(y)) | (LargeList(x), LargeList(y)) => {
            equal_ignoring_metadata(x.data_type(), y.data_type())
        }
        (Map(x, sx), Map(y, sy)) => {
            sx == sy && equal_ignoring_metadata(x.data_type(), y.data_type())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use iceberg::spec::{
        Datum, Literal, NestedField, PrimitiveType, Schema, Struct, Transform, Type,
        UnboundPartitionSpec,
    };

    const HOUR: i64 = 3_600_000_000;

    async fn table(dir: &std::path::Path, partitioned: bool) -> Table {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(3, "name", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .unwrap();
        let mut spec = UnboundPartitionSpec::builder();
        if partitioned {
            spec = spec
                .add_partition_field(2, "ts_hour", Transform::Hour)
                .unwrap();
        }
        crate::testing::local_table(dir, "t", schema, spec.build())
            .await
            .unwrap()
    }

    /// A batch without field-id metadata, as a caller would build it: rows
    /// `ids`, each at `ts(id)`, named `n<id>` where `named(id)`.
    fn rows(
        ids: std::ops::Range<i64>,
        ts: impl Fn(i64) -> i64,
        named: impl Fn(i64) -> bool,
    ) -> RecordBatch {
        let names: Vec<Option<String>> = ids
            .clone()
            .map(|i| named(i).then(|| format!("n{i}")))
            .collect();
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(ids.map(ts))
                        .with_timezone("+00:00"),
                ),
            ),
            ("name", Arc::new(StringArray::from(names))),
        ])
        .unwrap()
    }

    /// Rows `ids` spread over hours 0–2 (id % 3), every fifth unnamed.
    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        rows(ids, |i| (i % 3) * HOUR + i, |i| i % 5 != 0)
    }

    #[test]
    fn compression_follows_the_table_properties() {
        let of = |pairs: &[(&str, &str)]| {
            compression_from(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let codec = COMPRESSION_CODEC_PROPERTY;
        let level = COMPRESSION_LEVEL_PROPERTY;
        assert_eq!(
            of(&[]),
            Ok(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        );
        assert_eq!(
            of(&[(level, "9")]),
            Ok(Compression::ZSTD(ZstdLevel::try_new(9).unwrap()))
        );
        assert_eq!(
            of(&[(codec, "GZIP"), (level, "2")]),
            Ok(Compression::GZIP(GzipLevel::try_new(2).unwrap()))
        );
        assert_eq!(
            of(&[(codec, "snappy"), (level, "5")]),
            Ok(Compression::SNAPPY)
        );
        assert_eq!(
            of(&[(codec, "uncompressed")]),
            Ok(Compression::UNCOMPRESSED)
        );
        assert!(
            of(&[(codec, "lzo")])
                .unwrap_err()
                .contains("`lzo` is not a codec lake writes: zstd, snappy")
        );
        assert!(
            of(&[(level, "high")])
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(of(&[(level, "99")]).unwrap_err().contains("for zstd"));
        assert!(
            of(&[(codec, "gzip"), (level, "-1")])
                .unwrap_err()
                .contains("negative")
        );
        assert_eq!(of(&[(codec, "none")]), Ok(Compression::UNCOMPRESSED));
        // A dataset's declaration is checked strictly: a level a codec
        // cannot take is a mistake there, not something to ignore.
        assert_eq!(compression_of(" LZ4 ", None), Ok(Compression::LZ4_RAW));
        assert_eq!(
            compression_of("lz4", Some(3)),
            Err("lz4 takes no level, but level 3 is given".to_string())
        );
        assert_eq!(codec_takes_level("Brotli"), Some(true));
        assert_eq!(codec_takes_level("lzo"), None);
    }

    /// An unpartitioned table `name` with the test schema and `properties`.
    async fn table_with(dir: &std::path::Path, name: &str, properties: &[(&str, &str)]) -> Table {
        let plain = table(dir, false).await;
        crate::testing::local_table_with(
            dir,
            name,
            plain.metadata().current_schema().as_ref().clone(),
            UnboundPartitionSpec::builder().build(),
            properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .await
        .unwrap()
    }

    /// The Parquet footer of a file `table`'s writer wrote.
    async fn footer(table: &Table, file: &DataFile) -> parquet::file::metadata::ParquetMetaData {
        let bytes = table
            .file_io()
            .new_input(file.file_path())
            .unwrap()
            .read()
            .await
            .unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
        parquet::file::reader::FileReader::metadata(&reader).clone()
    }

    #[tokio::test]
    async fn files_are_compressed_with_the_table_s_codec() {
        let dir = tempfile::tempdir().unwrap();
        let plain = table(dir.path(), false).await;
        let snappy = table_with(
            dir.path(),
            "snappy",
            &[(COMPRESSION_CODEC_PROPERTY, "snappy")],
        )
        .await;
        for (table, wanted) in [
            (&plain, Compression::ZSTD(ZstdLevel::try_new(1).unwrap())),
            (&snappy, Compression::SNAPPY),
        ] {
            let mut writer = TableWriter::new(table, WriterOptions::default())
                .await
                .unwrap();
            writer.write(&batch(0..1000)).await.unwrap();
            let files = writer.close().await.unwrap();
            let metadata = footer(table, &files[0]).await;
            for column in metadata.row_group(0).columns() {
                assert_eq!(column.compression(), wanted, "{}", column.column_path());
            }
        }
    }

    #[tokio::test]
    async fn distinct_columns_and_row_group_size_follow_the_table_properties() {
        let dir = tempfile::tempdir().unwrap();
        let table = table_with(
            dir.path(),
            "distinct",
            &[
                (DISTINCT_COLUMNS_PROPERTY, " name ,"),
                (ROW_GROUP_BYTES_PROPERTY, "2048"),
            ],
        )
        .await;
        let mut writer = TableWriter::new(&table, WriterOptions::default())
            .await
            .unwrap();
        for start in (0..1000).step_by(100) {
            writer.write(&batch(start..start + 100)).await.unwrap();
        }
        let files = writer.close().await.unwrap();
        assert_eq!(files.len(), 1);
        let metadata = footer(&table, &files[0]).await;
        assert!(
            metadata.num_row_groups() > 1,
            "2 KiB row groups: {} row group(s)",
            metadata.num_row_groups()
        );
        for column in metadata.row_group(0).columns() {
            let distinct = column.column_path().string() == "name";
            assert_eq!(
                column.dictionary_page_offset().is_none(),
                distinct,
                "{}: dictionary only where the column is not distinct",
                column.column_path()
            );
            assert_eq!(
                column.statistics().is_none(),
                distinct,
                "{}: statistics only where the column is not distinct",
                column.column_path()
            );
        }
        assert!(
            !files[0].lower_bounds().contains_key(&3),
            "no bounds for name"
        );
        assert_eq!(files[0].lower_bounds()[&1], Datum::long(0));
    }

    /// Whether some of a column chunk's data pages fell back from its
    /// dictionary to plain encoding.
    fn fell_back(column: &parquet::file::metadata::ColumnChunkMetaData) -> bool {
        column
            .page_encoding_stats_mask()
            .expect("the data pages' encodings")
            .is_set(parquet::basic::Encoding::PLAIN)
    }

    #[tokio::test]
    async fn dictionaries_grow_to_the_table_s_dictionary_size() {
        // 40 000 distinct names of 64 hex digits: a ~2.7 MB dictionary,
        // which the default keeps (Parquet's 1 MiB and Iceberg's 2 MiB would
        // not) and a 64 KiB limit does not.
        let rows = 80_000i64;
        let names: Vec<String> = (0..rows).map(|i| format!("{:064x}", i % 40_000)).collect();
        let ids = batch(0..rows);
        let batch = RecordBatch::try_new(
            ids.schema(),
            vec![
                ids.column(0).clone(),
                ids.column(1).clone(),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let default = table(dir.path(), false).await;
        let small = table_with(dir.path(), "small", &[(DICTIONARY_BYTES_PROPERTY, "65536")]).await;
        for (table, falls_back) in [(&default, false), (&small, true)] {
            let mut writer = TableWriter::new(table, WriterOptions::default())
                .await
                .unwrap();
            writer.write(&batch).await.unwrap();
            let files = writer.close().await.unwrap();
            let metadata = footer(table, &files[0]).await;
            let name = metadata.row_group(0).column(2);
            assert_eq!(name.column_path().string(), "name");
            assert!(name.dictionary_page_offset().is_some());
            assert_eq!(
                fell_back(name),
                falls_back,
                "{:?}",
                name.page_encoding_stats_mask()
            );
        }
    }

    #[tokio::test]
    async fn files_carry_partition_values_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let table = table(dir.path(), true).await;
        let mut writer = TableWriter::new(&table, WriterOptions::default())
            .await
            .unwrap();
        writer.write(&batch(0..300)).await.unwrap();
        assert_eq!(writer.rows(), 300);
        let mut files = writer.close().await.unwrap();
        files.sort_by_key(|f| {
            f.partition()
                .clone()
                .into_iter()
                .next()
                .flatten()
                .map(|l| format!("{l:?}"))
        });
        assert_eq!(files.len(), 3, "one file per hour");
        for (hour, file) in files.iter().enumerate() {
            let hour = hour as i64;
            assert_eq!(file.record_count(), 100);
            assert_eq!(
                file.partition(),
                &Struct::from_iter([Some(Literal::int(hour as i32))])
            );
            assert!(
                file.file_path().contains("ts_hour="),
                "{}",
                file.file_path()
            );
            // ids hour, hour+3, …: bounds are exact, so readers can prune.
            assert_eq!(file.lower_bounds()[&1], Datum::long(hour));
            assert_eq!(file.upper_bounds()[&1], Datum::long(297 + hour));
            assert_eq!(file.value_counts()[&1], 100);
            assert_eq!(file.null_value_counts()[&3], 20);
            assert!(file.column_sizes()[&1] > 0);
            assert!(file.file_size_in_bytes() > 0);
        }
    }

    /// Rows `ids`, every one in hour `hour`.
    fn in_hour(hour: i64, ids: std::ops::Range<i64>) -> RecordBatch {
        rows(ids, |i| hour * HOUR + i, |_| true)
    }

    #[tokio::test]
    async fn batches_in_one_partition_and_batches_across_several_land_in_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let table = table(dir.path(), true).await;
        let mut writer = TableWriter::new(&table, WriterOptions::default())
            .await
            .unwrap();
        // Hour 1 alone, hours 0–2 mixed, hour 2 alone, hour 1 again.
        writer.write(&in_hour(1, 1000..1100)).await.unwrap();
        writer.write(&batch(0..300)).await.unwrap();
        writer.write(&in_hour(2, 2000..2050)).await.unwrap();
        writer.write(&in_hour(1, 3000..3001)).await.unwrap();
        assert_eq!(writer.rows(), 451);
        let files = writer.close().await.unwrap();
        let file = |hour: i32| {
            let partition = Struct::from_iter([Some(Literal::int(hour))]);
            let of_hour: Vec<_> = files
                .iter()
                .filter(|f| f.partition() == &partition)
                .collect();
            assert_eq!(of_hour.len(), 1, "one file for hour {hour}");
            of_hour[0]
        };
        // (hour, rows, lowest id, highest id)
        for (hour, rows, lowest, highest) in
            [(0, 100, 0, 297), (1, 201, 1, 3000), (2, 150, 2, 2049)]
        {
            let f = file(hour);
            assert_eq!(f.record_count(), rows, "hour {hour}");
            assert_eq!(f.lower_bounds()[&1], Datum::long(lowest), "hour {hour}");
            assert_eq!(f.upper_bounds()[&1], Datum::long(highest), "hour {hour}");
            // Every row's time is inside its file's hour.
            let hour = i64::from(hour);
            assert_eq!(
                f.lower_bounds()[&2],
                Datum::timestamptz_micros(hour * HOUR + lowest)
            );
            assert_eq!(
                f.upper_bounds()[&2],
                Datum::timestamptz_micros(hour * HOUR + highest)
            );
        }
        assert_eq!(files.len(), 3);
    }

    #[tokio::test]
    async fn files_roll_at_the_target_size() {
        let dir = tempfile::tempdir().unwrap();
        let table = table(dir.path(), false).await;
        let options = WriterOptions {
            target_file_size: Some(64 * 1024),
            row_group_rows: 10_000,
            ..Default::default()
        };
        let mut writer = TableWriter::new(&table, options).await.unwrap();
        for start in (0..200_000).step_by(10_000) {
            writer.write(&batch(start..start + 10_000)).await.unwrap();
        }
        let files = writer.close().await.unwrap();
        assert!(files.len() > 1, "{} file(s)", files.len());
        assert_eq!(files.iter().map(|f| f.record_count()).sum::<u64>(), 200_000);
    }

    #[tokio::test]
    async fn batches_that_do_not_fit_are_refused_with_the_column_named() {
        let dir = tempfile::tempdir().unwrap();
        let table = table(dir.path(), false).await;
        let mut writer = TableWriter::new(&table, WriterOptions::default())
            .await
            .unwrap();
        let wrong = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("+00:00")),
            ),
            ("name", Arc::new(StringArray::from(vec!["y"]))),
        ])
        .unwrap();
        let err = writer.write(&wrong).await.unwrap_err().to_string();
        assert!(err.contains("`id`"), "{err}");
    }
}
