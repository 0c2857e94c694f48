//! Two DataFusion built-ins with a fast path for the shapes lake's tables
//! give them; every other call goes to the built-in unchanged.
//!
//! - `cardinality` of a one-level list is the list's length, read from its
//!   offsets. The built-in slices every row into an array of its own to
//!   measure its dimensions: 3–4 % of a tweet transform's CPU for
//!   `cardinality(hashtags)` and `cardinality(mentions)`.
//! - `date_trunc` to the hour or day of a `timestamptz`: Iceberg's
//!   `timestamptz` reads as a timestamp in `+00:00`, which the built-in
//!   truncates value by value through a time zone; in UTC an hour and a day
//!   are fixed lengths, which the built-in itself uses for timestamps
//!   without a zone.

use std::any::Any;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, UInt64Array};
use arrow_schema::{DataType, FieldRef, TimeUnit};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The fast paths there are.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum FastPath {
    ListCardinality,
    UtcDateTrunc,
}

impl FastPath {
    /// The answer to a call the fast path takes, or `None` for the built-in.
    fn answer(self, args: &[ColumnarValue]) -> DfResult<Option<ArrayRef>> {
        match self {
            FastPath::ListCardinality => list_cardinality(args),
            FastPath::UtcDateTrunc => utc_date_trunc(args),
        }
    }
}

/// Replaces `cardinality` and `date_trunc` in `ctx` with their fast paths.
pub(crate) fn register(ctx: &SessionContext) {
    for (name, fast) in [
        ("cardinality", FastPath::ListCardinality),
        ("date_trunc", FastPath::UtcDateTrunc),
    ] {
        // A session without the built-in (none today) keeps what it has.
        if let Ok(builtin) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Faster { builtin, fast }));
        }
    }
}

/// A built-in with a fast path in front: planning, ordering and
/// simplification are the built-in's own.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Faster {
    builtin: Arc<ScalarUDF>,
    fast: FastPath,
}

impl ScalarUDFImpl for Faster {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.builtin.name()
    }

    fn aliases(&self) -> &[String] {
        self.builtin.aliases()
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, types: &[DataType]) -> DfResult<DataType> {
        self.builtin.return_type(types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.builtin.return_field_from_args(args)
    }

    fn coerce_types(&self, types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.builtin.coerce_types(types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.builtin.simplify(args, info)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.builtin.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.builtin.preserves_lex_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.builtin.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match self.fast.answer(&args.args)? {
            Some(array) => Ok(ColumnarValue::Array(array)),
            None => self.builtin.invoke_with_args(args),
        }
    }
}

/// `cardinality` of a list column whose items are not lists: each row's
/// length, NULL for a NULL list (as the built-in answers).
fn list_cardinality(args: &[ColumnarValue]) -> DfResult<Option<ArrayRef>> {
    let [ColumnarValue::Array(array)] = args else {
        return Ok(None);
    };
    let lengths = |offsets: Vec<u64>| -> ArrayRef {
        Arc::new(UInt64Array::new(offsets.into(), array.nulls().cloned()))
    };
    Ok(match array.data_type() {
        DataType::List(item) if !is_list(item.data_type()) => {
            let list = array.as_list::<i32>();
            let offsets = list.offsets().windows(2);
            Some(lengths(offsets.map(|w| (w[1] - w[0]) as u64).collect()))
        }
        DataType::LargeList(item) if !is_list(item.data_type()) => {
            let list = array.as_list::<i64>();
            let offsets = list.offsets().windows(2);
            Some(lengths(offsets.map(|w| (w[1] - w[0]) as u64).collect()))
        }
        _ => None,
    })
}

fn is_list(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
    )
}

/// `date_trunc('hour' | 'day', t)` of a timestamp column in UTC (`+00:00`,
/// `UTC`, `Z`): whole hours and days since the epoch.
fn utc_date_trunc(args: &[ColumnarValue]) -> DfResult<Option<ArrayRef>> {
    let [
        ColumnarValue::Scalar(granularity),
        ColumnarValue::Array(array),
    ] = args
    else {
        return Ok(None);
    };
    let seconds = match granularity {
        ScalarValue::Utf8(Some(g))
        | ScalarValue::Utf8View(Some(g))
        | ScalarValue::LargeUtf8(Some(g)) => {
            if g.eq_ignore_ascii_case("hour") {
                3_600
            } else if g.eq_ignore_ascii_case("day") {
                86_400
            } else {
                return Ok(None);
            }
        }
        _ => return Ok(None),
    };
    let DataType::Timestamp(unit, Some(zone)) = array.data_type() else {
        return Ok(None);
    };
    if !matches!(zone.as_ref(), "+00:00" | "UTC" | "Z" | "+00" | "+0000") {
        return Ok(None);
    }
    let zone = Some(zone.clone());
    Ok(Some(match unit {
        TimeUnit::Second => truncate::<TimestampSecondType>(array, seconds, zone),
        TimeUnit::Millisecond => truncate::<TimestampMillisecondType>(array, seconds * 1_000, zone),
        TimeUnit::Microsecond => {
            truncate::<TimestampMicrosecondType>(array, seconds * 1_000_000, zone)
        }
        TimeUnit::Nanosecond => {
            truncate::<TimestampNanosecondType>(array, seconds * 1_000_000_000, zone)
        }
    }))
}

