//! Kafka payloads → bronze rows and dead letters.
//!
//! Each record first passes cheap checks (size, emptiness, UTF-8, a JSON
//! object that parses — serde_json's syntax check, which also bounds nesting
//! depth). Records that pass are decoded together, a chunk at a time, by
//! arrow-json into the bronze payload schema. A chunk that fails (a wrong
//! type, a missing required field) is split in halves until the failing
//! records stand alone; they become dead letters with arrow's error text.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{LargeBinaryBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_json::ReaderBuilder;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_spec::{DatasetSpec, TimeFormat};

use crate::bronze::{
    ERROR, EVENT_TIME, INGESTED_AT, KAFKA_TIMESTAMP, OFFSET, PARTITION, RAW, TOPIC,
};
use crate::error::{Error, Result};

const UTC: &str = "+00:00";

/// Columns lake adds; everything else in a bronze table comes from the payload.
pub fn is_metadata_column(name: &str) -> bool {
    matches!(
        name,
        RAW | TOPIC | PARTITION | OFFSET | KAFKA_TIMESTAMP | INGESTED_AT | EVENT_TIME
    )
}

/// Where one record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coordinates {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug)]
struct Pending {
    range: Range<usize>,
    at: Coordinates,
}

/// A refused record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub raw: Vec<u8>,
    pub error: String,
    pub at: Coordinates,
}

/// Records gathered for decoding: payloads back to back, newline-separated.
#[derive(Debug, Default)]
pub struct Chunk {
    data: Vec<u8>,
    pending: Vec<Pending>,
    rejected: Vec<Rejected>,
    bytes: u64,
}

/// The payload bytes a chunk is first sized for, per record: a little over
/// a generated tweet. A chunk of larger records grows, and is reused unless
/// it grew past twice that (`Chunk::recycled`).
pub const CHUNK_RECORD_BYTES: usize = 600;

