//! The SQL a dataset's models run.
//!
//! A dataset's `silver.sql` is its projection: bronze columns flattened,
//! cleaned and derived. lake wraps it in what every silver model needs, built
//! from `dataset.toml`: the first copy of each silver key (by Kafka
//! partition and offset) among the new rows, unless the key is already in
//! silver or its quarantine (the `existing` input), then the quality rules in
//! declared order. Deduplication is an aggregate over the new rows' keys and
//! an anti-join rather than a window: keys are nearly all distinct, the
//! aggregate touches only the key columns, and the existing keys stream
//! through the join without being held.
//!
//! Gold models run as written, over `silver`.

use lake_spec::{Action, DatasetSpec};

/// The column naming the first quarantine or drop rule a row breaks.
pub const RULE: &str = "_rule";
/// The warn rules a row breaks, comma-separated (NULL for none).
pub const WARNINGS: &str = "_warnings";
/// Where Kafka held a row's copy: (partition, offset) as one exact number.
pub const POSITION: &str = "__lake_position";
/// Columns a silver model must return: the copy's Kafka coordinates.
pub const COORDINATES: [&str; 2] = ["_kafka_partition", "_kafka_offset"];
/// `__lake_position` is the partition times this plus the offset: offsets
/// are below it (i64), so one number orders a key's copies as Kafka did.
pub(crate) const PARTITION_SCALE: i128 = 10_000_000_000_000_000_000;

