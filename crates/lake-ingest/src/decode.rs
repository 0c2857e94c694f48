//! Kafka payloads → bronze rows and dead letters.
//!
//! A record is taken into a chunk unless it is empty or over the size limit.
//! A chunk is then decoded in one strict pass (`onepass`): serde_json reads
//! each record straight into the payload's columns. When that pass declines
//! a chunk (it takes only what it decodes exactly as the checked path would),
//! the chunk goes the checked way: each record must be UTF-8, a JSON object,
//! nested no deeper than `MAX_NESTING` and valid JSON by serde_json's
//! syntax check; those that are, are decoded together by arrow-json into the
//! bronze payload schema. A chunk that fails there (a wrong type, a missing
//! required field) is split in halves until the failing records stand alone;
//! they become dead letters with arrow's error text.

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
use crate::onepass::OnePass;

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
#[derive(Clone, Debug, Default)]
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

    /// Keeps one record for decoding, or as a dead letter when it is empty
    /// or over `max_record_bytes`. Its other checks come with decoding
    /// ([`RecordDecoder::decode`]), where the one strict pass makes them.
    pub fn push(&mut self, payload: Option<&[u8]>, at: Coordinates, max_record_bytes: usize) {
        let payload = payload.unwrap_or_default();
        self.bytes += payload.len() as u64;
        match sized(payload, max_record_bytes) {
            Ok(()) => self.keep(payload, at),
            Err(error) => self.rejected.push(Rejected {
                raw: payload.to_vec(),
                error,
                at,
            }),
        }
    }

    /// Appends a record to decode.
    fn keep(&mut self, payload: &[u8], at: Coordinates) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        let end = self.data.len();
        self.data.push(b'\n');
        self.pending.push(Pending {
            range: start..end,
            at,
        });
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

/// The checks a record must pass to be taken into a chunk.
fn sized(payload: &[u8], max_record_bytes: usize) -> std::result::Result<(), String> {
    if payload.is_empty() {
        return Err("empty record".into());
    }
    if payload.len() > max_record_bytes {
        return Err(format!(
            "record of {} bytes exceeds the {max_record_bytes}-byte limit (--max-record-bytes)",
            payload.len()
        ));
    }
    Ok(())
}