impl Chunk {
    /// A chunk for `records` records, sized as ingest sizes its chunks.
    pub fn sized_for(records: usize) -> Self {
        Self::with_capacity(records, records * CHUNK_RECORD_BYTES)
    }

    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            pending: Vec::with_capacity(records),
            rejected: Vec::new(),
            bytes: 0,
        }
    }

    /// The chunk emptied for the next records. Its buffers are kept, so the
    /// consumer does not grow a new chunk's from nothing (copying them as
    /// they double) for every chunk, unless large records grew them past
    /// twice `bytes`: then they go back to the allocator.
    pub fn recycled(mut self, records: usize, bytes: usize) -> Self {
        if self.data.capacity() > bytes.saturating_mul(2) {
            return Self::with_capacity(records, bytes);
        }
        self.clear();
        self
    }

    /// Empties the chunk in place for the next `records` records, as
    /// [`Chunk::recycled`] does, against the size ingest gives its chunks.
    pub fn refill(&mut self, records: usize) {
        *self = std::mem::take(self).recycled(records, records * CHUNK_RECORD_BYTES);
    }

    /// Records accepted so far (for decoding) plus those refused outright.
    pub fn len(&self) -> usize {
        self.pending.len() + self.rejected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes taken in, good and bad.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks one record and keeps it for decoding, or as a dead letter.
    pub fn push(&mut self, payload: Option<&[u8]>, at: Coordinates, max_record_bytes: usize) {
        let payload = payload.unwrap_or_default();
        self.bytes += payload.len() as u64;
        match precheck(payload, max_record_bytes) {
            Ok(()) => {
                let start = self.data.len();
                self.data.extend_from_slice(payload);
                let end = self.data.len();
                self.data.push(b'\n');
                self.pending.push(Pending {
                    range: start..end,
                    at,
                });
            }
            Err(error) => self.rejected.push(Rejected {
                raw: payload.to_vec(),
                error,
                at,
            }),
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.pending.clear();
        self.rejected.clear();
        self.bytes = 0;
    }
}

/// Deepest object/array nesting accepted. The schemas need three levels;
/// arrow-json recurses per level when it skips or decodes a value, so
/// unbounded nesting would exhaust a thread's stack.
pub const MAX_NESTING: usize = 64;

/// Whether brackets outside strings nest deeper than `limit`.
fn nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    // Cheap bound first: too few brackets to nest that deep at all. A
    // record has few brackets among many bytes, which memchr skips with
    // SIMD where a filter over the bytes looks at each one.
    let opening = memchr::memchr2_iter(b'[', b'{', bytes).count();
    if opening <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The checks a record must pass before it is decoded.
fn precheck(payload: &[u8], max_record_bytes: usize) -> std::result::Result<(), String> {
    if payload.is_empty() {
        return Err("empty record".into());
    }
    if payload.len() > max_record_bytes {
        return Err(format!(
            "record of {} bytes exceeds the {max_record_bytes}-byte limit (--max-record-bytes)",
            payload.len()
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    if nesting_exceeds(payload, MAX_NESTING) {
        return Err(format!("nested deeper than {MAX_NESTING} levels"));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// A decoded chunk.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Bronze rows, in one or more batches (split where bad records sat).
    pub bronze: Vec<RecordBatch>,
    pub rejected: Vec<Rejected>,
}

impl Decoded {
    pub fn rows(&self) -> usize {
        self.bronze.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Top-level fields found in records but not in the table (schema evolution).
#[derive(Clone, Debug, PartialEq)]
pub struct NewFields(pub Vec<Field>);

/// Decodes chunks for one bronze table.
#[derive(Clone, Debug)]
pub struct RecordDecoder {
    topic: String,
    /// The bronze table's Arrow schema (field ids included).
    bronze: SchemaRef,
    /// Its payload part: what arrow-json decodes into.
    payload: SchemaRef,
    /// The epoch field bronze's `_event_time` comes from, and how many
    /// microseconds one of its units is.
    event_epoch: Option<(String, i64)>,
    evolve: bool,
}

impl RecordDecoder {
    pub fn new(dataset: &DatasetSpec, topic: &str, bronze: SchemaRef, evolve: bool) -> Self {
        let payload_fields: Vec<_> = bronze
            .fields()
            .iter()
            .filter(|f| !is_metadata_column(f.name()))
            .cloned()
            .collect();
        let field = dataset.event_time.field.clone();
        let event_epoch = match dataset.event_time.format {
            TimeFormat::EpochMillis => Some((field, 1_000)),
            TimeFormat::EpochSeconds => Some((field, 1_000_000)),
            TimeFormat::Rfc3339 => None,
        };
        Self {
            topic: topic.to_string(),
            bronze,
            payload: Arc::new(Schema::new(payload_fields)),
            event_epoch,
            evolve,
        }
    }

    /// Decodes every accepted record; bad ones become dead letters. Fails
    /// only with `Err(Ok(NewFields))` when evolving and records carry fields
    /// the table lacks, or on an internal error.
    pub fn decode(
        &self,
        chunk: &Chunk,
        ingested_at_micros: i64,
    ) -> std::result::Result<Decoded, std::result::Result<NewFields, Error>> {
        let mut decoded = Decoded {
            rejected: chunk.rejected.clone(),
            ..Decoded::default()
        };
        if chunk.pending.is_empty() {
            return Ok(decoded);
        }
        let mut good = Vec::new();
        let mut stack: Vec<Range<usize>> = Vec::new();
        stack.push(0..chunk.pending.len());
        let mut first = true;
        while let Some(range) = stack.pop() {
            match self.decode_range(chunk, range.clone()) {
                Ok(batch) => good.push((range, batch)),
                Err(error) => {
                    if first && self.evolve {
                        let new = self.new_fields(chunk).map_err(Err)?;
                        if !new.is_empty() {
                            return Err(Ok(NewFields(new)));
                        }
                    }
                    if range.len() == 1 {
                        let pending = &chunk.pending[range.start];
                        decoded.rejected.push(Rejected {
                            raw: chunk.data[pending.range.clone()].to_vec(),
                            error,
                            at: pending.at,
                        });
                    } else {
                        let middle = range.start + range.len() / 2;
                        // Pushed in reverse so halves are decoded in order.
                        stack.push(middle..range.end);
                        stack.push(range.start..middle);
                    }
                }
            }
            first = false;
        }
        good.sort_by_key(|(range, _)| range.start);
        for (range, payload) in good {
            decoded.bronze.push(
                self.bronze_batch(chunk, range, &payload, ingested_at_micros)
                    .map_err(Err)?,
            );
        }
        decoded
            .rejected
            .sort_by_key(|r| (r.at.partition, r.at.offset));
        Ok(decoded)
    }

    fn decode_range(
        &self,
        chunk: &Chunk,
        range: Range<usize>,
    ) -> std::result::Result<RecordBatch, String> {
        let bytes = &chunk.data
            [chunk.pending[range.start].range.start..=chunk.pending[range.end - 1].range.end];
        let mut decoder = ReaderBuilder::new(self.payload.clone())
            .with_batch_size(range.len())
            .with_strict_mode(self.evolve)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let consumed = decoder.decode(bytes).map_err(|e| e.to_string())?;
        if consumed != bytes.len() || decoder.has_partial_record() {
            return Err("incomplete JSON record".into());
        }
        let batch = decoder
            .flush()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no rows".to_string())?;
        if batch.num_rows() != range.len() {
            return Err(format!(
                "{} records decoded into {} rows",
                range.len(),
                batch.num_rows()
            ));
        }
        Ok(batch)
    }

    /// Fields the chunk's records carry at top level that the table lacks.
    fn new_fields(&self, chunk: &Chunk) -> Result<Vec<Field>> {
        let (inferred, _) =
            arrow_json::reader::infer_json_schema(std::io::Cursor::new(&chunk.data), None)?;
        Ok(inferred
            .fields()
            .iter()
            .filter(|f| {
                self.payload.field_with_name(f.name()).is_err() && !is_metadata_column(f.name())
            })
            .filter(|f| f.data_type() != &DataType::Null)
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect())
    }

    fn bronze_batch(
        &self,
        chunk: &Chunk,
        range: Range<usize>,
        payload: &RecordBatch,
        ingested_at: i64,
    ) -> Result<RecordBatch> {
        let records = &chunk.pending[range];
        let n = records.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.bronze.fields().len());
        for field in self.bronze.fields() {
            let column: ArrayRef = match field.name().as_str() {
                RAW => {
                    let bytes: usize = records.iter().map(|r| r.range.len()).sum();
                    let mut raw = StringBuilder::with_capacity(n, bytes);
                    for r in records {
                        // Checked as UTF-8 when the record was taken in.
                        raw.append_value(
                            std::str::from_utf8(&chunk.data[r.range.clone()]).unwrap_or_default(),
                        );
                    }
                    Arc::new(raw.finish())
                }
                TOPIC => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    self.topic.as_str(),
                    n,
                ))),
                PARTITION => Arc::new(Int32Array::from_iter_values(
                    records.iter().map(|r| r.at.partition),
                )),
                OFFSET => Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.at.offset),
                )),
                KAFKA_TIMESTAMP => Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        records.iter().map(|r| r.at.timestamp_ms.map(|t| t * 1000)),
                    )
                    .with_timezone(UTC),
                ),
                INGESTED_AT => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(
                        ingested_at,
                        n,
                    ))
                    .with_timezone(UTC),
                ),
                EVENT_TIME => {
                    let (source, micros) = self
                        .event_epoch
                        .as_ref()
                        .map(|(field, micros)| (field.as_str(), *micros))
                        .unwrap_or_default();
                    let column = payload.column_by_name(source).ok_or_else(|| {
                        Error::Internal(format!("decoded batch lacks the event time `{source}`"))
                    })?;
                    // An `int` field holds epoch seconds or milliseconds too.
                    let epochs = arrow_cast::cast(column, &DataType::Int64)?;
                    let epochs = epochs
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| {
                            Error::Internal(format!("`{source}` is not a number after the cast"))
                        })?;
                    Arc::new(
                        TimestampMicrosecondArray::from_iter(
                            epochs.iter().map(|e| e.map(|e| e.saturating_mul(micros))),
                        )
                        .with_timezone(UTC),
                    )
                }
                name => payload.column_by_name(name).cloned().ok_or_else(|| {
                    Error::Internal(format!("decoded batch lacks column `{name}`"))
                })?,
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.bronze.clone(), columns)?)
    }
}