fn truncate<T>(array: &ArrayRef, step: i64, zone: Option<Arc<str>>) -> ArrayRef
where
    T: ArrowPrimitiveType<Native = i64> + arrow_array::types::ArrowTimestampType,
{
    let times = array.as_primitive::<T>();
    let truncated: PrimitiveArray<T> = times.unary(|t| t - t.rem_euclid(step));
    Arc::new(truncated.with_timezone_opt(zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same query through the built-ins and through the fast paths.
    async fn both(sql: &str) -> (String, String) {
        let builtin = SessionContext::new();
        let faster = SessionContext::new();
        register(&faster);
        let mut answers = Vec::new();
        for ctx in [&builtin, &faster] {
            answers.push(crate::printed(ctx, sql).await);
        }
        let faster = answers.pop().expect("two answers");
        (answers.pop().expect("two answers"), faster)
    }

    #[tokio::test]
    async fn cardinality_answers_as_the_builtin_does() {
        let sql = "SELECT cardinality(l) AS n, cardinality(n2) AS nested FROM (VALUES \
                   (make_array('a', 'b', NULL), make_array(make_array(1, 2), make_array(3, 4))), \
                   (CAST(make_array() AS VARCHAR[]), make_array(make_array(5))), \
                   (NULL, NULL)) AS t(l, n2)";
        let (builtin, faster) = both(sql).await;
        assert_eq!(faster, builtin);
        assert!(faster.contains("| 3 | 4"), "{faster}");
    }

    #[tokio::test]
    async fn date_trunc_in_utc_answers_as_the_builtin_does() {
        for zone in ["+00:00", "UTC"] {
            for granularity in ["hour", "DAY", "minute", "month"] {
                let sql = format!(
                    "SELECT date_trunc('{granularity}', t) AS t FROM (VALUES \
                     (arrow_cast(1700000123456789, 'Timestamp(Microsecond, Some(\"{zone}\"))')), \
                     (arrow_cast(-86399999999, 'Timestamp(Microsecond, Some(\"{zone}\"))')), \
                     (arrow_cast(NULL, 'Timestamp(Microsecond, Some(\"{zone}\"))'))) AS v(t)"
                );
                let (builtin, faster) = both(&sql).await;
                assert_eq!(faster, builtin, "{granularity} in {zone}");
                if granularity == "hour" {
                    assert!(faster.contains("2023-11-14T22:00:00"), "{faster}");
                    assert!(faster.contains("1969-12-31T00:00:00"), "{faster}");
                }
            }
        }
    }

    #[test]
    fn the_fast_paths_take_the_shapes_lake_gives_them() {
        let tags =
            arrow_array::ListArray::from_iter_primitive::<arrow_array::types::Int32Type, _, _>([
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ]);
        let lengths = list_cardinality(&[ColumnarValue::Array(Arc::new(tags))])
            .expect("cardinality")
            .expect("a one-level list takes the fast path");
        let lengths = lengths.as_primitive::<arrow_array::types::UInt64Type>();
        assert_eq!(lengths.iter().collect::<Vec<_>>(), [Some(2), None, Some(0)]);

        let times: ArrayRef = Arc::new(
            PrimitiveArray::<TimestampMicrosecondType>::from(vec![Some(5_400_000_001), None])
                .with_timezone("+00:00"),
        );
        let hour = ColumnarValue::Scalar(ScalarValue::Utf8(Some("hour".into())));
        let hours = utc_date_trunc(&[hour.clone(), ColumnarValue::Array(times)])
            .expect("date_trunc")
            .expect("an hour in +00:00 takes the fast path");
        assert_eq!(
            hours.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        let hours = hours.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            hours.iter().collect::<Vec<_>>(),
            [Some(3_600_000_000), None]
        );

        let elsewhere: ArrayRef = Arc::new(
            PrimitiveArray::<TimestampMicrosecondType>::from(vec![1]).with_timezone("+05:45"),
        );
        let answer = utc_date_trunc(&[hour, ColumnarValue::Array(elsewhere)]).expect("date_trunc");
        assert!(answer.is_none(), "other zones are the built-in's");
    }
}
