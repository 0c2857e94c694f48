//! Retention: whole partitions older than the table's retention are removed
//! with one `delete` commit.
//!
//! The retention is the table property `lake.retention` (`30d`, `12h`, or
//! `none`), else the layer's default from the table's namespace: bronze 30
//! days, silver 90, gold 365. A partition goes when all of its time range ends
//! before now minus the retention; the range comes from the first time
//! transform (hour, day, month, year, or identity on a date) of the
//! partition spec each file was written under, so a table whose partitioning
//! evolved is judged file by file. Tables whose current spec has no time
//! transform are left alone.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use iceberg::TableIdent;
use iceberg::spec::{Literal, PartitionSpec, PrimitiveLiteral, Schema, Struct, Transform, Type};
use iceberg::table::Table;
use lake_table::files::{self, LiveFile};
use lake_table::{Delete, FileSelector, LakeCatalog};

use crate::error::{Error, Result};

pub use lake_spec::RETENTION_PROPERTY;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The retention a table of `namespace` gets when it sets none.
pub fn default_retention(namespace: &str) -> Option<Duration> {
    match namespace {
        "bronze" => Some(30 * DAY),
        "silver" => Some(90 * DAY),
        "gold" => Some(365 * DAY),
        _ => None,
    }
}

/// `table`'s retention: its property, else its layer's default; `None`
/// when it keeps everything.
pub fn retention_of(table: &Table) -> Result<Option<Duration>> {
    match table.metadata().properties().get(RETENTION_PROPERTY) {
        Some(value) if value.trim().eq_ignore_ascii_case("none") => Ok(None),
        Some(value) => humantime::parse_duration(value.trim()).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "{}: table property {RETENTION_PROPERTY} = `{value}` is not a duration (e.g. 30d) or `none`: {e}",
                table.identifier()
            ))
        }),
        None => Ok(default_retention(
            table
                .identifier()
                .namespace()
                .as_ref()
                .last()
                .map(String::as_str)
                .unwrap_or_default(),
        )),
    }
}

#[derive(Clone, Debug, Default)]
pub struct RetentionReport {
    pub table: String,
    pub retention: Option<Duration>,
    /// Partitions whose time range ended before the cutoff (as displayed by
    /// iceberg's partition values), and their files, rows and bytes.
    pub partitions: Vec<String>,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Why nothing was considered, when that is the case.
    pub skipped: Option<String>,
    pub elapsed: Duration,
}

