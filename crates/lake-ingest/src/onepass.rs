//! One strict pass from a chunk's JSON to its Arrow columns.
//!
//! The checked path parses every record twice: serde_json checks its syntax
//! as the record is taken in, and arrow-json decodes the chunk again, more
//! leniently. Here serde_json, which is strict, parses each record once and
//! appends its values straight to builders of the payload's columns.
//!
//! The pass takes only what it decodes exactly as arrow-json would, and is
//! all or nothing per chunk: anything else — a syntax error, a value
//! arrow-json would coerce or refuse, a duplicate key (arrow-json keeps the
//! last), a null where the schema allows none, a field the table lacks when
//! evolving — fails the chunk, which then goes the checked way. So the
//! checked path alone decides what is a dead letter and with which message,
//! and a chunk this pass accepts holds the rows the checked path would have
//! made of it. Schemas with a type this pass does not decode (decimals,
//! maps, binary, dates, times, 32-bit floats) take the checked path always.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, NullBufferBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::timezone::Tz;
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_cast::parse::string_to_datetime;
use arrow_schema::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why a chunk left this pass for the checked path. Never shown to users:
/// the checked path says what is wrong with a record.
#[derive(Debug)]
pub(crate) struct Declined;

/// Decodes chunks of one payload schema in one pass, when its types allow.
#[derive(Clone, Debug)]
pub(crate) struct OnePass {
    payload: SchemaRef,
    /// Unknown fields fail the chunk (arrow-json's strict mode), so the
    /// checked path can find the fields to add.
    evolve: bool,
}

impl OnePass {
    /// `None` when a column's type is one this pass does not decode.
    pub(crate) fn new(payload: SchemaRef, evolve: bool) -> Option<Self> {
        // The columns' builders are what the pass decodes into, so whether
        // they can be made is the one list of the types it covers.
        Columns::new(payload.fields(), 0)?;
        Some(Self { payload, evolve })
    }

    /// The payload rows of `records`, one per record, or `Declined`.
    pub(crate) fn decode<'a>(
        &self,
        records: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<RecordBatch, Declined> {
        let mut root = Columns::new(self.payload.fields(), records.len()).ok_or(Declined)?;
        for record in records {
            let mut de = serde_json::Deserializer::from_str(record);
            RowSeed {
                columns: &mut root,
                evolve: self.evolve,
            }
            .deserialize(&mut de)
            .map_err(|_| Declined)?;
            de.end().map_err(|_| Declined)?;
        }
        let columns = root.finish().map_err(|_| Declined)?;
        RecordBatch::try_new(self.payload.clone(), columns).map_err(|_| Declined)
    }
}

/// One column being built, and whether its field may hold nulls.
struct Column {
    builder: Builder,
    nullable: bool,
}

enum Builder {
    Utf8(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder, Tz),
    List(Box<ListColumn>),
    Struct(Box<StructColumn>),
}

struct ListColumn {
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Column,
}

struct StructColumn {
    fields: Fields,
    columns: Columns,
    nulls: NullBufferBuilder,
}

/// The fields of an object, matched by name.
struct Columns {
    names: Vec<String>,
    columns: Vec<Column>,
    /// Which fields the object being read has set, to find duplicates and
    /// fields left out.
    seen: Vec<bool>,
}

impl Columns {
    fn new(fields: &Fields, rows: usize) -> Option<Self> {
        Some(Self {
            names: fields.iter().map(|f| f.name().clone()).collect(),
            columns: fields
                .iter()
                .map(|f| Column::new(f.data_type(), f.is_nullable(), rows))
                .collect::<Option<_>>()?,
            seen: vec![false; fields.len()],
        })
    }

    /// The field named `key`. Records mostly list fields in the schema's
    /// order, so the field after the last one found is tried first.
    fn find(&self, key: &str, after: usize) -> Option<usize> {
        if self.names.get(after).is_some_and(|n| n == key) {
            return Some(after);
        }
        self.names.iter().position(|n| n == key)
    }

    fn append_null(&mut self) {
        for column in &mut self.columns {
            column.append_null();
        }
    }

    fn finish(&mut self) -> Result<Vec<ArrayRef>, arrow_schema::ArrowError> {
        self.columns.iter_mut().map(Column::finish).collect()
    }

