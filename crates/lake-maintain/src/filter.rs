//! `--where`: which rows' files a compaction may touch, as a conjunction of
//! comparisons, e.g. `created_at >= '2026-01-01' AND created_at < '2026-01-02'`.
//!
//! The predicate selects files the way a scan would: a file is a candidate
//! when its partition or its column statistics say it may hold a matching
//! row, so a time range on the partition column picks exactly the partitions
//! it covers.

use std::collections::HashSet;

use futures::TryStreamExt;
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::{Datum, PrimitiveType, Schema, Type};
use iceberg::table::Table;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Parses `filter` against `schema` into an iceberg predicate.
pub fn parse(filter: &str, schema: &Schema) -> Result<Predicate> {
    let invalid = |why: String| {
        Error::Invalid(format!(
            "--where `{filter}`: {why}; expected comparisons joined by AND, \
             e.g. created_at >= '2026-01-01' AND lang = 'en'"
        ))
    };
    let tokens = tokenize(filter).map_err(invalid)?;
    let mut predicate: Option<Predicate> = None;
    let mut rest = tokens.as_slice();
    loop {
        let [
            Token::Word(column),
            Token::Op(op),
            Token::Literal(value),
            tail @ ..,
        ] = rest
        else {
            return Err(invalid("a comparison is incomplete".into()));
        };
        let field = schema
            .field_by_name(column)
            .ok_or_else(|| invalid(format!("no column `{column}`")))?;
        let Type::Primitive(kind) = field.field_type.as_ref() else {
            return Err(invalid(format!("`{column}` is not a primitive column")));
        };
        let datum = datum(kind, value).map_err(|e| invalid(format!("`{column}`: {e}")))?;
        let reference = Reference::new(column.clone());
        let comparison = match op {
            Op::Eq => reference.equal_to(datum),
            Op::Ne => reference.not_equal_to(datum),
            Op::Lt => reference.less_than(datum),
            Op::Le => reference.less_than_or_equal_to(datum),
            Op::Gt => reference.greater_than(datum),
            Op::Ge => reference.greater_than_or_equal_to(datum),
        };
        predicate = Some(match predicate {
            None => comparison,
            Some(previous) => previous.and(comparison),
        });
        match tail {
            [] => break,
            [Token::Word(and), after @ ..] if and.eq_ignore_ascii_case("and") => rest = after,
            _ => return Err(invalid("comparisons must be joined by AND".into())),
        }
    }
    predicate.ok_or_else(|| invalid("empty".into()))
}

/// The paths of the current snapshot's data files that may hold rows
/// matching `predicate`.
pub async fn matching_files(table: &Table, predicate: Predicate) -> Result<HashSet<String>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(HashSet::new());
    }
    let tasks = table
        .scan()
        .with_filter(predicate)
        .build()?
        .plan_files()
        .await?;
    Ok(tasks
        .map_ok(|task| task.data_file_path)
        .try_collect()
        .await?)
}

fn datum(kind: &PrimitiveType, value: &str) -> std::result::Result<Datum, String> {
    let number = |e: std::num::ParseIntError| format!("`{value}` is not a whole number: {e}");
    Ok(match kind {
        PrimitiveType::String => Datum::string(value),
        PrimitiveType::Boolean => Datum::bool(
            value
                .parse::<bool>()
                .map_err(|_| format!("`{value}` is not true or false"))?,
        ),
        PrimitiveType::Int => Datum::int(value.parse::<i32>().map_err(number)?),
        PrimitiveType::Long => Datum::long(value.parse::<i64>().map_err(number)?),
        PrimitiveType::Float => Datum::float(
            value
                .parse::<f32>()
                .map_err(|e| format!("`{value}`: {e}"))?,
        ),
        PrimitiveType::Double => Datum::double(
            value
                .parse::<f64>()
                .map_err(|e| format!("`{value}`: {e}"))?,
        ),
        PrimitiveType::Date => {
            let date: jiff::civil::Date = value
                .parse()
                .map_err(|e| format!("`{value}` is not a date (2026-01-31): {e}"))?;
            let days = date
                .since(jiff::civil::date(1970, 1, 1))
                .map_err(|e| e.to_string())?
                .get_days();
            Datum::date(days)
        }
        PrimitiveType::Timestamptz => Datum::timestamptz_micros(micros(value)?),
        PrimitiveType::Timestamp => Datum::timestamp_micros(micros(value)?),
        other => return Err(format!("comparing {other} columns is not supported")),
    })
}

/// `2026-01-31T10:00:00Z`, `2026-01-31 10:00`, or `2026-01-31` (UTC).
fn micros(value: &str) -> std::result::Result<i64, String> {
    if let Ok(ts) = value.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    let civil: jiff::civil::DateTime = value
        .parse()
        .or_else(|_| value.parse::<jiff::civil::Date>().map(|d| d.at(0, 0, 0, 0)))
        .map_err(|e| {
            format!("`{value}` is not a time (2026-01-31T10:00:00Z or 2026-01-31): {e}")
        })?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_microsecond())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Op(Op),
    Literal(String),
}

fn tokenize(input: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut literal = String::new();
            loop {
                match chars.next() {
                    // '' inside a literal is one quote, as in SQL.
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        literal.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => literal.push(c),
                    None => return Err("a quote is not closed".into()),
                }
            }
            tokens.push(Token::Literal(literal));
        } else if "=!<>".contains(c) {
            let mut op = String::new();
            while let Some(&c) = chars.peek().filter(|c| "=!<>".contains(**c)) {
                op.push(c);
                chars.next();
            }
            tokens.push(Token::Op(match op.as_str() {
                "=" => Op::Eq,
                "!=" | "<>" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => return Err(format!("unknown operator `{other}`")),
            }));
        } else if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_alphanumeric() || **c == '_' || **c == '-' || **c == '.')
            {
                word.push(c);
                chars.next();
            }
            // After an operator, a bare word is a value (a number).
            if matches!(tokens.last(), Some(Token::Op(_))) {
                tokens.push(Token::Literal(word));
            } else {
                tokens.push(Token::Word(word));
            }
        } else {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use iceberg::spec::NestedField;

    use super::*;

    fn schema() -> Schema {
        Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(3, "lang", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .unwrap()
    }

    #[test]
    fn conjunctions_of_comparisons() {
        let p = parse(
            "ts >= '2026-01-01' AND ts < '2026-01-01T06:00:00Z' and lang = 'it''s' AND id <> 7",
            &schema(),
        )
        .unwrap();
        let shown = p.to_string();
        assert!(shown.contains("ts >= 2026-01-01 00:00:00 UTC"), "{shown}");
        assert!(shown.contains("ts < 2026-01-01 06:00:00 UTC"), "{shown}");
        assert!(shown.contains(r#"lang = "it's""#), "{shown}");
        assert!(shown.contains("id != 7"), "{shown}");
    }

    #[test]
    fn clear_errors() {
        let err = |f: &str| parse(f, &schema()).unwrap_err().to_string();
        assert!(err("nope = 1").contains("no column `nope`"));
        assert!(err("id = 'x'").contains("not a whole number"));
        assert!(err("ts > 'yesterday'").contains("not a time"));
        assert!(err("id = 1 OR id = 2").contains("joined by AND"));
        assert!(err("id =").contains("incomplete"));
        assert!(err("lang = 'open").contains("not closed"));
    }
}
