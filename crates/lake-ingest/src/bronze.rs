//! Bronze and dead-letter table definitions, their creation, and the Kafka
//! offsets each bronze snapshot records.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};
use lake_core::datasets::{Dataset, EventTime};
use lake_table::LakeCatalog;

use crate::error::{Error, Result};

/// Field ids of the metadata columns; far above payload ids so new payload
/// fields (schema evolution) never collide.
const META_ID: i32 = 1000;

pub const RAW: &str = "_raw";
pub const TOPIC: &str = "_kafka_topic";
pub const PARTITION: &str = "_kafka_partition";
pub const OFFSET: &str = "_kafka_offset";
pub const KAFKA_TIMESTAMP: &str = "_kafka_timestamp";
pub const INGESTED_AT: &str = "_ingested_at";
/// Event time derived from epoch-millisecond fields, for partitioning.
pub const EVENT_TIME: &str = "_event_time";
pub const ERROR: &str = "error";

/// Where one topic lands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dataset: Dataset,
    pub topic: String,
    pub table: TableIdent,
}

impl Route {
    /// The dataset's default topic and table.
    pub fn default_for(dataset: Dataset) -> Self {
        Self {
            dataset,
            topic: dataset.default_topic().to_string(),
            table: TableIdent::new(
                NamespaceIdent::new("bronze".into()),
                dataset.bronze_table().to_string(),
            ),
        }
    }

    /// `bronze.<table>_rejects`, beside the bronze table.
    pub fn rejects_table(&self) -> TableIdent {
        TableIdent::new(
            self.table.namespace().clone(),
            format!("{}_rejects", self.table.name()),
        )
    }

    /// The snapshot summary key holding this topic's offsets.
    pub fn offsets_key(&self) -> String {
        lake_table::files::offsets_key(&self.topic)
    }
}

/// Parses `namespace.table`.
pub fn parse_table(text: &str) -> Result<TableIdent> {
    let (namespace, name) = text
        .rsplit_once('.')
        .filter(|(n, t)| !n.is_empty() && !t.is_empty())
        .ok_or_else(|| Error::Invalid(format!("`{text}` is not namespace.table")))?;
    Ok(TableIdent::new(
        NamespaceIdent::from_strs(namespace.split('.'))?,
        name.to_string(),
    ))
}

fn metadata_fields(first_id: i32) -> Vec<iceberg::spec::NestedFieldRef> {
    use PrimitiveType::*;
    vec![
        NestedField::required(first_id, TOPIC, Type::Primitive(String)).into(),
        NestedField::required(first_id + 1, PARTITION, Type::Primitive(Int)).into(),
        NestedField::required(first_id + 2, OFFSET, Type::Primitive(Long)).into(),
        NestedField::optional(first_id + 3, KAFKA_TIMESTAMP, Type::Primitive(Timestamptz)).into(),
        NestedField::required(first_id + 4, INGESTED_AT, Type::Primitive(Timestamptz)).into(),
    ]
}

/// The bronze schema: the dataset's payload, the raw record, Kafka
/// coordinates, ingestion time (and a derived event time where the payload
/// carries epoch milliseconds).
pub fn bronze_schema(dataset: Dataset) -> Schema {
    let payload = dataset.payload_schema();
    let mut fields: Vec<_> = payload.as_struct().fields().to_vec();
    fields.push(NestedField::required(META_ID, RAW, Type::Primitive(PrimitiveType::String)).into());
    fields.extend(metadata_fields(META_ID + 1));
    if let EventTime::EpochMillis(_) = dataset.event_time() {
        fields.push(
            NestedField::required(
                META_ID + 10,
                EVENT_TIME,
                Type::Primitive(PrimitiveType::Timestamptz),
            )
            .into(),
        );
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .unwrap_or_else(|e| panic!("bronze schema for {}: {e}", dataset.name()))
}

/// Bronze columns whose values are (nearly) all distinct.
pub fn distinct_columns(dataset: Dataset) -> Vec<&'static str> {
    let mut columns = vec![RAW];
    if dataset == Dataset::Tweets {
        columns.extend(["tweet_id", "text"]);
    }
    columns
}

/// The column bronze is partitioned by (hourly).
pub fn event_time_column(dataset: Dataset) -> &'static str {
    match dataset.event_time() {
        EventTime::Timestamp(field) => field,
        EventTime::EpochMillis(_) => EVENT_TIME,
    }
}