    /// Reads one object's fields into the columns.
    fn read<'de, A: MapAccess<'de>>(&mut self, mut map: A, evolve: bool) -> Result<(), A::Error> {
        self.seen.fill(false);
        let mut next = 0;
        while let Some(key) = map.next_key_seed(KeySeed {
            columns: self,
            after: next,
        })? {
            match key {
                Some(i) => {
                    if std::mem::replace(&mut self.seen[i], true) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    map.next_value_seed(ValueSeed {
                        column: &mut self.columns[i],
                        evolve,
                    })?;
                    next = i + 1;
                }
                None if evolve => return Err(de::Error::custom("field missing from the table")),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (column, seen) in self.columns.iter_mut().zip(&self.seen) {
            if !seen {
                if !column.nullable {
                    return Err(de::Error::custom("required field missing"));
                }
                column.append_null();
            }
        }
        Ok(())
    }
}

impl Column {
    fn new(data_type: &DataType, nullable: bool, rows: usize) -> Option<Self> {
        let builder = match data_type {
            DataType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            DataType::Int32 => Builder::Int32(Int32Builder::with_capacity(rows)),
            DataType::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            DataType::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                // As arrow-json reads a timestamp without a zone: in UTC.
                let zone = tz.as_deref().unwrap_or("+00:00").parse::<Tz>().ok()?;
                Builder::Timestamp(
                    TimestampMicrosecondBuilder::with_capacity(rows)
                        .with_data_type(data_type.clone()),
                    zone,
                )
            }
            DataType::List(item) => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Builder::List(Box::new(ListColumn {
                    item: item.clone(),
                    offsets,
                    nulls: NullBufferBuilder::new(rows),
                    values: Column::new(item.data_type(), item.is_nullable(), rows)?,
                }))
            }
            DataType::Struct(fields) => Builder::Struct(Box::new(StructColumn {
                fields: fields.clone(),
                columns: Columns::new(fields, rows)?,
                nulls: NullBufferBuilder::new(rows),
            })),
            _ => return None,
        };
        Some(Self { builder, nullable })
    }

    /// A null, also where the field allows none: below a null parent,
    /// as arrow-json fills it.
    fn append_null(&mut self) {
        match &mut self.builder {
            Builder::Utf8(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Boolean(b) => b.append_null(),
            Builder::Timestamp(b, _) => b.append_null(),
            Builder::List(list) => {
                let end = list.offsets.last().copied().unwrap_or_default();
                list.offsets.push(end);
                list.nulls.append_null();
            }
            Builder::Struct(s) => {
                s.nulls.append_null();
                s.columns.append_null();
            }
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, arrow_schema::ArrowError> {
        Ok(match &mut self.builder {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Timestamp(b, _) => Arc::new(b.finish()),
            Builder::List(list) => {
                let values = list.values.finish()?;
                let offsets = std::mem::replace(&mut list.offsets, vec![0]);
                Arc::new(ListArray::try_new(
                    list.item.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    list.nulls.finish(),
                )?)
            }
            Builder::Struct(s) => Arc::new(StructArray::try_new(
                s.fields.clone(),
                s.columns.finish()?,
                s.nulls.finish(),
            )?),
        })
    }
}

/// A record: its top-level object.
struct RowSeed<'c> {
    columns: &'c mut Columns,
    evolve: bool,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.columns.read(map, self.evolve)
    }
}

/// An object's key, as the index of its field (`None`: not in the schema).
struct KeySeed<'c> {
    columns: &'c Columns,
    after: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.columns.find(key, self.after))
    }
}

