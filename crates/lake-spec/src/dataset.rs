//! `datasets/<name>/dataset.toml`: what a topic's records hold and how they
//! travel through bronze and silver. Every key is documented in
//! docs/datasets.md.

use std::collections::BTreeSet;
use std::time::Duration;

use iceberg::TableIdent;
use iceberg::spec::{NestedFieldRef, PrimitiveType, Schema, Type};
use lake_table::writer::codec_takes_level;
use serde::Deserialize;
use toml::Spanned;

use crate::types::{self, Column};
use crate::{Problem, Problems};

/// How the event time is written in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// An RFC 3339 string (a `timestamptz` or `timestamp` field).
    Rfc3339,
    /// Milliseconds since the epoch (a `long` field).
    EpochMillis,
    /// Seconds since the epoch (a `long` field).
    EpochSeconds,
}

impl TimeFormat {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "rfc3339" => Some(Self::Rfc3339),
            "epoch_ms" => Some(Self::EpochMillis),
            "epoch_s" => Some(Self::EpochSeconds),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfc3339 => "rfc3339",
            Self::EpochMillis => "epoch_ms",
            Self::EpochSeconds => "epoch_s",
        }
    }
}

/// The field holding a record's event time, and its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTime {
    pub field: String,
    pub format: TimeFormat,
}

/// The time granularity of a partitioning (bronze) or a gold model's grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
}

/// What silver does with a row that breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The row goes to the quarantine table, naming the rule.
    Quarantine,
    /// The row is discarded and counted.
    Drop,
    /// The row stays in silver; the breach is counted and logged.
    Warn,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quarantine => "quarantine",
            Self::Drop => "drop",
            Self::Warn => "warn",
        }
    }
}

/// How silver protects a column holding personal data (`[silver.pii]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// HMAC-SHA256 of the value (as text) under the key in `LAKE_PII_KEY`,
    /// as 64 hex digits: equal values stay equal, so joins and distinct
    /// counts still work, and nobody without the key can reverse it.
    Hash,
    /// Text becomes `<redacted>`, any other type NULL; NULL stays NULL.
    Redact,
    /// The column is not written to silver at all.
    Drop,
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Redact => "redact",
            Self::Drop => "drop",
        }
    }
}

/// A quality rule: a SQL condition on silver's columns that a good row
/// meets. As a SQL CHECK constraint, a row breaks it only when the
/// condition is false (NULL passes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub check: String,
    pub action: Action,
}

/// How a table is kept: the table properties a dataset declares for it,
/// set on the table when it is made and whenever the declaration changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// `lake.retention`: how long partitions stay (`30d`, `none`); the
    /// layer's default when `None`.
    pub retention: Option<String>,
    /// `write.target-file-size-bytes`: the size compaction merges files to;
    /// `lake compact`'s default when `None`.
    pub target_file_size: Option<u64>,
    /// `write.parquet.compression-codec`: the codec every lake writer of
    /// the table compresses with (Iceberg's names, lower case); zstd when
    /// `None`.
    pub compression: Option<String>,
    /// `write.parquet.compression-level`: the codec's level; the codec's
    /// default (zstd: 1) when `None`.
    pub compression_level: Option<i32>,
}

/// The table property holding a table's retention.
pub const RETENTION_PROPERTY: &str = "lake.retention";
/// Iceberg's table property for the size data files aim at.
pub const TARGET_FILE_SIZE_PROPERTY: &str =
    iceberg::spec::TableProperties::PROPERTY_WRITE_TARGET_FILE_SIZE_BYTES;
pub use lake_table::writer::{COMPRESSION_CODEC_PROPERTY, COMPRESSION_LEVEL_PROPERTY};