/// Dead letters: the raw bytes, why they were refused, where they came from.
pub fn rejects_schema() -> Schema {
    let mut fields = vec![
        NestedField::required(1, RAW, Type::Primitive(PrimitiveType::Binary)).into(),
        NestedField::required(2, ERROR, Type::Primitive(PrimitiveType::String)).into(),
    ];
    fields.extend(metadata_fields(3));
    Schema::builder()
        .with_fields(fields)
        .build()
        .unwrap_or_else(|e| panic!("rejects schema: {e}"))
}

/// The bronze schema and its hourly partitioning by event time.
pub fn bronze_definition(dataset: Dataset) -> Result<(Schema, UnboundPartitionSpec)> {
    let schema = bronze_schema(dataset);
    let spec = lake_table::partition_by(&schema, event_time_column(dataset), Transform::Hour)?;
    Ok((schema, spec))
}

/// Loads or creates the bronze table of `route`.
pub async fn ensure_bronze(catalog: &LakeCatalog, route: &Route) -> Result<Table> {
    let (schema, spec) = bronze_definition(route.dataset)?;
    let properties = HashMap::from([
        ("lake.dataset".to_string(), route.dataset.name().to_string()),
        ("lake.layer".to_string(), "bronze".to_string()),
        ("lake.source.topic".to_string(), route.topic.clone()),
    ]);
    Ok(catalog
        .ensure_table(&route.table, schema, spec, properties)
        .await?)
}

/// Loads or creates the dead-letter table of `route`.
pub async fn ensure_rejects(catalog: &LakeCatalog, route: &Route) -> Result<Table> {
    let schema = rejects_schema();
    let spec = lake_table::partition_by(&schema, INGESTED_AT, Transform::Day)?;
    let properties = HashMap::from([
        ("lake.layer".to_string(), "bronze".to_string()),
        ("lake.rejects.of".to_string(), route.table.to_string()),
    ]);
    Ok(catalog
        .ensure_table(&route.rejects_table(), schema, spec, properties)
        .await?)
}

/// Next offset to read per partition, as recorded in the table.
pub type Offsets = BTreeMap<i32, i64>;

/// The offsets the newest snapshot along the table's history recorded for
/// `route`'s topic (empty when none has).
pub fn table_offsets(table: &Table, route: &Route) -> Result<Offsets> {
    match lake_table::files::summary_lookup(table, &route.offsets_key()) {
        None => Ok(Offsets::new()),
        Some((snapshot, json)) => parse_offsets(&json).map_err(|e| {
            Error::Invalid(format!(
                "{}: snapshot {snapshot} has unreadable {}: {e}",
                table.identifier(),
                route.offsets_key()
            ))
        }),
    }
}

pub fn parse_offsets(json: &str) -> std::result::Result<Offsets, String> {
    let map: BTreeMap<String, i64> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    map.into_iter()
        .map(|(p, o)| {
            p.parse::<i32>()
                .map(|p| (p, o))
                .map_err(|_| format!("partition `{p}` is not a number"))
        })
        .collect()
}

pub fn format_offsets(offsets: &Offsets) -> String {
    let map: BTreeMap<String, i64> = offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let offsets = Offsets::from([(0, 1234), (2, 7), (10, 0)]);
        let json = format_offsets(&offsets);
        assert_eq!(json, r#"{"0":1234,"10":0,"2":7}"#);
        assert_eq!(parse_offsets(&json).unwrap(), offsets);
        assert!(parse_offsets(r#"{"x":1}"#).is_err());
        assert!(parse_offsets("[1]").is_err());
    }

    #[test]
    fn schemas_carry_payload_then_metadata() {
        let tweets = bronze_schema(Dataset::Tweets);
        assert!(tweets.field_by_name("created_at").is_some());
        assert!(tweets.field_by_name(RAW).is_some());
        assert!(tweets.field_by_name(EVENT_TIME).is_none());
        let speed = bronze_schema(Dataset::Speedtest);
        assert!(speed.field_by_name(EVENT_TIME).is_some_and(|f| f.required));
        assert_eq!(event_time_column(Dataset::Speedtest), EVENT_TIME);
        assert!(rejects_schema().field_by_name(ERROR).is_some());
    }

    #[test]
    fn routes_and_table_names() {
        let route = Route::default_for(Dataset::Tweets);
        assert_eq!(route.table.to_string(), "bronze.tweets_raw");
        assert_eq!(
            route.rejects_table().to_string(),
            "bronze.tweets_raw_rejects"
        );
        assert_eq!(route.offsets_key(), "lake.kafka.tweets");
        assert_eq!(parse_table("bronze.x").unwrap().name(), "x");
        assert!(parse_table("nodot").is_err());
    }
}