/// Deletes `ident`'s partitions older than its retention at `now_micros`.
pub async fn apply_retention(
    catalog: &LakeCatalog,
    ident: &TableIdent,
    now_micros: i64,
    dry_run: bool,
) -> Result<RetentionReport> {
    let started = Instant::now();
    let table = catalog.load(ident).await?;
    let mut report = RetentionReport {
        table: ident.to_string(),
        retention: retention_of(&table)?,
        ..RetentionReport::default()
    };
    let Some(retention) = report.retention else {
        report.skipped = Some("no retention".into());
        return Ok(report);
    };
    // Each file is judged by the spec it was written under: a table whose
    // partitioning evolved holds files of several.
    let schema = table.metadata().current_schema();
    let time_fields: HashMap<i32, (usize, Transform)> = table
        .metadata()
        .partition_specs_iter()
        .filter_map(|spec| Some((spec.spec_id(), time_field(spec, schema)?)))
        .collect();
    if !time_fields.contains_key(&table.metadata().default_partition_spec_id()) {
        report.skipped = Some("not partitioned by time".into());
        return Ok(report);
    }
    let cutoff = crate::age_cutoff_micros(now_micros, retention);
    let live = files::live_files(&table, None).await?;
    let default_spec = table.metadata().default_partition_spec_id();
    let old: Vec<&LiveFile> = live
        .iter()
        .filter(|f| {
            time_fields
                .get(&f.partition_spec_id)
                .and_then(|(index, transform)| {
                    partition_end(f.data_file.partition(), *index, *transform)
                })
                .is_some_and(|end| end <= cutoff)
        })
        .collect();
    let partitions: HashSet<(i32, Struct)> = old
        .iter()
        .map(|f| (f.partition_spec_id, f.data_file.partition().clone()))
        .collect();
    let mut shown: Vec<String> = partitions
        .iter()
        .map(|(spec, p)| {
            if *spec == default_spec {
                format!("{p:?}")
            } else {
                format!("{p:?} (spec {spec})")
            }
        })
        .collect();
    shown.sort();
    report.partitions = shown;
    report.files = old.len();
    report.rows = old.iter().map(|f| f.data_file.record_count()).sum();
    report.bytes = old.iter().map(|f| f.data_file.file_size_in_bytes()).sum();
    if !dry_run && !partitions.is_empty() {
        Delete::new(FileSelector::spec_partitions(partitions))
            .set("lake.retention.cutoff-micros", cutoff.to_string())
            .commit(catalog, &table)
            .await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The first time field of `spec` (hour, day, month, year, or identity on a
/// date): its position in the partition tuple and its transform.
fn time_field(spec: &PartitionSpec, schema: &Schema) -> Option<(usize, Transform)> {
    spec.fields().iter().enumerate().find_map(|(i, field)| {
        let source_is_date = matches!(
            schema
                .field_by_id(field.source_id)
                .map(|f| f.field_type.as_ref()),
            Some(Type::Primitive(iceberg::spec::PrimitiveType::Date))
        );
        match field.transform {
            Transform::Hour | Transform::Day | Transform::Month | Transform::Year => {
                Some((i, field.transform))
            }
            Transform::Identity if source_is_date => Some((i, Transform::Day)),
            _ => None,
        }
    })
}

/// Microseconds since the epoch at which partition `value`'s time range ends
/// (exclusive), from its field `index` under `transform`.
pub fn partition_end(value: &Struct, index: usize, transform: Transform) -> Option<i64> {
    const HOUR: i64 = 3_600_000_000;
    let n = match value.fields().get(index)? {
        Some(Literal::Primitive(PrimitiveLiteral::Int(n))) => i64::from(*n),
        _ => return None,
    };
    match transform {
        Transform::Hour => Some((n + 1) * HOUR),
        Transform::Day => Some((n + 1) * 24 * HOUR),
        Transform::Month => month_start(n + 1),
        Transform::Year => month_start((n + 1) * 12),
        _ => None,
    }
}

/// The start of month `months` after January 1970, in microseconds.
fn month_start(months: i64) -> Option<i64> {
    let year = i16::try_from(1970 + months.div_euclid(12)).ok()?;
    let month = i8::try_from(months.rem_euclid(12) + 1).ok()?;
    let date = jiff::civil::Date::new(year, month, 1).ok()?;
    let zoned = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: i32) -> Struct {
        Struct::from_iter([Some(Literal::int(n))])
    }

    #[test]
    fn partition_ends() {
        // Hour 10 of 1970-01-01 ends at 11:00.
        assert_eq!(
            partition_end(&value(10), 0, Transform::Hour),
            Some(11 * 3_600_000_000)
        );
        assert_eq!(
            partition_end(&value(0), 0, Transform::Day),
            Some(86_400_000_000)
        );
        // Month 1 (February 1970) ends on March 1st: 59 days in.
        assert_eq!(
            partition_end(&value(1), 0, Transform::Month),
            Some(59 * 86_400_000_000)
        );
        // Year 1 (1971) ends on 1972-01-01: 730 days in.
        assert_eq!(
            partition_end(&value(1), 0, Transform::Year),
            Some(730 * 86_400_000_000)
        );
        assert_eq!(partition_end(&value(1), 0, Transform::Bucket(4)), None);
        assert_eq!(
            partition_end(&Struct::from_iter([None]), 0, Transform::Hour),
            None
        );
    }

    #[test]
    fn layer_defaults() {
        assert_eq!(default_retention("bronze"), Some(30 * DAY));
        assert_eq!(default_retention("silver"), Some(90 * DAY));
        assert_eq!(default_retention("gold"), Some(365 * DAY));
        assert_eq!(default_retention("scratch"), None);
    }
}