fn quoted(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The dataset's silver.sql as a subquery body: without a final `;`, and
/// with a line break so a trailing comment cannot swallow what follows.
pub(crate) fn projection(spec: &DatasetSpec) -> String {
    let sql = spec.silver.sql.trim_end();
    let sql = sql.trim_end_matches(';').trim_end();
    format!("{sql}\n")
}

/// The query a silver model answers over `bronze` and `existing`: the
/// dataset's projection, deduplicated on its silver key, with `_rule` (and
/// `_warnings` where the dataset has warn rules) appended. lake runs it in
/// two steps with the same answer: [`first_copies_sql`], then
/// [`checked_rows_sql`] keeping the rows at those positions.
pub fn silver_sql(spec: &DatasetSpec) -> String {
    let keys = key_columns(spec);
    let join = keys
        .iter()
        .map(|k| format!("(p.{k} IS NOT DISTINCT FROM f.{k})"))
        .chain([format!("(p.{POSITION} = f.{POSITION})")])
        .collect::<Vec<_>>()
        .join("\n     AND ");
    format!(
        "-- {table}: {file}, deduplicated on ({key_list}) and checked against the rules of \
         {toml}.\n\
         {first_copies},\n\
         fresh AS (\n    \
             SELECT p.*\n    \
             FROM unseen f\n    \
             JOIN positioned p\n      \
               ON {join}\n\
         )\n\
         SELECT * EXCLUDE ({POSITION}),\n{rules}\n\
         FROM fresh\n",
        table = spec.silver.table,
        file = spec.silver.file,
        key_list = keys.join(", "),
        toml = spec.file,
        first_copies = first_copy_ctes(spec),
        rules = rule_columns(spec),
    )
}

/// The Kafka position (`__lake_position`) of each new row silver keeps: the
/// first copy of its key among the new rows, where the key is not in
/// `existing`. Only the key and coordinate columns are read.
pub(crate) fn first_copies_sql(spec: &DatasetSpec) -> String {
    format!("{}\nSELECT {POSITION} FROM unseen\n", first_copy_ctes(spec))
}

/// Every new row with its `_rule` (and `_warnings`), duplicates included:
/// the rows whose positions [`first_copies_sql`] returns are silver's.
pub(crate) fn checked_rows_sql(spec: &DatasetSpec) -> String {
    format!(
        "WITH model AS (\n{projection})\nSELECT m.*,\n{rules}\nFROM model m\n",
        projection = crate::pii::protect(spec, &projection(spec)),
        rules = rule_columns(spec),
    )
}

fn key_columns(spec: &DatasetSpec) -> Vec<String> {
    spec.silver.key.iter().map(|k| quoted(k)).collect()
}

/// `WITH model, positioned, first_copy, unseen`: the new rows, their Kafka
/// positions, the first copy of each key, and those of keys not yet seen.
fn first_copy_ctes(spec: &DatasetSpec) -> String {
    let keys = key_columns(spec);
    let key_list = keys.join(", ");
    let anti = keys
        .iter()
        .map(|k| format!("(f.{k} IS NOT DISTINCT FROM e.{k})"))
        .collect::<Vec<_>>()
        .join("\n     AND ");
    format!(
        "WITH model AS (\n{projection}),\n\
         positioned AS (\n    \
             SELECT m.*,\n           \
                    CAST(m._kafka_partition AS DECIMAL(38, 0))\n               \
                        * CAST('{PARTITION_SCALE}' AS DECIMAL(38, 0))\n               \
                        + CAST(m._kafka_offset AS DECIMAL(38, 0)) AS {POSITION}\n    \
             FROM model m\n\
         ),\n\
         -- Duplicates among the new rows keep the copy read first from Kafka.\n\
         first_copy AS (\n    \
             SELECT {key_list}, min({POSITION}) AS {POSITION}\n    \
             FROM positioned\n    \
             GROUP BY {key_list}\n\
         ),\n\
         -- A key already in silver or its quarantine is not written again. The\n\
         -- new keys are the join's build side and `existing` streams past them,\n\
         -- so memory follows the new rows, not the table.\n\
         unseen AS (\n    \
             SELECT f.*\n    \
             FROM first_copy f\n    \
             LEFT ANTI JOIN existing e\n      \
               ON {anti}\n\
         )",
        projection = crate::pii::protect(spec, &projection(spec)),
    )
}

/// `_rule` (the first quarantine or drop rule a row breaks) and, where the
/// dataset has warn rules, `_warnings`.
fn rule_columns(spec: &DatasetSpec) -> String {
    let mut rules: Vec<String> = spec
        .silver
        .rules
        .iter()
        .filter(|r| r.action != Action::Warn)
        .map(|r| format!("        WHEN NOT ({}) THEN {}", r.check, literal(&r.name)))
        .collect();
    let rule = if rules.is_empty() {
        format!("CAST(NULL AS VARCHAR) AS {RULE}")
    } else {
        rules.insert(0, "CASE".into());
        rules.push(format!("    END AS {RULE}"));
        rules.join("\n")
    };
    let warnings: Vec<String> = spec
        .silver
        .rules
        .iter()
        .filter(|r| r.action == Action::Warn)
        .map(|r| format!("CASE WHEN NOT ({}) THEN {} END", r.check, literal(&r.name)))
        .collect();
    if warnings.is_empty() {
        rule
    } else {
        format!(
            "{rule},\n    nullif(concat_ws(',', {}), '') AS {WARNINGS}",
            warnings.join(", ")
        )
    }
}

/// Every model's SQL as it runs, for `lake transform models`: the file name
/// it would have and its text.
pub fn model_sql(spec: &DatasetSpec) -> Vec<(String, String)> {
    let mut models = vec![(
        format!("silver/{}.sql", spec.silver.table.name()),
        silver_sql(spec),
    )];
    for gold in &spec.gold {
        models.push((format!("gold/{}.sql", gold.table.name()), gold.sql.clone()));
    }
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in(name: &str) -> std::sync::Arc<DatasetSpec> {
        lake_spec::Pipeline::built_in()
            .expect("built in")
            .dataset(name)
            .expect("dataset")
            .clone()
    }

    #[test]
    fn silver_wraps_the_projection_in_dedup_and_rules() {
        let sql = silver_sql(&built_in("speedtest"));
        assert!(sql.contains("GROUP BY \"user_id\", \"ts\""), "{sql}");
        assert!(
            sql.contains("WHEN NOT (latency BETWEEN 0 AND 10000) THEN 'latency_out_of_range'"),
            "{sql}"
        );
        assert!(sql.contains("SELECT * EXCLUDE (__lake_position)"), "{sql}");
        assert!(!sql.contains(WARNINGS), "no warn rules, no warnings column");
        let models = model_sql(&built_in("tweets"));
        let names: Vec<&str> = models.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "silver/tweets_clean.sql",
                "gold/popular_hashtags_by_hour.sql",
                "gold/active_users_by_day.sql",
                "gold/tweet_volume_by_region.sql",
                "gold/tweet_metrics_by_language.sql"
            ]
        );
    }

    #[test]
    fn warn_rules_become_a_warnings_column_and_no_rules_a_null_rule() {
        let mut spec = (*built_in("speedtest")).clone();
        spec.silver.rules[2].action = Action::Warn;
        let sql = silver_sql(&spec);
        assert!(
            sql.contains(
                "nullif(concat_ws(',', CASE WHEN NOT (latency BETWEEN 0 AND 10000) THEN \
                 'latency_out_of_range' END), '') AS _warnings"
            ),
            "{sql}"
        );
        spec.silver.rules.clear();
        assert!(silver_sql(&spec).contains("CAST(NULL AS VARCHAR) AS _rule"));
    }
}
