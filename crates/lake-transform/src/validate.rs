//! `lake validate`'s part that needs SQL: every model planned against the
//! schemas its dataset declares, before any data exists. A silver model is
//! planned over the bronze schema of its `dataset.toml`, each quality rule
//! over what the silver model returns, and each gold model over the silver
//! table that makes.

use std::sync::Arc;

use arrow_schema::{Field, Schema as ArrowSchema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use lake_spec::{DatasetSpec, Pipeline, Problem, Problems};

use crate::models::{RULE, WARNINGS, silver_sql};
use crate::transform::{projection_schema, register_empty_existing};

fn empty(schema: SchemaRef) -> datafusion::error::Result<Arc<MemTable>> {
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

/// Every problem the models of `pipeline` have.
pub async fn validate(pipeline: &Pipeline) -> Problems {
    let mut problems = Problems::default();
    for dataset in &pipeline.datasets {
        if let Err(found) = validate_dataset(dataset).await {
            problems.extend(found);
        }
    }
    problems
}

async fn validate_dataset(dataset: &DatasetSpec) -> Result<(), Problems> {
    let mut problems = Problems::default();
    let fail = |problems: &mut Problems, file: &str, message: String| {
        problems.push(Problem::new(file, None, message));
        Err(std::mem::take(problems))
    };
    let ctx = SessionContext::new();
    // Planning needs the functions, not the key.
    crate::pii::register(&ctx, None);
    let bronze = match dataset.bronze_schema() {
        Ok(schema) => schema,
        Err(message) => return fail(&mut problems, &dataset.file, message),
    };
    let arrow = match iceberg::arrow::schema_to_arrow_schema(&bronze) {
        Ok(arrow) => arrow,
        Err(e) => return fail(&mut problems, &dataset.file, e.to_string()),
    };
    // As a run reads bronze: without the raw record.
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .filter(|f| f.name() != lake_spec::columns::RAW)
        .map(|f| f.as_ref().clone())
        .collect();
    let registered = empty(Arc::new(ArrowSchema::new(fields)))
        .and_then(|table| ctx.register_table("bronze", table).map(|_| ()));
    if let Err(e) = registered {
        return fail(&mut problems, &dataset.file, e.to_string());
    }

    let projected = match projection_schema(&ctx, dataset).await {
        Ok(schema) => schema,
        Err(e) => {
            let message = match e {
                crate::Error::Model { source, .. } => format!(
                    "does not plan against the bronze schema of {}: {source}",
                    dataset.file
                ),
                other => other.to_string(),
            };
            let message = message
                .strip_prefix(&format!("{}: ", dataset.silver.file))
                .map(str::to_string)
                .unwrap_or(message);
            return fail(&mut problems, &dataset.silver.file, message);
        }
    };
    if let Err(e) = empty(projected.clone())
        .and_then(|table| ctx.register_table("silver_model", table).map(|_| ()))
    {
        return fail(&mut problems, &dataset.file, e.to_string());
    }
    for rule in &dataset.silver.rules {
        let sql = format!(
            "SELECT CASE WHEN NOT ({}) THEN 1 END FROM silver_model",
            rule.check
        );
        if let Err(e) = ctx.sql(&sql).await {
            problems.push(Problem::new(
                &dataset.file,
                None,
                format!(
                    "rule `{}`: `{}` does not plan against what {} returns: {e}",
                    rule.name, rule.check, dataset.silver.file
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Err(e) = register_empty_existing(&ctx, dataset, &projected) {
        return fail(&mut problems, &dataset.file, e.to_string());
    }
    let silver = match ctx.sql(&silver_sql(dataset)).await {
        Ok(frame) => frame.schema().as_arrow().clone(),
        Err(e) => return fail(&mut problems, &dataset.silver.file, e.to_string()),
    };
    let clean: Vec<Field> = silver
        .fields()
        .iter()
        .filter(|f| f.name() != RULE && f.name() != WARNINGS)
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    if let Err(e) = empty(Arc::new(ArrowSchema::new(clean)))
        .and_then(|table| ctx.register_table("silver", table).map(|_| ()))
    {
        return fail(&mut problems, &dataset.file, e.to_string());
    }
    for gold in &dataset.gold {
        match ctx.sql(&gold.sql).await {
            Err(e) => problems.push(Problem::new(
                &gold.file,
                None,
                format!(
                    "does not plan against {} (what {} returns): {e}",
                    dataset.silver.table, dataset.silver.file
                ),
            )),
            Ok(frame) => {
                if frame
                    .schema()
                    .as_arrow()
                    .field_with_name(&gold.time_column)
                    .is_err()
                {
                    problems.push(Problem::new(
                        &gold.file,
                        None,
                        format!(
                            "the query returns no column `{}`, the time column its header names",
                            gold.time_column
                        ),
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_built_in_pipeline_plans() {
        let pipeline = Pipeline::built_in().expect("built in");
        let problems = validate(&pipeline).await;
        assert!(problems.is_empty(), "{problems}");
    }

    #[tokio::test]
    async fn a_rule_on_a_missing_column_and_a_gold_model_off_silver_are_named() {
        let pipeline = Pipeline::built_in().expect("built in");
        let mut speedtest = (**pipeline.dataset("speedtest").expect("speedtest")).clone();
        speedtest.silver.rules[0].check = "jitter < 5".into();
        speedtest.gold[0].sql = "SELECT ts AS \"date\", isp FROM silver".into();
        let problems = validate_dataset(&speedtest).await.expect_err("problems");
        let text = problems.to_string();
        assert!(
            text.contains(
                "built-in datasets/speedtest/dataset.toml: rule `null_field`: `jitter < 5`"
            ),
            "{text}"
        );
        speedtest.silver.rules[0].check = "location <> ''".into();
        let text = validate_dataset(&speedtest)
            .await
            .expect_err("problems")
            .to_string();
        assert!(
            text.starts_with(
                "built-in datasets/speedtest/gold/speedtest_agg.sql: does not plan against \
                 silver.speedtest_clean"
            ),
            "{text}"
        );
    }
}
