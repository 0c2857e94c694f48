//! Bronze and dead-letter table definitions, their creation, and the Kafka
//! offsets each bronze snapshot records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};
use lake_spec::{DatasetSpec, Granularity};
use lake_table::LakeCatalog;

use crate::error::{Error, Result};

pub use lake_spec::columns::{
    EVENT_TIME, INGESTED_AT, KAFKA_TIMESTAMP, OFFSET, PARTITION, RAW, TOPIC,
};
/// The dead-letter table's reason column.
pub const ERROR: &str = "error";

/// Where one topic lands.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub dataset: Arc<DatasetSpec>,
    pub topic: String,
    pub table: TableIdent,
}

impl Route {
    /// The dataset's own topic and bronze table.
    pub fn for_dataset(dataset: &Arc<DatasetSpec>) -> Self {
        Self {
            topic: dataset.topic.clone(),
            table: dataset.bronze.table.clone(),
            dataset: dataset.clone(),
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

/// The routes of `datasets` (every dataset of the pipeline when empty): each
/// from its topic to its bronze table, unless `topics` or `tables` (pairs of
/// dataset and topic or `namespace.table`) say otherwise. Two routes may not
/// read one topic.
pub fn routes(
    pipeline: &lake_spec::Pipeline,
    datasets: &[String],
    topics: &[(String, String)],
    tables: &[(String, String)],
) -> Result<Vec<Route>> {
    let mut routes: Vec<Route> = pipeline
        .select(datasets)?
        .iter()
        .map(Route::for_dataset)
        .collect();
    let find = |dataset: &str, flag: &str| -> Result<usize> {
        pipeline.dataset(dataset)?;
        routes
            .iter()
            .position(|r| r.dataset.name == dataset)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{flag} names {dataset}, which is not being ingested"
                ))
            })
    };
    let mut topic_of = Vec::new();
    for (dataset, topic) in topics {
        topic_of.push((find(dataset, "--topic")?, topic.clone()));
    }
    let mut table_of = Vec::new();
    for (dataset, table) in tables {
        table_of.push((find(dataset, "--table")?, parse_table(table)?));
    }
    for (index, topic) in topic_of {
        routes[index].topic = topic;
    }
    for (index, table) in table_of {
        routes[index].table = table;
    }
    let mut seen: Vec<&str> = Vec::new();
    for route in &routes {
        if seen.contains(&route.topic.as_str()) {
            return Err(Error::Invalid(format!(
                "two datasets read topic `{}`; give each its own with --topic",
                route.topic
            )));
        }
        seen.push(&route.topic);
    }
    Ok(routes)
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

/// The bronze schema (see [`DatasetSpec::bronze_schema`]).
pub fn bronze_schema(dataset: &DatasetSpec) -> Result<Schema> {
    dataset.bronze_schema().map_err(Error::Dataset)
}

/// Bronze columns whose values are (nearly) all distinct: the raw record
/// and the dataset's `[bronze] distinct`.
pub fn distinct_columns(dataset: &DatasetSpec) -> Vec<String> {
    std::iter::once(RAW.to_string())
        .chain(dataset.bronze.distinct.iter().cloned())
        .collect()
}

/// The column of the payload's event time (a column, with min/max in each
/// file's statistics, not the partitioning).
pub fn event_time_column(dataset: &DatasetSpec) -> &str {
    dataset.bronze_time_column()
}

/// The column bronze is partitioned by: the Kafka record timestamp. The
/// producer's client (or, with `message.timestamp.type=LogAppendTime`, the
/// broker) sets it from a clock that moves forward, so an epoch of ingest
/// writes to one or two partitions whatever times the payloads claim; a
/// payload's event time can be anything a broken client sends.
pub const PARTITION_COLUMN: &str = KAFKA_TIMESTAMP;

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

/// `schema` with `_raw` optional: what a table made without it can gain.
fn optional_raw(schema: &Schema) -> Result<Schema> {
    let fields = schema.as_struct().fields().iter().map(|f| {
        if f.name == RAW {
            Arc::new(NestedField::optional(f.id, RAW, (*f.field_type).clone()))
        } else {
            f.clone()
        }
    });
    Ok(Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .build()?)
}

/// The bronze schema and its partitioning by the hour or day of the Kafka
/// record timestamp.
pub fn bronze_definition(dataset: &DatasetSpec) -> Result<(Schema, UnboundPartitionSpec)> {
    let schema = bronze_schema(dataset)?;
    let spec = bronze_partitioning(dataset, &schema)?;
    Ok((schema, spec))
}

/// Bronze's partitioning over `schema` (a table's own schema: catalogs may
/// number its columns anew on creation).
pub fn bronze_partitioning(dataset: &DatasetSpec, schema: &Schema) -> Result<UnboundPartitionSpec> {
    let transform = match dataset.bronze.partition {
        Granularity::Hour => Transform::Hour,
        Granularity::Day => Transform::Day,
    };
    Ok(lake_table::partition_by(
        schema,
        PARTITION_COLUMN,
        transform,
    )?)
}

