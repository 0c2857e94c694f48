//! `datasets/<name>/gold/<model>.sql`: a gold model is a query over `silver`
//! with its table, time column and grain in a header line, as SQLMesh puts a
//! model's kind and grain at the top of its SQL:
//!
//! ```sql
//! -- gold.popular_hashtags_by_hour: the top hashtags of every hour.
//! -- lake: time_column = "hour", grain = "hour"
//! SELECT date_trunc('hour', created_at) AS "hour", …
//! ```
//!
//! The `-- lake:` line holds TOML key/value pairs separated by commas:
//! `time_column` and `grain` (`hour` or `day`) are required; `table`
//! (default `gold.<model>`), `retention`, `target_file_size`, `compression`
//! and `compression_level` are optional.

use serde::Deserialize;

use crate::dataset::{
    GoldSpec, Granularity, Upkeep, check_compression, check_retention, parse_file_size, table_ident,
};
use crate::{Problem, Problems};

/// The header's marker.
pub const HEADER: &str = "-- lake:";

/// The header line, read as the TOML `header = { … }`.
#[derive(Deserialize)]
struct Line {
    header: Header,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    table: Option<String>,
    time_column: Option<String>,
    grain: Option<String>,
    retention: Option<String>,
    target_file_size: Option<String>,
    compression: Option<String>,
    compression_level: Option<i64>,
}

/// Reads one gold model; `stem` is its file name without `.sql`.
pub(crate) fn parse(stem: &str, file: &str, sql: &str) -> Result<GoldSpec, Problems> {
    let mut problems = Problems::default();
    let header = sql
        .lines()
        .enumerate()
        .find_map(|(i, line)| line.trim().strip_prefix(HEADER).map(|rest| (i + 1, rest)));
    let Some((line, text)) = header else {
        problems.push(Problem::new(
            file,
            None,
            format!(
                "no `{HEADER} time_column = \"…\", grain = \"hour\"` line: a gold model needs \
                 its time column and grain"
            ),
        ));
        return Err(problems);
    };
    let header = match toml::from_str::<Line>(&format!("header = {{ {} }}", text.trim())) {
        Ok(line) => line.header,
        Err(e) => {
            problems.push(Problem::new(
                file,
                Some(line),
                format!("`{HEADER}` line: {}", e.message().trim()),
            ));
            return Err(problems);
        }
    };
    let mut fail = |message: String| problems.push(Problem::new(file, Some(line), message));
    let time_column = header.time_column.clone().unwrap_or_default();
    if time_column.is_empty() {
        fail("the header names no time_column (the gold table's time column)".into());
    }
    let grain = match header.grain.as_deref() {
        None => {
            fail("the header names no grain (hour or day)".into());
            None
        }
        Some(text) => {
            let grain = Granularity::parse(text);
            if grain.is_none() {
                fail(format!("grain = \"{text}\": hour or day"));
            }
            grain
        }
    };
    let table_name = header.table.unwrap_or_else(|| format!("gold.{stem}"));
    let table = match table_ident(&table_name) {
        Ok(ident) => Some(ident),
        Err(message) => {
            fail(format!("table `{table_name}`: {message}"));
            None
        }
    };
    if let Some(retention) = &header.retention
        && let Err(message) = check_retention(retention)
    {
        fail(message);
    }
    let target_file_size = match header.target_file_size.as_deref().map(parse_file_size) {
        Some(Err(message)) => {
            fail(message);
            None
        }
        Some(Ok(bytes)) => Some(bytes),
        None => None,
    };
    let (compression, compression_level) =
        match check_compression(header.compression.as_deref(), header.compression_level) {
            Ok(checked) => checked,
            Err((_, message)) => {
                fail(message);
                (None, None)
            }
        };
    match (table, grain) {
        (Some(table), Some(grain)) if problems.is_empty() => Ok(GoldSpec {
            table,
            time_column,
            grain,
            upkeep: Upkeep {
                retention: header.retention,
                target_file_size,
                compression,
                compression_level,
            },
            sql: sql.to_string(),
            file: file.to_string(),
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_table_time_column_and_grain() {
        let sql = "-- the top tags\n-- lake: time_column = \"hour\", grain = \"hour\"\nSELECT 1";
        let gold = parse("popular", "gold/popular.sql", sql).expect("a model");
        assert_eq!(gold.table.to_string(), "gold.popular");
        assert_eq!(gold.time_column, "hour");
        assert_eq!(gold.grain, Granularity::Hour);

        let named = "-- lake: table = \"marts.daily\", time_column = \"day\", grain = \"day\", retention = \"400d\"\nSELECT 1";
        let gold = parse("x", "x.sql", named).expect("a model");
        assert_eq!(gold.table.to_string(), "marts.daily");
        assert_eq!(gold.upkeep.retention.as_deref(), Some("400d"));

        let packed = "-- lake: time_column = \"day\", grain = \"day\", compression = \"gzip\", compression_level = 9\nSELECT 1";
        let gold = parse("x", "x.sql", packed).expect("a model");
        assert_eq!(gold.upkeep.compression.as_deref(), Some("gzip"));
        assert_eq!(gold.upkeep.compression_level, Some(9));
        let problems = parse(
            "x",
            "gold/x.sql",
            "-- lake: time_column = \"day\", grain = \"day\", compression = \"lzo\"\nSELECT 1",
        )
        .unwrap_err();
        assert!(
            problems
                .to_string()
                .starts_with("gold/x.sql:1: compression: `lzo` is not a codec lake writes"),
            "{problems}"
        );
    }

    #[test]
    fn a_missing_grain_or_header_is_named() {
        let problems = parse("x", "gold/x.sql", "SELECT 1").unwrap_err();
        assert!(
            problems.to_string().starts_with("gold/x.sql: no `-- lake:"),
            "{problems}"
        );
        let problems = parse(
            "x",
            "gold/x.sql",
            "-- lake: time_column = \"day\"\nSELECT 1",
        )
        .unwrap_err();
        assert_eq!(
            problems.to_string(),
            "gold/x.sql:1: the header names no grain (hour or day)"
        );
        let problems = parse(
            "x",
            "gold/x.sql",
            "-- lake: time_column = \"day\", grain = \"week\"",
        )
        .unwrap_err();
        assert!(
            problems
                .to_string()
                .contains("grain = \"week\": hour or day")
        );
        let problems = parse("x", "gold/x.sql", "-- lake: grain = hour").unwrap_err();
        assert!(
            problems
                .to_string()
                .starts_with("gold/x.sql:1: `-- lake:` line:")
        );
    }
}
