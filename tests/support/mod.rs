//! Shared helpers of the end-to-end tests: a small table shape partitioned by
//! hour, a writer producing its data files, and a reader returning its rows.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::{Array as _, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{
    DataFile, NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};

/// Floating-point columns of one row as two computations give them: equal to
/// 1e-9 relative (sums and averages differ in the last bits with the order of
/// addition); NaN stands for null and equals NaN.
pub fn floats_agree(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(p, q)| {
            (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
        })
}

/// One microsecond-precision hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;
/// 2026-01-01T00:00:00Z in microseconds.
pub const BASE_TS: i64 = 1_767_225_600_000_000;

/// A row of the `events` test table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub id: i64,
    pub ts: i64,
    pub name: String,
}

impl Event {
    /// Event `id`, spread over `hours` hours.
    pub fn numbered(id: i64, hours: i64) -> Self {
        Self {
            id,
            ts: BASE_TS + (id % hours) * HOUR_MICROS + id,
            name: format!("event-{id}"),
        }
    }
}

pub fn events_schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(3, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .build()
        .expect("valid schema")
}

/// Creates `namespace.name` partitioned by `hour(ts)`.
pub async fn create_events_table(
    catalog: &dyn Catalog,
    namespace: &str,
    name: &str,
    properties: HashMap<String, String>,
) -> Result<Table> {
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(2, "ts_hour", Transform::Hour)?
        .build();
    let creation = TableCreation::builder()
        .name(name.to_string())
        .schema(events_schema())
        .partition_spec(spec)
        .properties(properties)
        .build();
    Ok(catalog
        .create_table(&NamespaceIdent::new(namespace.to_string()), creation)
        .await?)
}

pub fn table_ident(namespace: &str, name: &str) -> TableIdent {
    TableIdent::new(NamespaceIdent::new(namespace.to_string()), name.to_string())
}

pub fn events_batch(table: &Table, events: &[Event]) -> Result<RecordBatch> {
    let schema = Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?);
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.id))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.ts))
                    .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.name.as_str()),
            )),
        ],
    )?)
}

/// Writes `events` as Parquet data files (lake's writer), one or more per hour.
pub async fn write_events(table: &Table, events: &[Event], prefix: &str) -> Result<Vec<DataFile>> {
    let options = lake_table::WriterOptions {
        file_prefix: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    let mut writer = lake_table::TableWriter::new(table, options).await?;
    writer.write(&events_batch(table, events)?).await?;
    Ok(writer.close().await?)
}

/// The hour number of BASE_TS, as `hour(ts)` partitions it.
pub const FIRST_HOUR: i32 = (BASE_TS / HOUR_MICROS) as i32;

/// The `hour(ts)` partition tuple of hour `h` after BASE_TS.
pub fn hour(h: i32) -> iceberg::spec::Struct {
    iceberg::spec::Struct::from_iter([Some(iceberg::spec::Literal::int(FIRST_HOUR + h))])
}

/// The hour after BASE_TS an event falls in.
pub fn hour_of(event: &Event) -> i32 {
    ((event.ts - BASE_TS) / HOUR_MICROS) as i32
}

/// Writes `events` and commits them with lake-table's append.
pub async fn append(
    catalog: &lake_table::LakeCatalog,
    table: &Table,
    events: &[Event],
) -> Result<Table> {
    let files = write_events(table, events, "append").await?;
    Ok(lake_table::Append::new()
        .add_files(files)
        .commit(catalog, table)
        .await?)
}

/// The events' ids, sorted.
pub fn ids(events: &[Event]) -> Vec<i64> {
    let mut ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    ids.sort();
    ids
}

/// Writes `events` and commits them with iceberg's `fast_append`.
pub async fn append_events(
    catalog: &dyn Catalog,
    table: &Table,
    events: &[Event],
    prefix: &str,
) -> Result<Table> {
    let files = write_events(table, events, prefix).await?;
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx)?;
    Ok(tx.commit(catalog).await?)
}

/// Every row of the table's current snapshot, sorted.
pub async fn read_events(table: &Table) -> Result<Vec<Event>> {
    let batches: Vec<RecordBatch> = table
        .scan()
        .select_all()
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?;
    let mut rows = Vec::new();
    for batch in batches {
        let ids = column::<Int64Array>(&batch, "id");
        let ts = column::<TimestampMicrosecondArray>(&batch, "ts");
        let names = column::<StringArray>(&batch, "name");
        for i in 0..batch.num_rows() {
            rows.push(Event {
                id: ids.value(i),
                ts: ts.value(i),
                name: names.value(i).to_string(),
            });
        }
    }
    rows.sort();
    Ok(rows)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} type"))
}

/// Asserts two sorted row sets are equal, printing only the first difference.
pub fn assert_same_rows(actual: &[Event], expected: &[Event]) {
    assert_eq!(actual.len(), expected.len(), "row count");
    if let Some((a, e)) = actual.iter().zip(expected).find(|(a, e)| a != e) {
        panic!("first differing row: got {a:?}, expected {e:?}");
    }
}

/// The columns `columns` of every live row of `table`.
pub async fn scan(table: &Table, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    Ok(table
        .scan()
        .select(columns.iter().copied())
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?)
}

/// Where `count` records' event times go: ten a second, ending a minute ago,
/// and all of them today (UTC), so that the seed's `date = CURRENT_DATE`
/// finds them (late ones reach back two hours) and none lies in the future.
/// Just after midnight the span shrinks, or the test waits a few seconds.
pub fn todays_window(count: u64) -> (String, String) {
    use jiff::SignedDuration;
    loop {
        let now = jiff::Timestamp::now();
        let midnight = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .start_of_day()
            .map(|d| d.timestamp())
            .unwrap_or(now);
        let end = now - SignedDuration::from_secs(60);
        let room = end.duration_since(midnight);
        if room < SignedDuration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_secs(5));
            continue;
        }
        let span = room.min(SignedDuration::from_secs((count / 10) as i64));
        let start = end - span;
        let per_second = count as f64 / span.as_secs_f64();
        return (start.to_string(), format!("{per_second:.3}"));
    }
}

/// `lake generate DATASET` arguments for `count` records into the test's
/// topic, with event times today ending a minute ago ([`todays_window`]),
/// `users` distinct users and the fault rates `faults`
/// (`[("--duplicates", "0.02"), …]`).
pub fn generate_today(
    topics: &lake_testkit::DatasetTopics,
    dataset: &str,
    count: u64,
    seed: u64,
    users: u32,
    faults: &[(&str, &str)],
) -> Vec<String> {
    let (start, per_second) = todays_window(count);
    let mut args: Vec<String> = ["generate", dataset, "--rate", "0", "--count"]
        .into_iter()
        .map(String::from)
        .collect();
    args.push(count.to_string());
    args.extend(topics.generate_args(dataset));
    args.extend([
        "--seed".into(),
        seed.to_string(),
        "--start".into(),
        start,
        "--events-per-second".into(),
        per_second,
        "--users".into(),
        users.to_string(),
    ]);
    for (flag, rate) in faults {
        args.extend([flag.to_string(), rate.to_string()]);
    }
    args
}

/// Waits, when less than `margin` is left of the current UTC hour, until the
/// next hour has begun: for steps that must write into one hourly partition
/// of the Kafka record time.
pub fn clear_of_the_hour_s_end(margin: std::time::Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = 3600 - now.as_secs() % 3600;
    if left < margin.as_secs() {
        std::thread::sleep(std::time::Duration::from_secs(left + 1));
    }
}