impl Upkeep {
    /// Each property a dataset owns on its tables, with the value it wants
    /// (`None`: the property is not set).
    pub fn properties(&self) -> [(&'static str, Option<String>); 4] {
        [
            (RETENTION_PROPERTY, self.retention.clone()),
            (
                TARGET_FILE_SIZE_PROPERTY,
                self.target_file_size.map(|b| b.to_string()),
            ),
            (COMPRESSION_CODEC_PROPERTY, self.compression.clone()),
            (
                COMPRESSION_LEVEL_PROPERTY,
                self.compression_level.map(|l| l.to_string()),
            ),
        ]
    }
}

/// Where records land raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BronzeSpec {
    pub table: TableIdent,
    /// Partitioned by the Kafka record timestamp at this granularity.
    pub partition: Granularity,
    /// Columns whose values are (nearly) all distinct: written without a
    /// dictionary or min/max statistics.
    pub distinct: Vec<String>,
    /// Whether a new bronze table keeps each record as it came, in `_raw`.
    /// Without it bronze holds the parsed payload and the Kafka coordinates
    /// only: on tweets 61 % smaller files and a third less ingest work, but
    /// a record can no longer be read back byte for byte from the lake.
    pub raw: bool,
    pub upkeep: Upkeep,
}

/// The silver model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SilverSpec {
    pub table: TableIdent,
    pub quarantine: TableIdent,
    /// Silver's event time; the table is partitioned by its day.
    pub time_column: String,
    /// The columns that identify a row across the whole table.
    pub key: Vec<String>,
    /// How far apart in event time a new row and an existing row with its
    /// key may be for the new one to be recognised as a duplicate: a run
    /// reads the existing keys only of files whose time range comes within
    /// this of a day the new rows fall in. `None`: every existing key.
    pub dedup_horizon: Option<Duration>,
    pub distinct: Vec<String>,
    /// Of the silver table and its quarantine.
    pub upkeep: Upkeep,
    pub rules: Vec<Rule>,
    /// Columns of silver.sql's result protected before anything else sees
    /// them (deduplication, rules, the tables, gold), in declared order.
    pub pii: Vec<(String, Protection)>,
    /// `silver.sql`.
    pub sql: String,
    /// Where `silver.sql` is, for messages.
    pub file: String,
}

/// One gold model (`gold/<name>.sql`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldSpec {
    pub table: TableIdent,
    /// The gold table's time column; the table is partitioned by it at
    /// `grain` and rebuilt per hour or day.
    pub time_column: String,
    pub grain: Granularity,
    pub upkeep: Upkeep,
    pub sql: String,
    pub file: String,
}

/// A dataset: one topic through bronze, silver and gold.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSpec {
    pub name: String,
    pub description: Option<String>,
    pub topic: String,
    /// The payload fields that identify a record (dotted paths into
    /// structs); `lake generate --from` keys messages with them.
    pub key: Vec<String>,
    /// The built-in generator that writes this dataset's records, if any.
    pub generator: Option<String>,
    pub event_time: EventTime,
    /// The payload: one JSON object per record.
    pub schema: Schema,
    pub bronze: BronzeSpec,
    pub silver: SilverSpec,
    pub gold: Vec<GoldSpec>,
    /// Where `dataset.toml` is (a path, or `built-in <name>`), for messages.
    pub file: String,
}

impl DatasetSpec {
    /// Every table the dataset writes, with what writes it.
    pub fn tables(&self) -> Vec<(&TableIdent, String)> {
        let mut tables = vec![
            (&self.bronze.table, "its bronze table".to_string()),
            (&self.silver.table, "its silver table".to_string()),
            (&self.silver.quarantine, "its quarantine".to_string()),
        ];
        for gold in &self.gold {
            tables.push((&gold.table, format!("the gold model {}", gold.file)));
        }
        tables
    }