/// Builds the dead-letter batch for `rejected` records.
pub fn rejects_batch(
    schema: &SchemaRef,
    topic: &str,
    rejected: &[Rejected],
    ingested_at: i64,
) -> Result<RecordBatch> {
    let n = rejected.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column: ArrayRef = match field.name().as_str() {
            RAW => {
                let mut raw = LargeBinaryBuilder::with_capacity(
                    n,
                    rejected.iter().map(|r| r.raw.len()).sum(),
                );
                for r in rejected {
                    raw.append_value(&r.raw);
                }
                Arc::new(raw.finish())
            }
            ERROR => Arc::new(StringArray::from_iter_values(
                rejected.iter().map(|r| r.error.as_str()),
            )),
            TOPIC => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n))),
            PARTITION => Arc::new(Int32Array::from_iter_values(
                rejected.iter().map(|r| r.at.partition),
            )),
            OFFSET => Arc::new(Int64Array::from_iter_values(
                rejected.iter().map(|r| r.at.offset),
            )),
            KAFKA_TIMESTAMP => Arc::new(
                TimestampMicrosecondArray::from_iter(
                    rejected.iter().map(|r| r.at.timestamp_ms.map(|t| t * 1000)),
                )
                .with_timezone(UTC),
            ),
            INGESTED_AT => Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(ingested_at, n))
                    .with_timezone(UTC),
            ),
            other => {
                return Err(Error::Internal(format!(
                    "unexpected rejects column `{other}`"
                )));
            }
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bronze::{bronze_schema, rejects_schema};

    fn arrow(schema: &iceberg::spec::Schema) -> SchemaRef {
        Arc::new(iceberg::arrow::schema_to_arrow_schema(schema).unwrap())
    }

    fn speedtest() -> std::sync::Arc<DatasetSpec> {
        lake_spec::Pipeline::built_in()
            .unwrap()
            .dataset("speedtest")
            .unwrap()
            .clone()
    }

    fn at(offset: i64) -> Coordinates {
        Coordinates {
            partition: 1,
            offset,
            timestamp_ms: Some(1_767_225_600_000),
        }
    }

    const GOOD: &str = r#"{"timestamp":1767225600000,"user_id":"u1","upload_speed":10.5,"download_speed":100.0,"latency":12.0,"location":"Berlin"}"#;

    #[test]
    fn good_and_bad_records_are_told_apart() {
        let speedtest = speedtest();
        let decoder = RecordDecoder::new(
            &speedtest,
            "speedtest_raw",
            arrow(&bronze_schema(&speedtest).unwrap()),
            false,
        );
        let mut chunk = Chunk::default();
        let wrong_type = GOOD.replace("10.5", "\"fast\"");
        let missing = GOOD.replace(r#""user_id":"u1","#, "");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        // Deep nesting must not reach arrow-json, in a field the schema does
        // not know or in one it does.
        let deep_unknown = format!("{{\"a\":{}1{}}}", "[".repeat(30_000), "]".repeat(30_000));
        let deep_known = GOOD.replace(
            "\"Berlin\"",
            &format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000)),
        );
        let inputs: Vec<(Option<&[u8]>, Option<&str>)> = vec![
            (Some(GOOD.as_bytes()), None),
            (Some(&GOOD.as_bytes()[..40]), Some("invalid JSON")),
            (Some(wrong_type.as_bytes()), Some("upload_speed")),
            (Some(b""), Some("empty record")),
            (None, Some("empty record")),
            (Some(b"\xff\xfe{}"), Some("invalid UTF-8")),
            (Some(b"{\"user_id\":\"a\x00b\"}"), Some("control character")),
            (Some(missing.as_bytes()), Some("user_id")),
            (Some(deep.as_bytes()), Some("not a JSON object")),
            (Some(deep_unknown.as_bytes()), Some("nested deeper than 64")),
            (Some(deep_known.as_bytes()), Some("nested deeper than 64")),
            (Some(GOOD.as_bytes()), None),
            (Some(&[b'x'; 70_000]), Some("exceeds")),
        ];
        for (i, (payload, _)) in inputs.iter().enumerate() {
            chunk.push(*payload, at(i as i64), 65_536);
        }
        let decoded = decoder.decode(&chunk, 1_767_225_601_000_000).unwrap();
        assert_eq!(decoded.rows(), 2);
        let offsets: Vec<i64> = decoded
            .bronze
            .iter()
            .flat_map(|b| {
                let column = b
                    .column_by_name(OFFSET)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                column.values().to_vec()
            })
            .collect();
        let good: Vec<i64> = (0..inputs.len() as i64)
            .filter(|&i| inputs[i as usize].1.is_none())
            .collect();
        assert_eq!(offsets, good);
        assert_eq!(decoded.rejected.len(), inputs.len() - 2);
        for rejected in &decoded.rejected {
            let want = inputs[rejected.at.offset as usize].1.unwrap();
            assert!(
                rejected.error.contains(want),
                "offset {}: `{}` lacks `{want}`",
                rejected.at.offset,
                rejected.error
            );
        }
        let batch = &decoded.bronze[0];
        let event = batch
            .column_by_name(EVENT_TIME)
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(event.value(0), 1_767_225_600_000_000);
        let raw = batch
            .column_by_name(RAW)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(raw.value(0), GOOD);

        let rejects = rejects_batch(
            &arrow(&rejects_schema()),
            "speedtest_raw",
            &decoded.rejected,
            0,
        )
        .unwrap();
        assert_eq!(rejects.num_rows(), inputs.len() - 2);
    }

    #[test]
    fn a_recycled_chunk_is_empty_and_keeps_its_buffers_unless_they_grew_large() {
        let mut chunk = Chunk::with_capacity(4, 1024);
        chunk.push(Some(GOOD.as_bytes()), at(0), 1 << 20);
        chunk.push(Some(b"not JSON"), at(1), 1 << 20);
        assert_eq!((chunk.len(), chunk.rejected.len()), (2, 1));
        let chunk = chunk.recycled(4, 1024);
        assert!(chunk.is_empty());
        assert_eq!(chunk.bytes(), 0);
        assert!(chunk.data.is_empty() && chunk.rejected.is_empty());
        assert_eq!(chunk.data.capacity(), 1024);

        let mut chunk = chunk;
        for offset in 0..20 {
            chunk.push(Some(GOOD.as_bytes()), at(offset), 1 << 20);
        }
        assert!(chunk.data.capacity() > 2048, "{}", chunk.data.capacity());
        let chunk = chunk.recycled(4, 1024);
        assert!(chunk.is_empty());
        assert_eq!(chunk.data.capacity(), 1024);
    }

    #[test]
    fn new_top_level_fields_are_reported_when_evolving() {
        let speedtest = speedtest();
        let schema = arrow(&bronze_schema(&speedtest).unwrap());
        let with_isp = GOOD.replace(r#""location""#, r#""isp":"Acme","location""#);
        let mut chunk = Chunk::default();
        chunk.push(Some(with_isp.as_bytes()), at(0), 1 << 20);
        let strict = RecordDecoder::new(&speedtest, "t", schema.clone(), true);
        match strict.decode(&chunk, 0) {
            Err(Ok(NewFields(fields))) => {
                assert_eq!(fields.len(), 1);
                assert_eq!(fields[0].name(), "isp");
                assert_eq!(fields[0].data_type(), &DataType::Utf8);
            }
            other => panic!("expected new fields, got {other:?}"),
        }
        // Without evolution the extra field is ignored and the row kept.
        let lenient = RecordDecoder::new(&speedtest, "t", schema, false);
        assert_eq!(lenient.decode(&chunk, 0).unwrap().rows(), 1);
    }
}

#[cfg(test)]
mod nesting {
    use super::nesting_exceeds;

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[[[[[","b":["x"]}"#, 2));
        assert!(nesting_exceeds(br#"{"a":[[1]]}"#, 2));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[","b":[1]}"#, 2));
    }
}