/// Loads or creates the bronze table of `route`.
pub async fn ensure_bronze(catalog: &LakeCatalog, route: &Route) -> Result<Table> {
    let (schema, spec) = bronze_definition(&route.dataset)?;
    let mut properties = HashMap::from([
        ("lake.dataset".to_string(), route.dataset.name.clone()),
        ("lake.layer".to_string(), "bronze".to_string()),
        ("lake.source.topic".to_string(), route.topic.clone()),
    ]);
    let mut upkeep = route.dataset.bronze.upkeep.properties().to_vec();
    upkeep.push(lake_table::writer::distinct_property(&distinct_columns(
        &route.dataset,
    )));
    properties.extend(
        upkeep
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.clone()?))),
    );
    let table = catalog
        .ensure_table(&route.table, schema.clone(), spec, properties)
        .await?;
    // A table made from an earlier declaration follows the current one.
    // `_raw` follows the table: one that has it keeps getting it (a
    // required column cannot be left empty; dropping it is the owner's
    // call), one made with `raw = false` gains it as an optional column
    // (its older rows have none) once the declaration keeps raw records.
    let has_raw = table
        .metadata()
        .current_schema()
        .field_by_name(RAW)
        .is_some();
    let gains_raw = route.dataset.bronze.raw && !has_raw;
    if has_raw && !route.dataset.bronze.raw {
        tracing::info!(
            table = %route.table,
            "the table keeps `_raw` although {} says `raw = false`: it has the column; \
             drop it (ALTER TABLE … DROP COLUMN _raw) to stop writing it",
            route.dataset.file
        );
    }
    let lake_columns = [
        RAW,
        TOPIC,
        PARTITION,
        OFFSET,
        KAFKA_TIMESTAMP,
        INGESTED_AT,
        EVENT_TIME,
    ];
    // Gaining `_raw`, the table is compared on it like a payload column.
    let lake_columns = if gains_raw {
        &lake_columns[1..]
    } else {
        &lake_columns[..]
    };
    let wanted = if gains_raw {
        optional_raw(&schema)?
    } else {
        schema.clone()
    };
    let table = lake_table::evolve::follow(
        catalog,
        table,
        &wanted,
        lake_columns,
        lake_table::evolve::Changes::Refuse,
        &route.dataset.file,
    )
    .await?;
    // Tables made when bronze was partitioned by event time move to the
    // Kafka timestamp; their existing files keep the old layout.
    let spec = bronze_partitioning(&route.dataset, table.metadata().current_schema())?;
    let table =
        lake_table::evolve::follow_partitioning(catalog, table, &spec, &route.dataset.file).await?;
    Ok(lake_table::evolve::follow_properties(catalog, table, &upkeep, &route.dataset.file).await?)
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
        Some((snapshot, json)) => parse_offsets(&json).map_err(|source| Error::Offsets {
            table: table.identifier().to_string(),
            snapshot,
            key: route.offsets_key(),
            source,
        }),
    }
}

pub fn parse_offsets(json: &str) -> std::result::Result<Offsets, serde_json::Error> {
    // JSON object keys are strings; serde_json reads them as the partition
    // numbers they hold, and refuses any other.
    serde_json::from_str(json)
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

    fn built_in(name: &str) -> Arc<DatasetSpec> {
        lake_spec::Pipeline::built_in()
            .unwrap()
            .dataset(name)
            .unwrap()
            .clone()
    }

    #[test]
    fn schemas_carry_payload_then_metadata() {
        let tweets = bronze_schema(&built_in("tweets")).unwrap();
        assert!(tweets.field_by_name("created_at").is_some());
        assert!(tweets.field_by_name(RAW).is_some());
        assert!(tweets.field_by_name(EVENT_TIME).is_none());
        let speedtest = built_in("speedtest");
        let speed = bronze_schema(&speedtest).unwrap();
        assert!(speed.field_by_name(EVENT_TIME).is_some_and(|f| f.required));
        assert_eq!(event_time_column(&speedtest), EVENT_TIME);
        assert!(rejects_schema().field_by_name(ERROR).is_some());
        assert_eq!(
            distinct_columns(&built_in("tweets")),
            [RAW, "tweet_id", "text"]
        );
    }

    #[test]
    fn routes_follow_the_pipeline_and_the_overrides() {
        let pipeline = lake_spec::Pipeline::built_in().unwrap();
        let all = routes(&pipeline, &[], &[], &[]).unwrap();
        let names: Vec<String> = all.iter().map(|r| r.table.to_string()).collect();
        assert_eq!(names, ["bronze.tweets_raw", "bronze.speedtest_raw"]);
        let one = routes(
            &pipeline,
            &["speedtest".into()],
            &[("speedtest".into(), "speed.raw".into())],
            &[("speedtest".into(), "bronze.speed".into())],
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].topic, "speed.raw");
        assert_eq!(one[0].table.to_string(), "bronze.speed");
        let not_ingested = routes(
            &pipeline,
            &["speedtest".into()],
            &[("tweets".into(), "t".into())],
            &[],
        );
        assert!(
            not_ingested
                .unwrap_err()
                .to_string()
                .contains("not being ingested")
        );
        assert!(routes(&pipeline, &["clicks".into()], &[], &[]).is_err());
        let same = routes(
            &pipeline,
            &[],
            &[("tweets".into(), "speedtest_raw".into())],
            &[],
        );
        assert!(
            same.unwrap_err()
                .to_string()
                .contains("two datasets read topic")
        );
    }

    #[test]
    fn routes_and_table_names() {
        let route = Route::for_dataset(&built_in("tweets"));
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