    /// The bronze table's schema: the payload, the raw record (unless
    /// `[bronze] raw = false`), the Kafka coordinates and ingestion time, and
    /// `_event_time` where the payload holds epoch seconds or milliseconds
    /// (see [`crate::columns`]).
    pub fn bronze_schema(&self) -> Result<Schema, String> {
        use crate::columns::*;
        let id = crate::columns::FIRST_ID;
        let column = |offset: i32, name: &str, kind: PrimitiveType, required: bool| {
            let field = if required {
                iceberg::spec::NestedField::required(id + offset, name, Type::Primitive(kind))
            } else {
                iceberg::spec::NestedField::optional(id + offset, name, Type::Primitive(kind))
            };
            NestedFieldRef::from(field)
        };
        let mut fields: Vec<NestedFieldRef> = self.schema.as_struct().fields().to_vec();
        if self.bronze.raw {
            fields.push(column(0, RAW, PrimitiveType::String, true));
        }
        fields.extend([
            column(1, TOPIC, PrimitiveType::String, true),
            column(2, PARTITION, PrimitiveType::Int, true),
            column(3, OFFSET, PrimitiveType::Long, true),
            column(4, KAFKA_TIMESTAMP, PrimitiveType::Timestamptz, false),
            column(5, INGESTED_AT, PrimitiveType::Timestamptz, true),
        ]);
        if self.event_time.format != TimeFormat::Rfc3339 {
            fields.push(column(10, EVENT_TIME, PrimitiveType::Timestamptz, true));
        }
        Schema::builder().with_fields(fields).build().map_err(|e| {
            format!(
                "{}: the payload schema leaves no room for lake's columns (field ids from {id} \
                 on are lake's): {e}",
                self.file
            )
        })
    }

    /// The bronze column of the event time: the field itself, or
    /// `_event_time` derived from epoch seconds or milliseconds.
    pub fn bronze_time_column(&self) -> &str {
        match self.event_time.format {
            TimeFormat::Rfc3339 => &self.event_time.field,
            TimeFormat::EpochMillis | TimeFormat::EpochSeconds => crate::columns::EVENT_TIME,
        }
    }