/// One value of a column.
struct ValueSeed<'c> {
    column: &'c mut Column,
    evolve: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value of the column's type")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if !self.column.nullable {
            return Err(E::custom("null in a required field"));
        }
        self.column.append_null();
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match &mut self.column.builder {
            Builder::Boolean(b) => b.append_value(v),
            _ => return Err(E::custom("a boolean")),
        }
        Ok(())
    }

    // Integers reach a double column exactly as arrow-json parses their
    // digits: the nearest double, which is what `as` rounds to.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match &mut self.column.builder {
            Builder::Int64(b) => b.append_value(v),
            Builder::Int32(b) => b.append_value(i32::try_from(v).map_err(E::custom)?),
            Builder::Float64(b) => b.append_value(v as f64),
            _ => return Err(E::custom("an integer")),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match &mut self.column.builder {
            Builder::Int64(b) => b.append_value(i64::try_from(v).map_err(E::custom)?),
            Builder::Int32(b) => b.append_value(i32::try_from(v).map_err(E::custom)?),
            Builder::Float64(b) => b.append_value(v as f64),
            _ => return Err(E::custom("an integer")),
        }
        Ok(())
    }

    // serde_json is built with `float_roundtrip`, so a decimal reads as the
    // nearest double, as arrow-json's parser reads it. A fraction or an
    // exponent in an integer column is left to arrow-json's own rules.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match &mut self.column.builder {
            Builder::Float64(b) => b.append_value(v),
            _ => return Err(E::custom("a number with a fraction or exponent")),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match &mut self.column.builder {
            Builder::Utf8(b) => b.append_value(v),
            Builder::Timestamp(b, zone) => {
                let at = string_to_datetime(zone, v).map_err(E::custom)?;
                b.append_value(at.timestamp_micros());
            }
            // arrow-json parses numbers and booleans in strings; its rules
            // decide those.
            _ => return Err(E::custom("a string")),
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Builder::List(list) = &mut self.column.builder else {
            return Err(de::Error::custom("an array"));
        };
        let mut items = 0i32;
        while seq
            .next_element_seed(ValueSeed {
                column: &mut list.values,
                evolve: self.evolve,
            })?
            .is_some()
        {
            items = items
                .checked_add(1)
                .ok_or_else(|| de::Error::custom("too many items"))?;
        }
        let end = list.offsets.last().copied().unwrap_or_default();
        list.offsets.push(
            end.checked_add(items)
                .ok_or_else(|| de::Error::custom("too many items"))?,
        );
        list.nulls.append_non_null();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Builder::Struct(s) = &mut self.column.builder else {
            return Err(de::Error::custom("an object"));
        };
        s.columns.read(map, self.evolve)?;
        s.nulls.append_non_null();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_json::ReaderBuilder;
    use arrow_schema::{Field, Schema};

    /// Every type the pass decodes, at every level, required and optional.
    fn schema() -> SchemaRef {
        let item = Arc::new(Field::new(
            "element",
            DataType::Struct(Fields::from(vec![
                Field::new("sku", DataType::Utf8, false),
                Field::new("qty", DataType::Int32, true),
                Field::new(
                    "tags",
                    DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
                    true,
                ),
            ])),
            true,
        ));
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n32", DataType::Int32, true),
            Field::new("n64", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new(
                "local",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("items", DataType::List(item), true),
            Field::new(
                "who",
                DataType::Struct(Fields::from(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("since", DataType::Int64, true),
                ])),
                true,
            ),
        ]))
    }

    /// What arrow-json makes of the records, the checked path's decoder.
    fn arrow_json(schema: &SchemaRef, records: &[&str], strict: bool) -> Option<RecordBatch> {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(records.len())
            .with_strict_mode(strict)
            .build_decoder()
            .unwrap();
        decoder.decode(records.join("\n").as_bytes()).ok()?;
        decoder.flush().ok()?
    }

    #[test]
    fn what_the_pass_takes_it_decodes_as_arrow_json_does() {
        let schema = schema();
        let records = [
            r#"{"id":"a"}"#,
            r#"{"id":"b","n32":-2147483648,"n64":9223372036854775807,"x":0.1,"ok":true}"#,
            r#"{"n64":-9223372036854775808,"x":-0.0,"ok":false,"id":"order changed"}"#,
            r#"{"id":"c","x":1e-400,"n32":0,"n64":0}"#,
            r#"{"id":"big integers as doubles","x":18446744073709551616}"#,
            r#"{"id":"d","x":9007199254740993}"#,
            r#"{"id":"e","x":2.2250738585072011e-308}"#,
            r#"{"id":"f","x":0.30000000000000004441}"#,
            r#"{"id":"g","x":1.7976931348623157e308,"n32":7}"#,
            r#"{"id":"\"escapes\"\n\t\\\/\b\f\r\u00e9\ud83d\ude00 é 😀"}"#,
            r#"{"id":"h","at":"2026-12-07T10:11:12.123456Z","local":"2026-12-07T10:11:12"}"#,
            r#"{"id":"i","at":"2026-12-07T10:11:12+02:00","local":"2026-12-07 10:11:12.5"}"#,
            r#"{"id":"j","at":"2026-12-07","local":null}"#,
            r#"{"id":"k","items":[],"who":null}"#,
            r#"{"id":"l","items":null,"who":{"name":"n"}}"#,
            r#"{"id":"m","items":[null,{"sku":"s","qty":3,"tags":["t","u"]},{"sku":"v","tags":null}]}"#,
            r#"{"id":"n","who":{"name":"n","since":5,"extra":[1,{"deep":[true]}]},"other":{"a":1}}"#,
            "  {\"id\" : \"whitespace\" ,\n \"n64\" : 1 }  ",
            r#"{"id":"o","unknown":"2026-12-07","\u0069d2":3}"#,
        ];
        let one_pass = OnePass::new(schema.clone(), false).unwrap();
        let ours = one_pass.decode(records.iter().copied()).unwrap();
        let theirs = arrow_json(&schema, &records, false).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.num_rows(), records.len());
        // Equal as arrays need not mean equal bits: -0.0 == 0.0.
        let bits = |b: &RecordBatch| {
            b.column(3)
                .as_any()
                .downcast_ref::<arrow_array::Float64Array>()
                .unwrap()
                .values()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&ours), bits(&theirs));

        // Evolving, the same records without unknown fields.
        let known: Vec<&str> = records[..15].to_vec();
        let strict = OnePass::new(schema.clone(), true).unwrap();
        assert_eq!(
            strict.decode(known.iter().copied()).unwrap(),
            arrow_json(&schema, &known, true).unwrap()
        );
    }

    #[test]
    fn what_the_pass_cannot_decode_exactly_it_declines() {
        let schema = schema();
        let one_pass = OnePass::new(schema.clone(), false).unwrap();
        let declined = [
            // Syntax the checked path refuses.
            r#"{"id":"a",}"#,
            r#"{"id":"a" "n64":1}"#,
            r#"{"id":"a","x":1.}"#,
            r#"{"id":"a"}{"id":"b"}"#,
            "{\"id\":\"a\u{1}\"}",
            r#"{"id":"\ud800"}"#,
            r#"["id"]"#,
            // Values arrow-json coerces or refuses by its own rules.
            r#"{"id":1}"#,
            r#"{"id":"a","n64":"12"}"#,
            r#"{"id":"a","n64":1.0}"#,
            r#"{"id":"a","n64":-0}"#,
            r#"{"id":"a","n64":1e3}"#,
            r#"{"id":"a","n64":9223372036854775808}"#,
            r#"{"id":"a","n32":2147483648}"#,
            r#"{"id":"a","x":"1.5"}"#,
            r#"{"id":"a","x":1e400}"#,
            r#"{"id":"a","ok":"true"}"#,
            r#"{"id":"a","at":"yesterday"}"#,
            r#"{"id":"a","at":1767225600000000}"#,
            r#"{"id":"a","items":{}}"#,
            r#"{"id":"a","who":[]}"#,
            // Nulls where the schema has none; a key twice.
            r#"{"n64":1}"#,
            r#"{"id":null}"#,
            r#"{"id":"a","who":{"since":1}}"#,
            r#"{"id":"a","items":[{"qty":1}]}"#,
            r#"{"id":"a","items":[{"sku":"s","tags":[null]}]}"#,
            r#"{"id":"a","id":"b"}"#,
        ];
        for record in declined {
            assert!(
                one_pass.decode(std::iter::once(record)).is_err(),
                "took {record}"
            );
        }
        // One declined record declines its whole chunk.
        assert!(
            one_pass
                .decode([r#"{"id":"a"}"#, r#"{"id":1}"#].into_iter())
                .is_err()
        );
        // Evolving, a field the table lacks is the checked path's to find.
        let strict = OnePass::new(schema, true).unwrap();
        assert!(
            strict
                .decode(std::iter::once(r#"{"id":"a","new":1}"#))
                .is_err()
        );
        assert!(
            strict
                .decode(std::iter::once(r#"{"id":"a","who":{"name":"n","new":1}}"#))
                .is_err()
        );
    }

    #[test]
    fn payloads_with_other_types_take_the_checked_path() {
        for data_type in [
            DataType::Float32,
            DataType::Date32,
            DataType::Binary,
            DataType::Decimal128(12, 2),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::List(Arc::new(Field::new("element", DataType::Float32, true))),
        ] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("v", data_type.clone(), true),
            ]));
            assert!(OnePass::new(schema, false).is_none(), "{data_type}");
        }
    }
}