/// The checks a record of a chunk must pass before arrow-json decodes it.
fn check_record(payload: &[u8]) -> std::result::Result<(), String> {
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

impl Chunk {
    /// The chunk as the checked path decodes it: its records that pass
    /// [`check_record`], the others refused. Borrowed when all pass, as they
    /// mostly do; otherwise the passing records are copied into a new
    /// chunk, since arrow-json decodes ranges of records back to back.
    fn checked(&self) -> std::borrow::Cow<'_, Chunk> {
        let failures: Vec<(usize, String)> = self
            .pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                check_record(&self.data[p.range.clone()])
                    .err()
                    .map(|e| (i, e))
            })
            .collect();
        if failures.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut passed = Chunk::with_capacity(self.pending.len(), self.data.len());
        passed.rejected = self.rejected.clone();
        passed.bytes = self.bytes;
        let mut failures = failures.into_iter().peekable();
        for (i, pending) in self.pending.iter().enumerate() {
            let payload = &self.data[pending.range.clone()];
            match failures.next_if(|(failed, _)| *failed == i) {
                Some((_, error)) => passed.rejected.push(Rejected {
                    raw: payload.to_vec(),
                    error,
                    at: pending.at,
                }),
                None => passed.keep(payload, pending.at),
            }
        }
        std::borrow::Cow::Owned(passed)
    }

    /// The records to decode, as text, when every one is UTF-8 and nested
    /// no deeper than `MAX_NESTING`; `None` sends the chunk the checked way.
    /// The chunk is validated as one string: its records are separated by
    /// newlines, which no UTF-8 sequence spans, so it is valid exactly when
    /// each record is.
    fn texts(&self) -> Option<Vec<&str>> {
        let data = std::str::from_utf8(&self.data).ok()?;
        self.pending
            .iter()
            .map(|p| {
                let text = data.get(p.range.clone())?;
                (!nesting_exceeds(text.as_bytes(), MAX_NESTING)).then_some(text)
            })
            .collect()
    }
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
    /// The one strict pass, unless the payload has a type it does not decode.
    one_pass: Option<OnePass>,
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
        let payload = Arc::new(Schema::new(payload_fields));
        Self {
            topic: topic.to_string(),
            bronze,
            one_pass: OnePass::new(payload.clone(), evolve),
            payload,
            event_epoch,
            evolve,
        }
    }

    /// The same decoder without the one strict pass: every chunk goes the
    /// checked way, as for a payload the pass does not cover. For measuring
    /// and testing the pass against the path it stands in for.
    pub fn checked_only(mut self) -> Self {
        self.one_pass = None;
        self
    }

    /// Decodes every accepted record; bad ones become dead letters. Fails
    /// only with `Err(Ok(NewFields))` when evolving and records carry fields
    /// the table lacks, or on an internal error.
    pub fn decode(
        &self,
        chunk: &Chunk,
        ingested_at_micros: i64,
    ) -> std::result::Result<Decoded, std::result::Result<NewFields, Error>> {
        if let Some(one_pass) = &self.one_pass
            && !chunk.pending.is_empty()
            && let Some(texts) = chunk.texts()
            && let Ok(payload) = one_pass.decode(texts.iter().copied())
        {
            let mut rejected = chunk.rejected.clone();
            rejected.sort_by_key(|r| (r.at.partition, r.at.offset));
            let bronze = self
                .bronze_batch(
                    chunk,
                    0..chunk.pending.len(),
                    Some(&texts),
                    &payload,
                    ingested_at_micros,
                )
                .map_err(Err)?;
            return Ok(Decoded {
                bronze: vec![bronze],
                rejected,
            });
        }
        self.decode_checked(&chunk.checked(), ingested_at_micros)
    }

    /// The checked path: arrow-json over the records that pass the checks,
    /// halving where it fails.
    fn decode_checked(
        &self,
        chunk: &Chunk,
        ingested_at_micros: i64,
    ) -> std::result::Result<Decoded, std::result::Result<NewFields, Error>> {
        let mut decoded = Decoded {
            rejected: chunk.rejected.clone(),
            ..Decoded::default()
        };
        if chunk.pending.is_empty() {
            decoded
                .rejected
                .sort_by_key(|r| (r.at.partition, r.at.offset));
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
                self.bronze_batch(chunk, range, None, &payload, ingested_at_micros)
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

    /// `texts`: the records of `range` as text, where the caller has them
    /// already validated as UTF-8.
    fn bronze_batch(
        &self,
        chunk: &Chunk,
        range: Range<usize>,
        texts: Option<&[&str]>,
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
                    match texts {
                        Some(texts) => texts.iter().for_each(|t| raw.append_value(t)),
                        None => {
                            for r in records {
                                // Checked as UTF-8 before it was decoded.
                                raw.append_value(
                                    std::str::from_utf8(&chunk.data[r.range.clone()])
                                        .unwrap_or_default(),
                                );
                            }
                        }
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

    /// The decoder ingest makes for a built-in dataset, without evolution.
    fn built_in_decoder(name: &str, topic: &str) -> RecordDecoder {
        let pipeline = lake_spec::Pipeline::built_in().unwrap();
        let dataset = pipeline.dataset(name).unwrap();
        RecordDecoder::new(
            dataset,
            topic,
            arrow(&bronze_schema(dataset).unwrap()),
            false,
        )
    }

    #[test]
    fn good_and_bad_records_are_told_apart() {
        let decoder = built_in_decoder("speedtest", "speedtest_raw");
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
        chunk.push(Some(b""), at(1), 1 << 20);
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

    /// Records of `stream` as `lake generate` makes them, `count` from `seed`.
    fn generated(stream: lake_generate::Stream, count: usize, seed: u64) -> Vec<Vec<u8>> {
        use lake_generate::{Generator, GeneratorConfig};
        let mut generator = Generator::new(GeneratorConfig::new(stream, seed, 1_767_225_600_000));
        (0..count)
            .map(|_| generator.next_record().payload.to_vec())
            .collect()
    }

    fn assert_same(one: &Decoded, checked: &Decoded) {
        assert_eq!(one.bronze, checked.bronze);
        assert_eq!(one.rejected, checked.rejected);
    }

    #[test]
    fn the_one_pass_decodes_generated_records_as_the_checked_path_does() {
        let decoder = built_in_decoder("tweets", "tweets");
        assert!(decoder.one_pass.is_some());
        let checked = decoder.clone().checked_only();
        let mut chunk = Chunk::sized_for(4096);
        for (i, payload) in generated(lake_generate::Stream::Tweets, 4096, 7)
            .iter()
            .enumerate()
        {
            chunk.push(Some(payload), at(i as i64), 1 << 20);
        }
        // The pass took the chunk itself rather than leaving it to the
        // checked path, or the comparison below would compare that path with
        // itself.
        let texts = chunk.texts().unwrap();
        assert!(
            decoder
                .one_pass
                .as_ref()
                .unwrap()
                .decode(texts.iter().copied())
                .is_ok()
        );
        let one = decoder.decode(&chunk, 1_767_225_601_000_000).unwrap();
        assert_eq!((one.rows(), one.bronze.len()), (4096, 1));
        assert_same(
            &one,
            &checked.decode(&chunk, 1_767_225_601_000_000).unwrap(),
        );

        let decoder = built_in_decoder("speedtest", "speedtest_raw");
        let mut chunk = Chunk::default();
        for (i, payload) in generated(lake_generate::Stream::Speedtest, 1000, 7)
            .iter()
            .enumerate()
        {
            chunk.push(Some(payload), at(i as i64), 1 << 20);
        }
        let one = decoder.decode(&chunk, 0).unwrap();
        assert_eq!(one.rows(), 1000);
        assert_same(
            &one,
            &decoder.clone().checked_only().decode(&chunk, 0).unwrap(),
        );
    }

    #[test]
    fn a_chunk_with_bad_records_gets_the_checked_path_s_rows_and_dead_letters() {
        let decoder = built_in_decoder("tweets", "tweets");
        let checked = decoder.clone().checked_only();
        let good = generated(lake_generate::Stream::Tweets, 64, 11);
        let text = std::str::from_utf8(&good[0]).unwrap();
        let bad: Vec<Vec<u8>> = vec![
            text.replacen('{', "{\"tweet_id\":\"dup\",", 1).into_bytes(),
            text.replacen('}', ",}", 1).into_bytes(),
            b"\xc3(".to_vec(),
            b"[1]".to_vec(),
            b"{\"tweet_id\":\"x\",\"user\":{\"user_id\":\"u\"},\"created_at\":\"soon\"}".to_vec(),
            format!("{{\"a\":{}1{}}}", "[".repeat(65), "]".repeat(65)).into_bytes(),
            Vec::new(),
        ];
        let mut chunk = Chunk::default();
        let mut offset = 0;
        for (i, payload) in good.iter().enumerate() {
            chunk.push(Some(payload), at(offset), 1 << 20);
            offset += 1;
            if let Some(bad) = bad.get(i) {
                chunk.push(Some(bad), at(offset), 1 << 20);
                offset += 1;
            }
        }
        let one = decoder.decode(&chunk, 5).unwrap();
        assert_eq!(one.rows(), 64 + 1);
        assert_eq!(one.rejected.len(), bad.len() - 1);
        assert_same(&one, &checked.decode(&chunk, 5).unwrap());
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