    /// `bronze.<table>_rejects`, beside the bronze table.
    pub fn rejects_table(&self) -> TableIdent {
        TableIdent::new(
            self.bronze.table.namespace().clone(),
            format!("{}_rejects", self.bronze.table.name()),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    description: Option<String>,
    topic: Option<String>,
    key: Spanned<Vec<Spanned<String>>>,
    generator: Option<String>,
    event_time: RawEventTime,
    schema: Spanned<OrderedStrings>,
    #[serde(default)]
    bronze: RawBronze,
    #[serde(default)]
    silver: RawSilver,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventTime {
    field: Spanned<String>,
    format: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBronze {
    table: Option<Spanned<String>>,
    partition: Option<Spanned<String>>,
    #[serde(default)]
    distinct: Vec<Spanned<String>>,
    raw: Option<bool>,
    retention: Option<Spanned<String>>,
    target_file_size: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    compression_level: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilver {
    table: Option<Spanned<String>>,
    quarantine: Option<Spanned<String>>,
    time_column: Option<Spanned<String>>,
    key: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    distinct: Vec<String>,
    retention: Option<Spanned<String>>,
    target_file_size: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    compression_level: Option<Spanned<i64>>,
    dedup_horizon: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<RawRule>,
    pii: Option<OrderedStrings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    check: Spanned<String>,
    action: Option<Spanned<String>>,
}

/// A TOML table of strings, in the order written (the schema's columns).
struct OrderedStrings(Vec<(String, Spanned<String>)>);

impl<'de> Deserialize<'de> for OrderedStrings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedStrings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of `column = \"type\"` entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedStrings, A::Error> {
                let mut entries = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Spanned<String>>()? {
                    entries.push((name, value));
                }
                Ok(OrderedStrings(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Reads one `dataset.toml`; `sql` is its `silver.sql`, `gold` its gold
/// models. Every problem found is reported, each with its file and line.
pub(crate) fn parse(
    name: &str,
    file: &str,
    text: &str,
    silver_sql: Option<(String, String)>,
    gold: Vec<GoldSpec>,
) -> Result<DatasetSpec, Problems> {
    let mut problems = Problems::default();
    let line_of = |span: std::ops::Range<usize>| -> usize {
        text[..span.start.min(text.len())].matches('\n').count() + 1
    };
    let raw: RawDataset = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map(&line_of);
            problems.push(Problem::new(file, line, e.message().trim().to_string()));
            return Err(problems);
        }
    };
    let at = |problems: &mut Problems, span: std::ops::Range<usize>, message: String| {
        problems.push(Problem::new(file, Some(line_of(span)), message));
    };

    // The payload schema.
    let mut columns: Vec<(String, Column)> = Vec::new();
    for (column, spelled) in &raw.schema.get_ref().0 {
        match types::parse(spelled.get_ref()) {
            Ok(parsed) => columns.push((column.clone(), parsed)),
            Err(e) => at(
                &mut problems,
                spelled.span(),
                format!("[schema] {column} = \"{}\": {e}", spelled.get_ref()),
            ),
        }
    }
    if columns.is_empty() && problems.is_empty() {
        at(
            &mut problems,
            raw.schema.span(),
            "[schema] declares no column".into(),
        );
    }
    let fields = types::build_fields(&columns);
    let schema = match Schema::builder().with_fields(fields.clone()).build() {
        Ok(schema) => Some(schema),
        Err(e) => {
            at(&mut problems, raw.schema.span(), format!("[schema]: {e}"));
            None
        }
    };

    // Key and event time name payload fields.
    if raw.key.get_ref().is_empty() {
        at(
            &mut problems,
            raw.key.span(),
            "key names no field: list the fields that identify a record".into(),
        );
    }
    for key in raw.key.get_ref() {
        if !fields.is_empty() && find(&fields, key.get_ref()).is_none() {
            at(
                &mut problems,
                key.span(),
                format!("key field `{}` is not in [schema]", key.get_ref()),
            );
        }
    }
    let format = match &raw.event_time.format {
        None => Some(TimeFormat::Rfc3339),
        Some(spelled) => {
            let format = TimeFormat::parse(spelled.get_ref());
            if format.is_none() {
                at(
                    &mut problems,
                    spelled.span(),
                    format!(
                        "event_time.format = \"{}\": rfc3339, epoch_ms or epoch_s",
                        spelled.get_ref()
                    ),
                );
            }
            format
        }
    };
    let time_field = raw.event_time.field.get_ref().clone();
    if let Some(format) = format
        && !fields.is_empty()
    {
        match fields.iter().find(|f| f.name == time_field) {
            None => at(
                &mut problems,
                raw.event_time.field.span(),
                format!("event_time.field `{time_field}` is not a top-level column of [schema]"),
            ),
            Some(field) => {
                let fits = matches!(
                    (format, field.field_type.as_ref()),
                    (
                        TimeFormat::Rfc3339,
                        Type::Primitive(PrimitiveType::Timestamptz | PrimitiveType::Timestamp),
                    ) | (
                        TimeFormat::EpochMillis | TimeFormat::EpochSeconds,
                        Type::Primitive(PrimitiveType::Long | PrimitiveType::Int),
                    )
                );
                if !fits {
                    at(
                        &mut problems,
                        raw.event_time.field.span(),
                        format!(
                            "event_time `{time_field}` is {} in [schema]; format {} needs {}",
                            types::describe(&field.field_type),
                            format.as_str(),
                            match format {
                                TimeFormat::Rfc3339 => "timestamptz (or timestamp)",
                                _ => "long",
                            }
                        ),
                    );
                }
                if !field.required {
                    at(
                        &mut problems,
                        raw.event_time.field.span(),
                        format!(
                            "event_time `{time_field}` must be `not null` in [schema]: a record \
                             without it cannot be placed in time"
                        ),
                    );
                }
            }
        }
    }

    // Tables.
    let mut table = |spelled: &Option<Spanned<String>>, default: String, what: &str| {
        let (text, span) = match spelled {
            Some(s) => (s.get_ref().clone(), Some(s.span())),
            None => (default, None),
        };
        match table_ident(&text) {
            Ok(ident) => Some(ident),
            Err(message) => {
                problems.push(Problem::new(
                    file,
                    span.map(&line_of),
                    format!("{what} `{text}`: {message}"),
                ));
                None
            }
        }
    };
    let bronze_table = table(
        &raw.bronze.table,
        format!("bronze.{name}_raw"),
        "bronze.table",
    );
    let silver_table = table(
        &raw.silver.table,
        format!("silver.{name}_clean"),
        "silver.table",
    );
    let quarantine = table(
        &raw.silver.quarantine,
        format!("silver.{name}_quarantine"),
        "silver.quarantine",
    );

    let partition = match &raw.bronze.partition {
        None => Some(Granularity::Hour),
        Some(spelled) => {
            let parsed = Granularity::parse(spelled.get_ref());
            if parsed.is_none() {
                at(
                    &mut problems,
                    spelled.span(),
                    format!("bronze.partition = \"{}\": hour or day", spelled.get_ref()),
                );
            }
            parsed
        }
    };
    for column in &raw.bronze.distinct {
        if !fields.is_empty() && !fields.iter().any(|f| f.name == *column.get_ref()) {
            at(
                &mut problems,
                column.span(),
                format!(
                    "bronze.distinct names `{}`, not a top-level column of [schema]",
                    column.get_ref()
                ),
            );
        }
    }
    for retention in [&raw.bronze.retention, &raw.silver.retention]
        .into_iter()
        .flatten()
    {
        if let Err(message) = check_retention(retention.get_ref()) {
            at(&mut problems, retention.span(), message);
        }
    }
    let mut sizes = [None, None];
    for (size, parsed) in [&raw.bronze.target_file_size, &raw.silver.target_file_size]
        .into_iter()
        .zip(&mut sizes)
    {
        if let Some(size) = size {
            match parse_file_size(size.get_ref()) {
                Ok(bytes) => *parsed = Some(bytes),
                Err(message) => at(&mut problems, size.span(), message),
            }
        }
    }
    let [bronze_size, silver_size] = sizes;
    let mut codecs = [(None, None), (None, None)];
    for ((codec, level), checked) in [
        (&raw.bronze.compression, &raw.bronze.compression_level),
        (&raw.silver.compression, &raw.silver.compression_level),
    ]
    .into_iter()
    .zip(&mut codecs)
    {
        let spelled = codec.as_ref().map(|c| c.get_ref().as_str());
        match check_compression(spelled, level.as_ref().map(|l| *l.get_ref())) {
            Ok(valid) => *checked = valid,
            Err((wrong, message)) => {
                let span = match (wrong, codec, level) {
                    (CodecKey::Level, _, Some(level)) => level.span(),
                    (_, Some(codec), _) => codec.span(),
                    (_, None, level) => level.as_ref().map_or(0..0, |l| l.span()),
                };
                at(&mut problems, span, message);
            }
        }
    }
    let [bronze_codec, silver_codec] = codecs;
    let dedup_horizon = match &raw.silver.dedup_horizon {
        None => Some(DEFAULT_DEDUP_HORIZON),
        Some(text) => match parse_horizon(text.get_ref()) {
            Ok(horizon) => horizon,
            Err(message) => {
                at(&mut problems, text.span(), message);
                None
            }
        },
    };

    // Personal data.
    let silver_key: Vec<String> = raw
        .silver
        .key
        .as_ref()
        .map(|keys| keys.iter().map(|k| k.get_ref().clone()).collect())
        .unwrap_or_else(|| {
            raw.key
                .get_ref()
                .iter()
                .map(|k| k.get_ref().clone())
                .collect()
        });
    let mut pii = Vec::new();
    for (column, spelled) in raw.silver.pii.as_ref().map_or(&[][..], |p| &p.0[..]) {
        let protection = match spelled.get_ref().as_str() {
            "hash" => Protection::Hash,
            "redact" => Protection::Redact,
            "drop" => Protection::Drop,
            other => {
                at(
                    &mut problems,
                    spelled.span(),
                    format!("pii `{column}`: `{other}` is hash, redact or drop"),
                );
                continue;
            }
        };
        let needed = silver_key.contains(column)
            || raw.silver.time_column.as_ref().map(|t| t.get_ref()) == Some(column)
            || (raw.silver.time_column.is_none() && *column == time_field)
            || ["_kafka_partition", "_kafka_offset"].contains(&column.as_str());
        if needed {
            at(
                &mut problems,
                spelled.span(),
                format!(
                    "pii `{column}`: silver's key, time column and Kafka coordinates cannot be \
                     protected (deduplication and partitioning need their values); protect a \
                     copy under another name instead"
                ),
            );
            continue;
        }
        pii.push((column.clone(), protection));
    }

    // Rules.
    let mut rules = Vec::new();
    let mut names = BTreeSet::new();
    for rule in &raw.silver.rules {
        let name = rule.name.get_ref().trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            at(
                &mut problems,
                rule.name.span(),
                format!("rule name `{name}`: letters, digits and `_` only"),
            );
        } else if !names.insert(name.clone()) {
            at(
                &mut problems,
                rule.name.span(),
                format!("rule `{name}` is declared twice"),
            );
        }
        if rule.check.get_ref().trim().is_empty() {
            at(
                &mut problems,
                rule.check.span(),
                format!("rule `{name}` has an empty check"),
            );
        }
        let action = match &rule.action {
            None => Some(Action::Quarantine),
            Some(spelled) => match spelled.get_ref().as_str() {
                "quarantine" => Some(Action::Quarantine),
                "drop" => Some(Action::Drop),
                "warn" => Some(Action::Warn),
                other => {
                    at(
                        &mut problems,
                        spelled.span(),
                        format!("rule `{name}`: action `{other}` is quarantine, drop or warn"),
                    );
                    None
                }
            },
        };
        if let Some(action) = action {
            rules.push(Rule {
                name,
                check: rule.check.get_ref().trim().to_string(),
                action,
            });
        }
    }

    let Some((silver_file, silver_sql)) = silver_sql else {
        problems.push(Problem::new(
            &file.replace("dataset.toml", "silver.sql"),
            None,
            "missing: the silver model (SELECT … FROM bronze)".into(),
        ));
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let (
        Some(schema),
        Some(format),
        Some(partition),
        Some(bronze_table),
        Some(silver_table),
        Some(quarantine),
    ) = (
        schema,
        format,
        partition,
        bronze_table,
        silver_table,
        quarantine,
    )
    else {
        return Err(problems);
    };
    let key: Vec<String> = raw
        .key
        .get_ref()
        .iter()
        .map(|k| k.get_ref().clone())
        .collect();
    Ok(DatasetSpec {
        name: name.to_string(),
        description: raw.description,
        topic: raw.topic.unwrap_or_else(|| name.to_string()),
        generator: raw.generator,
        event_time: EventTime {
            field: time_field.clone(),
            format,
        },
        schema,
        bronze: BronzeSpec {
            table: bronze_table,
            partition,
            distinct: raw
                .bronze
                .distinct
                .iter()
                .map(|d| d.get_ref().clone())
                .collect(),
            raw: raw.bronze.raw.unwrap_or(true),
            upkeep: Upkeep {
                retention: raw.bronze.retention.map(|r| r.into_inner()),
                target_file_size: bronze_size,
                compression: bronze_codec.0,
                compression_level: bronze_codec.1,
            },
        },
        silver: SilverSpec {
            table: silver_table,
            quarantine,
            time_column: raw
                .silver
                .time_column
                .map(|t| t.into_inner())
                .unwrap_or(time_field),
            key: raw
                .silver
                .key
                .map(|keys| keys.into_iter().map(|k| k.into_inner()).collect())
                .unwrap_or_else(|| key.clone()),
            dedup_horizon,
            distinct: raw.silver.distinct,
            upkeep: Upkeep {
                retention: raw.silver.retention.map(|r| r.into_inner()),
                target_file_size: silver_size,
                compression: silver_codec.0,
                compression_level: silver_codec.1,
            },
            rules,
            pii,
            sql: silver_sql,
            file: silver_file,
        },
        key,
        gold,
        file: file.to_string(),
    })
}

/// The field at a dotted `path` (through structs).
pub fn find<'a>(fields: &'a [NestedFieldRef], path: &str) -> Option<&'a NestedFieldRef> {
    let mut fields = fields;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = fields.iter().find(|f| f.name == part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        match field.field_type.as_ref() {
            Type::Struct(inner) => fields = inner.fields(),
            _ => return None,
        }
    }
    None
}

/// `namespace.table`.
pub(crate) fn table_ident(text: &str) -> Result<TableIdent, String> {
    let (namespace, name) = text
        .rsplit_once('.')
        .filter(|(n, t)| !n.is_empty() && !t.is_empty())
        .ok_or_else(|| "not namespace.table".to_string())?;
    let valid = |part: &str| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !namespace.split('.').all(valid) || !valid(name) {
        return Err("use letters, digits and `_` in namespace and table names".into());
    }
    TableIdent::from_strs(namespace.split('.').chain([name])).map_err(|e| e.to_string())
}

/// A file size such as `128MB` or `64MiB`: at least 1 MB, as smaller
/// targets make the small files compaction exists to merge.
pub(crate) fn parse_file_size(text: &str) -> Result<u64, String> {
    let bytes = text
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("target_file_size `{text}` is not a size (128MB, 64MiB): {e}"))?
        .as_u64();
    if bytes < 1_000_000 {
        return Err(format!(
            "target_file_size `{text}` is under 1 MB: files that small are what compaction merges"
        ));
    }
    Ok(bytes)
}

/// Silver's dedup horizon when a dataset declares none: a re-sent record
/// carries its original event time, so it falls within any horizon; a day
/// also covers a key re-used with a nearby time.
pub const DEFAULT_DEDUP_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// A dedup horizon: `all` (every existing key, `None`), or a duration such
/// as `1d` or `0s`.
pub(crate) fn parse_horizon(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| format!("dedup_horizon `{text}` is not a duration (1d, 0s) or `all`: {e}"))
}

/// A declared `compression` and `compression_level`, checked as lake's
/// writers will read them from the table: the codec's name as a table
/// property holds it (lower case) and the level. A level on its own is
/// zstd's, the codec the writers use when none is named.
/// The problem comes with the key it is about.
pub(crate) fn check_compression(
    codec: Option<&str>,
    level: Option<i64>,
) -> Result<(Option<String>, Option<i32>), (CodecKey, String)> {
    let level = level
        .map(|l| {
            i32::try_from(l).map_err(|_| {
                let message = format!("compression_level {l} is out of range");
                (CodecKey::Level, message)
            })
        })
        .transpose()?;
    let named = codec.unwrap_or("zstd");
    lake_table::writer::compression_of(named, level).map_err(|message| {
        // Past an unknown codec, whatever is wrong is the level.
        let (wrong, key) = match codec_takes_level(named) {
            None => (CodecKey::Codec, "compression"),
            Some(_) => (CodecKey::Level, "compression_level"),
        };
        (wrong, format!("{key}: {message}"))
    })?;
    Ok((codec.map(|c| c.trim().to_ascii_lowercase()), level))
}

/// Which of a declaration's `compression` and `compression_level` a
/// problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodecKey {
    Codec,
    Level,
}

/// A retention: `none`, or a duration such as `30d` or `12h`.
pub(crate) fn check_retention(text: &str) -> Result<(), String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(());
    }
    humantime::parse_duration(text.trim())
        .map(|_| ())
        .map_err(|e| format!("retention `{text}` is not a duration (30d, 12h) or `none`: {e}"))
}
