//! Running the models incrementally.
//!
//! Silver: the bronze files appended since the snapshot the silver table
//! last consumed are read, deduplicated against everything already in silver
//! (and its quarantine), and split by the quality rules; clean and
//! quarantined rows are appended to their tables in one atomic commit that
//! records the bronze snapshot consumed.
//!
//! Gold: the silver files appended since the snapshot a gold table last
//! consumed name the hours or days that changed; the silver rows of exactly
//! those are aggregated again and replace those gold partitions in one
//! overwrite commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use iceberg::spec::{Literal, PrimitiveLiteral, Schema, Transform};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use lake_spec::{Action, DatasetSpec, GoldSpec, Granularity, Upkeep};
use lake_table::files::{self, LiveFile};
use lake_table::{Append, FileSelector, LakeCatalog, Overwrite, TableWriter, WriterOptions};

use crate::error::{Error, Result};
use crate::first_copies::FirstCopies;
use crate::models::{COORDINATES, POSITION, RULE, WARNINGS};
use crate::scan::{file_set_table, file_set_table_where};

/// Quarantine columns added after the silver ones.
const QUARANTINE_RULE: &str = "rule";
const QUARANTINED_AT: &str = "quarantined_at";
/// Bronze columns no model reads.
const SKIPPED_BRONZE: &[&str] = &[lake_spec::columns::RAW];

#[derive(Clone, Debug)]
pub struct TransformOptions {
    /// Fail, committing nothing more, when more than this share of a silver
    /// commit's input breaks a rule (a backlog's earlier steps stay).
    pub fail_on_quarantine_ratio: Option<f64>,
    /// DataFusion's target partitions (threads of work).
    pub partitions: usize,
    /// Read every existing silver key, whatever the dataset's dedup horizon.
    pub exhaustive_dedup: bool,
    /// The key of `[silver.pii]`'s `hash` (from `LAKE_PII_KEY`).
    pub pii_key: Option<crate::pii::PiiKey>,
    /// About how many silver rows one gold query reads: a rebuild of more
    /// hours or days runs as several queries, one after the other, and
    /// commits once.
    pub gold_rows_per_query: u64,
    /// About how many bronze rows one silver commit takes: a larger backlog
    /// runs in steps of whole bronze snapshots, each committed before the
    /// next is read.
    pub silver_rows_per_commit: u64,
}

/// The default of [`TransformOptions::gold_rows_per_query`].
pub const DEFAULT_GOLD_ROWS_PER_QUERY: u64 = 1_000_000;
/// The default of [`TransformOptions::silver_rows_per_commit`].
pub const DEFAULT_SILVER_ROWS_PER_COMMIT: u64 = 4_000_000;

impl Default for TransformOptions {
    fn default() -> Self {
        TransformOptions {
            fail_on_quarantine_ratio: None,
            partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            exhaustive_dedup: false,
            pii_key: None,
            gold_rows_per_query: DEFAULT_GOLD_ROWS_PER_QUERY,
            silver_rows_per_commit: DEFAULT_SILVER_ROWS_PER_COMMIT,
        }
    }
}

/// What one model run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelReport {
    pub target: String,
    /// Rows read from the source.
    pub rows_in: u64,
    /// Rows written to the target.
    pub rows_out: u64,
    /// Rows quarantined, per rule (silver).
    pub quarantined: BTreeMap<String, u64>,
    /// Rows dropped by a `drop` rule, per rule (silver).
    pub dropped: BTreeMap<String, u64>,
    /// Rows kept that broke a `warn` rule, per rule (silver).
    pub warned: BTreeMap<String, u64>,
    /// Input rows dropped as duplicates (silver).
    pub duplicates: u64,
    /// Gold partitions replaced.
    pub partitions_rebuilt: usize,
    /// The snapshot committed, if anything was.
    pub snapshot: Option<i64>,
    /// The newest Kafka record timestamp (ms since the Unix epoch) that the
    /// committed snapshot has reached, when its source recorded one.
    pub newest_record_ms: Option<i64>,
    /// Why nothing was done, when the reason is worth telling.
    pub note: Option<String>,
    pub elapsed: Duration,
}

impl ModelReport {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Adds a later step of the same run.
    fn absorb(&mut self, step: ModelReport) {
        self.rows_in += step.rows_in;
        self.rows_out += step.rows_out;
        for (mine, theirs) in [
            (&mut self.quarantined, step.quarantined),
            (&mut self.dropped, step.dropped),
            (&mut self.warned, step.warned),
        ] {
            for (rule, count) in theirs {
                *mine.entry(rule).or_default() += count;
            }
        }
        self.duplicates += step.duplicates;
        self.partitions_rebuilt += step.partitions_rebuilt;
        self.snapshot = step.snapshot.or(self.snapshot);
        self.newest_record_ms = step.newest_record_ms.or(self.newest_record_ms);
        self.note = step.note.or(self.note.take());
    }

    /// Counts a committed run in the process's metrics.
    fn record_metrics(&self) {
        use lake_core::metrics as names;
        let table = self.target.clone();
        metrics::counter!(names::TRANSFORM_ROWS_WRITTEN_TOTAL, "table" => table.clone())
            .increment(self.rows_out);
        metrics::counter!(names::TRANSFORM_DUPLICATES_TOTAL, "table" => table.clone())
            .increment(self.duplicates);
        for (rule, count) in &self.quarantined {
            metrics::counter!(names::TRANSFORM_QUARANTINED_TOTAL, "table" => table.clone(), "rule" => rule.clone())
                .increment(*count);
        }
    }
}

async fn load_optional(catalog: &LakeCatalog, ident: &TableIdent) -> Result<Option<Table>> {
    match catalog.rest().load_table(ident).await {
        Ok(table) => Ok(Some(table)),
        Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The source snapshot `target` last consumed from `source`.
fn consumed(target: Option<&Table>, source: &TableIdent) -> Result<Option<i64>> {
    let Some(target) = target else {
        return Ok(None);
    };
    match files::summary_lookup(target, &files::source_key(source)) {
        None => Ok(None),
        Some((_, value)) => value.parse().map(Some).map_err(|error| Error::Position {
            table: target.identifier().to_string(),
            key: files::source_key(source),
            value,
            source: error,
        }),
    }
}

/// How silver and gold files are written (the codec and level are the
/// table's): row groups of 128 k rows, which bound the memory of each open
/// partition and give readers finer pruning.
fn writer_options(distinct: &[String]) -> WriterOptions {
    WriterOptions {
        row_group_rows: 128 * 1024,
        distinct_columns: distinct.to_vec(),
        ..WriterOptions::default()
    }
}

/// Table properties of a model's new table: its dataset, layer, source, and
/// the upkeep the dataset declares for it.
fn table_properties(
    dataset: &DatasetSpec,
    layer: &str,
    source: &TableIdent,
    upkeep: &Upkeep,
    distinct: &[String],
) -> HashMap<String, String> {
    let mut properties = HashMap::from([
        ("lake.dataset".to_string(), dataset.name.clone()),
        ("lake.layer".to_string(), layer.to_string()),
        ("lake.source".to_string(), source.to_string()),
    ]);
    properties.extend(
        owned_properties(upkeep, distinct)
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    properties
}

/// Every property the dataset owns on a model's table: its upkeep and the
/// columns its writers treat as distinct.
fn owned_properties(upkeep: &Upkeep, distinct: &[String]) -> Vec<(&'static str, Option<String>)> {
    let mut properties = upkeep.properties().to_vec();
    properties.push(lake_table::writer::distinct_property(distinct));
    properties
}

/// What `target` has not yet read of `source`.
struct Pending {
    /// The source snapshot `target` last consumed (`None`: never).
    from: Option<i64>,
    /// The source's current snapshot.
    current: i64,
    /// The files appended since `from` (live in `current` when `None`).
    files: Vec<LiveFile>,
}

/// What `target` has not yet read of `source`; `None` when there is
/// nothing new.
async fn pending(source: &Table, target: Option<&Table>) -> Result<Option<Pending>> {
    let Some(current) = source.metadata().current_snapshot_id() else {
        return Ok(None);
    };
    let from = consumed(target, source.identifier())?;
    if from == Some(current) {
        return Ok(None);
    }
    // A first run takes what is live: the history before it may have been
    // expired, and compacted files stand for the appends they replaced.
    let files = match from {
        None => files::live_files(source, Some(current)).await?,
        Some(_) => files::appended_between(source, from, current).await?,
    };
    Ok(Some(Pending {
        from,
        current,
        files,
    }))
}

/// `files`, the bronze files pending from snapshot `from` (exclusive) to
/// `current`, in steps of whole snapshots of about `budget` rows, oldest
/// first, each with the snapshot it reaches (the last one `current`). A
/// snapshot over the budget is a step of its own.
///
/// A step's snapshot becomes the position silver records, so every row
/// appended up to it must be in that step or one before. Files appended
/// since `from` satisfy that at every snapshot. A first run reads the live
/// files instead, and a file that compaction (or any operation but an
/// append) added holds rows of earlier appends: no step ends before the
/// last such file's snapshot.
fn backlog_steps(
    bronze: &Table,
    from: Option<i64>,
    current: i64,
    files: Vec<LiveFile>,
    budget: u64,
) -> Result<Vec<(i64, Vec<LiveFile>)>> {
    let chain = files::snapshots_between(bronze, from, current)?;
    let snapshots: Vec<(i64, bool)> = chain
        .iter()
        .rev()
        .map(|s| {
            let append = matches!(s.summary().operation, iceberg::spec::Operation::Append);
            (s.snapshot_id(), append)
        })
        .collect();
    let files = files
        .into_iter()
        .map(|f| (f.snapshot_id, f.data_file.record_count(), f))
        .collect();
    Ok(group_steps(
        &snapshots,
        current,
        files,
        from.is_none(),
        budget,
    ))
}

/// [`backlog_steps`] over `snapshots` (oldest first, up to `current`: each
/// one's id and whether it was an append) and `files` (each with the
/// snapshot that added it and its rows); `live` when they are a first run's
/// live files.
fn group_steps<F>(
    snapshots: &[(i64, bool)],
    current: i64,
    files: Vec<(i64, u64, F)>,
    live: bool,
    budget: u64,
) -> Vec<(i64, Vec<F>)> {
    let order: HashMap<i64, (usize, bool)> = snapshots
        .iter()
        .enumerate()
        .map(|(i, (id, append))| (*id, (i, *append)))
        .collect();
    let mut earliest_end = 0;
    // At least one slot, for files of snapshots the history no longer has.
    let mut by_snapshot: Vec<(u64, Vec<F>)> = (0..snapshots.len().max(1))
        .map(|_| (0, Vec::new()))
        .collect();
    for (snapshot, rows, file) in files {
        // Files of snapshots no longer in the history (expired, so older
        // than all of it) count as the oldest's.
        let (index, append) = order.get(&snapshot).copied().unwrap_or((0, false));
        if live && !append {
            earliest_end = earliest_end.max(index);
        }
        by_snapshot[index].0 += rows;
        by_snapshot[index].1.push(file);
    }
    let mut steps: Vec<(i64, Vec<F>)> = Vec::new();
    let mut step: Vec<F> = Vec::new();
    let mut rows = 0u64;
    for (index, (more, snapshot_files)) in by_snapshot.into_iter().enumerate() {
        if more > 0 && !step.is_empty() && rows + more > budget && index > earliest_end {
            steps.push((snapshots[index - 1].0, std::mem::take(&mut step)));
            rows = 0;
        }
        rows += more;
        step.extend(snapshot_files);
    }
    match steps.last_mut() {
        // Snapshots after the last step's added nothing to read.
        Some((position, _)) if step.is_empty() => *position = current,
        _ => steps.push((current, step)),
    }
    steps
}

fn session(options: &TransformOptions) -> SessionContext {
    // Joins build on the left (the models put key sets there) and probe the
    // wide side where it streams, without repartitioning it.
    let config = SessionConfig::new()
        .with_target_partitions(options.partitions.max(1))
        .with_repartition_joins(false);
    let ctx = SessionContext::new_with_config(config);
    crate::builtins::register(&ctx);
    crate::pii::register(&ctx, options.pii_key.as_ref());
    ctx
}

async fn plan(
    ctx: &SessionContext,
    model: &str,
    sql: &str,
) -> Result<datafusion::dataframe::DataFrame> {
    ctx.sql(sql).await.map_err(|source| Error::Model {
        model: model.to_string(),
        source,
    })
}

/// A model's result batches, one stream per output partition (each can be
/// consumed on its own task), its errors named after it.
type ModelStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

async fn execute(frame: datafusion::dataframe::DataFrame, model: &str) -> Result<Vec<ModelStream>> {
    let named = |source| Error::Model {
        model: model.to_string(),
        source,
    };
    let task = frame.task_ctx();
    let plan = frame.create_physical_plan().await.map_err(named)?;
    tracing::debug!(
        model,
        plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true),
        "physical plan"
    );
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, Arc::new(task))
        .map_err(named)?;
    Ok(streams
        .into_iter()
        .map(|stream| {
            let model = model.to_string();
            stream
                .map(move |batch| {
                    batch.map_err(|source| Error::Model {
                        model: model.clone(),
                        source,
                    })
                })
                .boxed()
        })
        .collect())
}

/// The Iceberg schema of a model's output: every column optional (a model's
/// nullability is an inference, not a promise), ids assigned in order.
fn table_schema(fields: &[Arc<Field>]) -> Result<Schema> {
    let fields: Vec<Field> = fields
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(
        &ArrowSchema::new(fields),
    )?)
}

/// `batch` as the table's `schema` lays it out: columns matched by name and
/// cast where the types differ (the model may produce e.g. a list with
/// another element name); a column the model no longer returns is null.
fn fit(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            None => Ok(arrow_array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => {
                arrow_cast::cast(column, field.data_type()).map_err(|source| Error::Cast {
                    column: field.name().clone(),
                    from: column.data_type().to_string(),
                    to: field.data_type().to_string(),
                    source,
                })
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A model's table brought to what the model now returns (new columns
/// added; see lake_table::evolve).
async fn follow_model(
    catalog: &LakeCatalog,
    table: Table,
    fields: &[Arc<Field>],
    upkeep: &Upkeep,
    distinct: &[String],
    model: &str,
) -> Result<Table> {
    let wanted = table_schema(fields)?;
    let changes = lake_table::evolve::Changes::AddOnly;
    let table = lake_table::evolve::follow(catalog, table, &wanted, &[], changes, model).await?;
    follow_upkeep(catalog, table, upkeep, distinct, model).await
}

/// Sets the table properties `upkeep` owns as the declaration in `model` says.
async fn follow_upkeep(
    catalog: &LakeCatalog,
    table: Table,
    upkeep: &Upkeep,
    distinct: &[String],
    model: &str,
) -> Result<Table> {
    let properties = owned_properties(upkeep, distinct);
    Ok(lake_table::evolve::follow_properties(catalog, table, &properties, model).await?)
}

/// A batch of `columns` named after `fields`, typed as the arrays are: a
/// plan's declared types can differ from its batches' in nested field names.
fn batch_of(fields: &[Arc<Field>], columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let schema = ArrowSchema::new(
        fields
            .iter()
            .zip(&columns)
            .map(|(field, column)| Field::new(field.name(), column.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

async fn delete_written(table: &Table, files: &[iceberg::spec::DataFile]) {
    let failed = files::delete_data_files(table, files).await;
    if failed > 0 {
        tracing::warn!(table = %table.identifier(), failed, "could not delete uncommitted files");
    }
}

/// Runs a dataset's silver model once.
pub async fn run_silver(
    catalog: &LakeCatalog,
    dataset: &DatasetSpec,
    options: &TransformOptions,
) -> Result<ModelReport> {
    let started = Instant::now();
    let silver = &dataset.silver;
    let mut report = ModelReport {
        target: silver.table.to_string(),
        ..ModelReport::default()
    };
    let bronze_ident = dataset.bronze.table.clone();
    let Some(bronze) = load_optional(catalog, &bronze_ident).await? else {
        report.note = Some(format!(
            "{bronze_ident} does not exist yet: run `lake ingest {}` first",
            dataset.name
        ));
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    let target = load_optional(catalog, &silver.table).await?;
    let quarantine = load_optional(catalog, &silver.quarantine).await?;
    let Some(Pending {
        from,
        current,
        files: new_files,
    }) = pending(&bronze, target.as_ref()).await?
    else {
        // Nothing to read, but a changed declaration still reaches the tables.
        for (table, distinct) in [(target, &silver.distinct[..]), (quarantine, &[][..])] {
            if let Some(table) = table {
                follow_upkeep(catalog, table, &silver.upkeep, distinct, &silver.file).await?;
            }
        }
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    crate::pii::require_key(dataset, options.pii_key.as_ref())?;

    let steps = backlog_steps(
        &bronze,
        from,
        current,
        new_files,
        options.silver_rows_per_commit,
    )?;
    let count = steps.len();
    // Each step commits on the tables as the step before committed them, so
    // a commit by anyone else in between fails the step as it would fail a
    // run.
    let mut tables = (target, quarantine);
    let mut reached = None;
    for (number, (position, files)) in steps.into_iter().enumerate() {
        if count > 1 {
            tracing::info!(
                table = %silver.table,
                step = number + 1,
                of = count,
                bronze_snapshot = position,
                rows = files.iter().map(|f| f.data_file.record_count()).sum::<u64>(),
                files = files.len(),
                "transforming a step of the bronze backlog"
            );
        }
        let step = silver_step(catalog, dataset, options, &bronze, tables, position, files).await;
        match step {
            Ok((step, (target, quarantine))) => {
                report.absorb(step);
                reached = Some(position);
                tables = (Some(target), Some(quarantine));
            }
            Err(error) if number == 0 => return Err(error),
            Err(error) => {
                tracing::warn!(
                    table = %silver.table,
                    committed = number,
                    of = count,
                    "a step of the bronze backlog failed after earlier steps were \
                     committed: the next run continues after them"
                );
                // The ratio's message says what was not committed; the
                // steps before were.
                let kept = match number {
                    1 => "the first was".to_string(),
                    n => format!("the first {n} were"),
                };
                return Err(match error {
                    Error::QuarantineRatio(message) => Error::QuarantineRatio(format!(
                        "{message}; of the backlog's {count} steps, {kept} committed before \
                         it, up to bronze snapshot {}, and the next run continues from there",
                        reached.unwrap_or_default()
                    )),
                    other => other,
                });
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One committed step of a silver run: `files` of `bronze`, all it appended
/// up to snapshot `position` since the step before, read, deduplicated
/// against silver as it stands (with the steps before), checked, and
/// appended with `position` recorded as the bronze snapshot consumed.
/// Returns the step's report and the silver and quarantine tables after it.
async fn silver_step(
    catalog: &LakeCatalog,
    dataset: &DatasetSpec,
    options: &TransformOptions,
    bronze: &Table,
    (target, quarantine): (Option<Table>, Option<Table>),
    position: i64,
    new_files: Vec<LiveFile>,
) -> Result<(ModelReport, (Table, Table))> {
    let silver = &dataset.silver;
    let mut report = ModelReport {
        target: silver.table.to_string(),
        ..ModelReport::default()
    };
    let bronze_ident = dataset.bronze.table.clone();
    let target_ident = silver.table.clone();
    let quarantine_ident = silver.quarantine.clone();
    report.rows_in = new_files.iter().map(|f| f.data_file.record_count()).sum();

    let ctx = session(options);
    let bronze_columns: Vec<String> = bronze
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .filter(|name| !SKIPPED_BRONZE.contains(&name.as_str()))
        .collect();
    let bronze_columns: Vec<&str> = bronze_columns.iter().map(String::as_str).collect();
    ctx.register_table(
        "bronze",
        file_set_table(bronze, &new_files, &bronze_columns, options.partitions)?,
    )?;
    let projected = projection_schema(&ctx, dataset).await?;
    register_existing(
        &ctx,
        dataset,
        &projected,
        target.as_ref(),
        quarantine.as_ref(),
        options,
    )
    .await?;

    // The silver model in two steps (models.rs): which positions are kept,
    // then every new row checked, kept by position as it is written.
    let first_copies = Arc::new(
        FirstCopies::collect(
            &ctx,
            &silver.file,
            &crate::models::first_copies_sql(dataset),
        )
        .await?,
    );
    tracing::debug!(rows = first_copies.len(), "first copies of unseen keys");
    let sql = crate::models::checked_rows_sql(dataset);
    let frame = plan(&ctx, &silver.file, &sql).await?;
    let output = frame.schema().as_arrow().clone();
    let rule_index = output.index_of(RULE)?;
    let warnings_index = output.index_of(WARNINGS).ok();
    let [partition_index, offset_index] = COORDINATES.map(|c| output.index_of(c));
    let (partition_index, offset_index) = (partition_index?, offset_index?);
    let clean_fields: Vec<Arc<Field>> = output
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != rule_index && Some(*i) != warnings_index)
        .map(|(_, f)| f.clone())
        .collect();
    let mut quarantine_fields = clean_fields.clone();
    quarantine_fields.push(Arc::new(Field::new(QUARANTINE_RULE, DataType::Utf8, true)));
    quarantine_fields.push(Arc::new(Field::new(
        QUARANTINED_AT,
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        true,
    )));

    let target = match target {
        Some(table) => {
            follow_model(
                catalog,
                table,
                &clean_fields,
                &silver.upkeep,
                &silver.distinct,
                &silver.file,
            )
            .await?
        }
        None => {
            let schema = table_schema(&clean_fields)?;
            let spec = lake_table::partition_by(&schema, &silver.time_column, Transform::Day)?;
            let properties = table_properties(
                dataset,
                "silver",
                &bronze_ident,
                &silver.upkeep,
                &silver.distinct,
            );
            catalog
                .ensure_table(&target_ident, schema, spec, properties)
                .await?
        }
    };
    let quarantine = match quarantine {
        Some(table) => {
            follow_model(
                catalog,
                table,
                &quarantine_fields,
                &silver.upkeep,
                &[],
                &silver.file,
            )
            .await?
        }
        None => {
            let schema = table_schema(&quarantine_fields)?;
            let spec = lake_table::partition_by(&schema, QUARANTINED_AT, Transform::Day)?;
            let properties =
                table_properties(dataset, "silver", &bronze_ident, &silver.upkeep, &[]);
            catalog
                .ensure_table(&quarantine_ident, schema, spec, properties)
                .await?
        }
    };

    // Each output partition is written by its own task into its own files,
    // so Parquet encoding runs in parallel like the query does.
    let quarantined_at = lake_core::now_micros();
    let dropping: BTreeSet<String> = silver
        .rules
        .iter()
        .filter(|r| r.action == Action::Drop)
        .map(|r| r.name.clone())
        .collect();
    let mut tasks = Vec::new();
    for stream in execute(frame, &silver.file).await? {
        let sink = SilverSink {
            clean: TableWriter::new(&target, writer_options(&silver.distinct)).await?,
            quarantine: TableWriter::new(&quarantine, writer_options(&[])).await?,
            clean_fields: clean_fields.clone(),
            quarantine_fields: quarantine_fields.clone(),
            rule_index,
            warnings_index,
            first_copies: first_copies.clone(),
            partition_index,
            offset_index,
            dropping: dropping.clone(),
            quarantined_at,
            model: silver.file.clone(),
            written: SilverWritten::default(),
        };
        tasks.push(tokio::spawn(sink.drain(stream)));
    }
    let mut written = SilverWritten::default();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(part)) => written.absorb(part),
            Ok(Err(e)) => failure = Some(e),
            Err(source) => {
                failure = Some(Error::Task {
                    model: silver.file.clone(),
                    source,
                })
            }
        }
    }
    if let Some(error) = failure {
        delete_written(&target, &written.clean).await;
        delete_written(&quarantine, &written.quarantine).await;
        return Err(error);
    }
    let SilverWritten {
        clean: clean_files,
        quarantine: quarantine_files,
        rows_out,
        quarantined,
        dropped,
        warned,
    } = written;
    report.rows_out = rows_out;
    report.quarantined = quarantined;
    report.dropped = dropped;
    report.warned = warned;
    report.duplicates = report
        .rows_in
        .saturating_sub(report.rows_out + report.quarantined_total() + report.dropped_total());
    if !report.warned.is_empty() {
        tracing::warn!(
            table = %silver.table,
            rules = %rule_counts(&report.warned),
            "rows kept that broke a warn rule"
        );
    }

    if let Some(ratio) = options.fail_on_quarantine_ratio
        && report.rows_in > 0
    {
        let share = report.quarantined_total() as f64 / report.rows_in as f64;
        if share > ratio {
            delete_written(&target, &clean_files).await;
            delete_written(&quarantine, &quarantine_files).await;
            return Err(Error::QuarantineRatio(format!(
                "{}: {} of {} rows ({:.2} %) broke a rule, over --fail-on-quarantine-ratio {ratio}; \
                 nothing was committed ({})",
                silver.table,
                report.quarantined_total(),
                report.rows_in,
                share * 100.0,
                rule_counts(&report.quarantined)
            )));
        }
    }

    let mut append = Append::new()
        .add_files(clean_files)
        .set(files::source_key(&bronze_ident), position.to_string())
        .set("lake.transform.rows-in", report.rows_in.to_string())
        .set("lake.transform.duplicates", report.duplicates.to_string())
        .expect_parent(target.metadata().current_snapshot_id());
    report.newest_record_ms = files::newest_record_ms_at(bronze, position);
    for (key, value) in files::freshness_summary(report.newest_record_ms) {
        append = append.set(key, value);
    }
    for (prefix, counts) in [
        ("lake.quarantine", &report.quarantined),
        ("lake.dropped", &report.dropped),
        ("lake.warned", &report.warned),
    ] {
        for (rule, count) in counts {
            append = append.set(format!("{prefix}.{rule}"), count.to_string());
        }
    }
    let mut changes = vec![(target, append.into())];
    let unchanged_quarantine = if quarantine_files.is_empty() {
        Some(quarantine)
    } else {
        let parent = quarantine.metadata().current_snapshot_id();
        let append = Append::new()
            .add_files(quarantine_files)
            .set(files::source_key(&bronze_ident), position.to_string())
            .expect_parent(parent);
        changes.push((quarantine, append.into()));
        None
    };
    let mut committed = lake_table::commit_all(catalog, changes).await?.into_iter();
    let missing = || Error::Internal("a committed table was not returned".into());
    let target = committed.next().ok_or_else(missing)?;
    let quarantine = match unchanged_quarantine {
        Some(table) => table,
        None => committed.next().ok_or_else(missing)?,
    };
    report.snapshot = target.metadata().current_snapshot_id();
    report.record_metrics();
    Ok((report, (target, quarantine)))
}

/// Plans the dataset's silver.sql alone over `bronze` and checks it returns
/// what the wrapping needs: the silver key, the time column and the Kafka
/// coordinates, and none of lake's own column names.
pub(crate) async fn projection_schema(
    ctx: &SessionContext,
    dataset: &DatasetSpec,
) -> Result<SchemaRef> {
    let silver = &dataset.silver;
    let frame = plan(ctx, &silver.file, &silver.sql).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let needed = silver
        .key
        .iter()
        .map(String::as_str)
        .chain([silver.time_column.as_str()])
        .chain(COORDINATES);
    for column in needed {
        if schema.field_with_name(column).is_err() {
            return Err(Error::Models(format!(
                "{}: the query returns no column `{column}` (the silver key, time column and \
                 _kafka_partition/_kafka_offset of {} must be among its columns)",
                silver.file, dataset.file
            )));
        }
    }
    for reserved in [RULE, WARNINGS, POSITION] {
        if schema.field_with_name(reserved).is_ok() {
            return Err(Error::Models(format!(
                "{}: `{reserved}` is lake's own column; quality rules belong in {} \
                 ([[silver.rules]])",
                silver.file, dataset.file
            )));
        }
    }
    Ok(schema)
}

/// What silver writers wrote.
#[derive(Default)]
struct SilverWritten {
    clean: Vec<iceberg::spec::DataFile>,
    quarantine: Vec<iceberg::spec::DataFile>,
    rows_out: u64,
    quarantined: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
    warned: BTreeMap<String, u64>,
}

impl SilverWritten {
    fn absorb(&mut self, other: SilverWritten) {
        self.clean.extend(other.clean);
        self.quarantine.extend(other.quarantine);
        self.rows_out += other.rows_out;
        for (mine, theirs) in [
            (&mut self.quarantined, other.quarantined),
            (&mut self.dropped, other.dropped),
            (&mut self.warned, other.warned),
        ] {
            for (rule, n) in theirs {
                *mine.entry(rule).or_default() += n;
            }
        }
    }
}

/// Splits one stream of a silver model's output into clean rows and
/// quarantined ones (with their rule and time), drops the rows a `drop`
/// rule names, counts `warn` rules, and writes both tables.
struct SilverSink {
    clean: TableWriter,
    quarantine: TableWriter,
    clean_fields: Vec<Arc<Field>>,
    quarantine_fields: Vec<Arc<Field>>,
    rule_index: usize,
    warnings_index: Option<usize>,
    /// The rows to write, by their Kafka coordinates at these columns; the
    /// others are duplicates.
    first_copies: Arc<FirstCopies>,
    partition_index: usize,
    offset_index: usize,
    /// Rules whose breakers are discarded rather than quarantined.
    dropping: BTreeSet<String>,
    quarantined_at: i64,
    model: String,
    written: SilverWritten,
}

impl SilverSink {
    async fn drain(mut self, mut stream: ModelStream) -> Result<SilverWritten> {
        let started = Instant::now();
        while let Some(batch) = stream.next().await {
            self.write(&batch?).await?;
        }
        let streamed = started.elapsed();
        self.written.clean = self.clean.close().await?;
        self.written.quarantine = self.quarantine.close().await?;
        tracing::debug!(
            model = %self.model,
            rows = self.written.rows_out,
            streamed_s = streamed.as_secs_f64(),
            closed_s = started.elapsed().as_secs_f64(),
            "silver stream written"
        );
        Ok(self.written)
    }

    fn strings(&self, batch: &RecordBatch, index: usize, column: &str) -> Result<StringArray> {
        let array = arrow_cast::cast(batch.column(index), &DataType::Utf8)?;
        array
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| Error::Models(format!("{}: `{column}` must be a string", self.model)))
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let first = self
            .first_copies
            .mask(batch, self.partition_index, self.offset_index)?;
        let kept = |i: usize| first.value(i);
        let rules = self.strings(batch, self.rule_index, RULE)?;
        if let Some(index) = self.warnings_index {
            let warnings = self.strings(batch, index, WARNINGS)?;
            for (i, names) in warnings.iter().enumerate() {
                let Some(names) = names.filter(|_| kept(i)) else {
                    continue;
                };
                for name in names.split(',') {
                    *self.written.warned.entry(name.to_string()).or_default() += 1;
                }
            }
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut lake_columns = vec![self.rule_index];
        lake_columns.extend(self.warnings_index);
        lake_columns.sort_unstable();
        for index in lake_columns.into_iter().rev() {
            columns.remove(index);
        }
        // One pass over the rows: where each kept row goes, and the counts
        // of the rules they break.
        let mut clean_mask = Vec::with_capacity(rules.len());
        let mut quarantine_mask = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let (clean, quarantined) = match rule {
                _ if !kept(i) => (false, false),
                None => (true, false),
                Some(rule) => {
                    let dropped = self.dropping.contains(rule);
                    let counts = if dropped {
                        &mut self.written.dropped
                    } else {
                        &mut self.written.quarantined
                    };
                    *counts.entry(rule.to_string()).or_default() += 1;
                    (false, !dropped)
                }
            };
            clean_mask.push(clean);
            quarantine_mask.push(quarantined);
        }
        let (clean_mask, quarantine_mask) = (
            arrow_array::BooleanArray::from(clean_mask),
            arrow_array::BooleanArray::from(quarantine_mask),
        );
        let without_rule = batch_of(&self.clean_fields, columns.clone())?;
        let clean = datafusion::arrow::compute::filter_record_batch(&without_rule, &clean_mask)?;
        self.written.rows_out += clean.num_rows() as u64;
        let schema = self.clean.schema().clone();
        self.clean.write(&fit(&clean, &schema)?).await?;
        if quarantine_mask.true_count() > 0 {
            columns.push(Arc::new(rules));
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(vec![self.quarantined_at; batch.num_rows()])
                    .with_timezone("+00:00"),
            ));
            let all = batch_of(&self.quarantine_fields, columns)?;
            let broken = datafusion::arrow::compute::filter_record_batch(&all, &quarantine_mask)?;
            let schema = self.quarantine.schema().clone();
            self.quarantine.write(&fit(&broken, &schema)?).await?;
        }
        Ok(())
    }
}

/// Registers `existing`: the silver key of every row already in the silver
/// table and its quarantine (typed as the projection returns it while
/// neither table exists) — of the files that can hold a duplicate within
/// the dataset's dedup horizon, or of all of them.
async fn register_existing(
    ctx: &SessionContext,
    dataset: &DatasetSpec,
    projected: &SchemaRef,
    target: Option<&Table>,
    quarantine: Option<&Table>,
    options: &TransformOptions,
) -> Result<()> {
    let keys: Vec<&str> = dataset.silver.key.iter().map(String::as_str).collect();
    let windows = match dataset.silver.dedup_horizon {
        Some(horizon)
            if !options.exhaustive_dedup && (target.is_some() || quarantine.is_some()) =>
        {
            Some(new_row_windows(ctx, dataset, horizon).await?)
        }
        _ => None,
    };
    let mut sources = Vec::new();
    for (alias, table) in [
        ("existing_clean", target),
        ("existing_quarantine", quarantine),
    ] {
        if let Some(table) = table {
            let mut live = files::live_files(table, None).await?;
            if let Some(windows) = &windows {
                let all = live.len();
                let field = table
                    .metadata()
                    .current_schema()
                    .field_by_name(&dataset.silver.time_column)
                    .map(|f| f.id);
                live.retain(|file| may_hold_duplicates(file, field, windows));
                tracing::debug!(
                    table = %table.identifier(),
                    files = live.len(),
                    of = all,
                    "existing keys read within the dedup horizon"
                );
            }
            ctx.register_table(
                alias,
                file_set_table(table, &live, &keys, options.partitions)?,
            )?;
            sources.push(alias);
        }
    }
    if sources.is_empty() {
        return register_empty_existing(ctx, dataset, projected);
    }
    let columns = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let union = sources
        .iter()
        .map(|s| format!("SELECT {columns} FROM {s}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let view = ctx.sql(&union).await?;
    ctx.register_table("existing", view.into_view())?;
    Ok(())
}

/// The event-time ranges, in microseconds, an existing copy of a new row's
/// key can lie in: each UTC day the new rows fall in, widened by `horizon`
/// on both sides, overlapping ranges merged. Only the time column is read.
async fn new_row_windows(
    ctx: &SessionContext,
    dataset: &DatasetSpec,
    horizon: Duration,
) -> Result<Vec<(i64, i64)>> {
    const DAY: i64 = 86_400_000_000;
    let time = format!("\"{}\"", dataset.silver.time_column.replace('"', "\"\""));
    let sql = format!(
        "SELECT DISTINCT date_trunc('day', {time}) AS day \
         FROM ({}) AS model WHERE {time} IS NOT NULL",
        crate::models::projection(dataset)
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let widen = i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX / 4);
    let mut days: Vec<i64> = Vec::new();
    for batch in &batches {
        let micros = arrow_cast::cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let micros = arrow_cast::cast(&micros, &DataType::Int64)?;
        let micros = micros
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .ok_or_else(|| Error::Internal("days are not 64-bit".into()))?;
        days.extend(micros.iter().flatten());
    }
    days.sort_unstable();
    let mut windows: Vec<(i64, i64)> = Vec::new();
    for day in days {
        let (start, end) = (
            day.saturating_sub(widen),
            day.saturating_add(DAY).saturating_add(widen),
        );
        match windows.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
            _ => windows.push((start, end)),
        }
    }
    Ok(windows)
}

/// Whether `file` may hold an existing key within `windows`: its time
/// column's range meets one of them, or the file cannot tell (no bounds, or
/// rows without a time, which no window covers).
fn may_hold_duplicates(file: &LiveFile, field: Option<i32>, windows: &[(i64, i64)]) -> bool {
    let Some(field) = field else {
        return true;
    };
    let data = &file.data_file;
    if data.null_value_counts().get(&field).is_none_or(|n| *n > 0) {
        return true;
    }
    let micros = |datum: Option<&iceberg::spec::Datum>| match datum.map(|d| d.literal()) {
        Some(PrimitiveLiteral::Long(v)) => Some(*v),
        Some(PrimitiveLiteral::Int(days)) => Some(i64::from(*days) * 86_400_000_000),
        _ => None,
    };
    let (Some(lower), Some(upper)) = (
        micros(data.lower_bounds().get(&field)),
        micros(data.upper_bounds().get(&field)),
    ) else {
        return true;
    };
    windows
        .iter()
        .any(|(start, end)| lower < *end && upper >= *start)
}

/// `existing` with no rows, its key columns typed as the projection returns
/// them: the first run, and `lake validate`.
pub(crate) fn register_empty_existing(
    ctx: &SessionContext,
    dataset: &DatasetSpec,
    projected: &SchemaRef,
) -> Result<()> {
    let fields = dataset
        .silver
        .key
        .iter()
        .map(|key| {
            projected
                .field_with_name(key)
                .map(|f| Field::new(key, f.data_type().clone(), true))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    ctx.register_table(
        "existing",
        Arc::new(MemTable::try_new(
            Arc::new(ArrowSchema::new(fields)),
            vec![vec![]],
        )?),
    )?;
    Ok(())
}

fn rule_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "no rule broken".into();
    }
    counts
        .iter()
        .map(|(rule, n)| format!("{rule}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL expression numbering `column`'s hour or day since the epoch.
fn grain_key(column: &str, grain: Granularity) -> String {
    format!(
        "CAST(floor(date_part('epoch', \"{column}\") / {}) AS BIGINT)",
        grain.seconds()
    )
}

/// A predicate keeping the rows of `column` whose hour or day is one of
/// `keys` (sorted): runs of consecutive keys become time ranges compared in
/// the column's own type, cheaper per row than numbering each row's hour.
/// `None` when the column is not a microsecond timestamp.
fn time_ranges(
    frame: &datafusion::dataframe::DataFrame,
    column: &str,
    grain: Granularity,
    keys: &[i64],
) -> Result<Option<datafusion::logical_expr::Expr>> {
    use datafusion::logical_expr::{Expr, ident, lit};
    use datafusion::scalar::ScalarValue;
    let field = frame.schema().field_with_unqualified_name(column)?;
    let DataType::Timestamp(TimeUnit::Microsecond, tz) = field.data_type() else {
        return Ok(None);
    };
    let step = grain.seconds() * 1_000_000;
    let at = |key: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(key * step),
            tz.clone(),
        ))
    };
    Ok(Some(
        key_runs(keys)
            .into_iter()
            .map(|(start, end)| {
                ident(column)
                    .gt_eq(at(start))
                    .and(ident(column).lt(at(end + 1)))
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false)),
    ))
}

/// Runs of consecutive `keys` (sorted), as first and last key.
fn key_runs(keys: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &key in keys {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == key => *end = key,
            _ => runs.push((key, key)),
        }
    }
    runs
}

/// [`time_ranges`] as an Iceberg predicate on `table`'s column, for its
/// reader to skip row groups by; `None` when the column is not a
/// microsecond timestamp or there are no keys.
fn time_predicate(
    table: &Table,
    column: &str,
    grain: Granularity,
    keys: &[i64],
) -> Option<iceberg::expr::Predicate> {
    use iceberg::expr::Reference;
    use iceberg::spec::{Datum, PrimitiveType, Type};
    let field = table.metadata().current_schema().field_by_name(column)?;
    let at: fn(i64) -> Datum = match *field.field_type {
        Type::Primitive(PrimitiveType::Timestamptz) => Datum::timestamptz_micros,
        Type::Primitive(PrimitiveType::Timestamp) => Datum::timestamp_micros,
        _ => return None,
    };
    let step = grain.seconds() * 1_000_000;
    key_runs(keys)
        .into_iter()
        .map(|(start, end)| {
            Reference::new(column)
                .greater_than_or_equal_to(at(start * step))
                .and(Reference::new(column).less_than(at((end + 1) * step)))
        })
        .reduce(iceberg::expr::Predicate::or)
}

/// The first partition value of a data file, as its transform's integer.
fn partition_number(file: &iceberg::spec::DataFile) -> Option<i64> {
    match file.partition().fields().first()? {
        Some(Literal::Primitive(PrimitiveLiteral::Int(v))) => Some(i64::from(*v)),
        Some(Literal::Primitive(PrimitiveLiteral::Long(v))) => Some(*v),
        _ => None,
    }
}

/// Runs one of a dataset's gold models once.
pub async fn run_gold(
    catalog: &LakeCatalog,
    dataset: &DatasetSpec,
    model: &GoldSpec,
    options: &TransformOptions,
) -> Result<ModelReport> {
    let started = Instant::now();
    let mut report = ModelReport {
        target: model.table.to_string(),
        ..ModelReport::default()
    };
    let silver_ident = dataset.silver.table.clone();
    let Some(silver) = load_optional(catalog, &silver_ident).await? else {
        report.note = Some(format!(
            "{silver_ident} does not exist yet: it is built from {} once that has rows",
            dataset.bronze.table
        ));
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    let target_ident = model.table.clone();
    let target = load_optional(catalog, &target_ident).await?;
    let Some(Pending {
        current,
        files: new_files,
        ..
    }) = pending(&silver, target.as_ref()).await?
    else {
        if let Some(table) = target {
            follow_upkeep(catalog, table, &model.upkeep, &[], &model.file).await?;
        }
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    let ctx = session(options);
    let time = dataset.silver.time_column.as_str();
    ctx.register_table(
        "changed",
        file_set_table(&silver, &new_files, &[time], options.partitions)?,
    )?;
    let keys = changed_keys(&ctx, time, model.grain).await?;

    // Only the silver files of the days holding a changed key.
    let days: BTreeSet<i64> = keys.iter().map(|&k| day_of(k, model.grain)).collect();
    let live = files::live_files(&silver, Some(current)).await?;
    let inputs: Vec<LiveFile> = live
        .into_iter()
        .filter(|f| partition_number(&f.data_file).is_none_or(|day| days.contains(&day)))
        .collect();
    report.rows_in = inputs.iter().map(|f| f.data_file.record_count()).sum();
    let mut day_rows: BTreeMap<i64, u64> = BTreeMap::new();
    for file in &inputs {
        if let Some(day) = partition_number(&file.data_file) {
            *day_rows.entry(day).or_default() += file.data_file.record_count();
        }
    }
    let shares = rebuild_shares(&keys, model.grain, &day_rows, options.gold_rows_per_query);

    let files_of = |share: &[i64]| -> Vec<LiveFile> {
        let share_days: BTreeSet<i64> = share.iter().map(|&k| day_of(k, model.grain)).collect();
        inputs
            .iter()
            .filter(|f| partition_number(&f.data_file).is_none_or(|day| share_days.contains(&day)))
            .cloned()
            .collect()
    };
    let announce = |n: usize, share: &[i64], files: &[LiveFile]| {
        if shares.len() > 1 {
            tracing::info!(
                model = %model.table,
                share = n + 1,
                of = shares.len(),
                partitions = share.len(),
                first = %partition_label(share.first().copied(), model.grain),
                last = %partition_label(share.last().copied(), model.grain),
                silver_rows = share
                    .iter()
                    .map(|&k| key_rows(k, model.grain, &day_rows))
                    .sum::<u64>(),
                files = files.len(),
                "rebuilding a share of the gold partitions"
            );
        }
    };

    // The first query's output names the gold table's columns.
    let Some(first_share) = shares.first() else {
        return Err(Error::Internal("a gold rebuild without a query".into()));
    };
    let first_files = files_of(first_share);
    announce(0, first_share, &first_files);
    let first = model_frame(&silver, &first_files, first_share, model, time, options).await?;
    let output = first.schema().as_arrow().clone();
    if output.field_with_name(&model.time_column).is_err() {
        return Err(Error::Models(format!(
            "{}: the query returns no column `{}`, the time column its header names",
            model.file, model.time_column
        )));
    }
    let target = match target {
        Some(table) => {
            follow_model(
                catalog,
                table,
                output.fields(),
                &model.upkeep,
                &[],
                &model.file,
            )
            .await?
        }
        None => {
            let schema = table_schema(output.fields())?;
            let transform = match model.grain {
                Granularity::Hour => Transform::Hour,
                Granularity::Day => Transform::Day,
            };
            let spec = lake_table::partition_by(&schema, &model.time_column, transform)?;
            let properties = table_properties(dataset, "gold", &silver_ident, &model.upkeep, &[]);
            catalog
                .ensure_table(&target_ident, schema, spec, properties)
                .await?
        }
    };
    // The shares run one after the other, each with a writer of its own
    // closed before the next starts (a partitioned writer keeps a file open
    // per partition it has seen), so memory holds one share's aggregation
    // and files; all their files go into the one commit, so readers see
    // every partition replaced at once.
    let mut written = Vec::new();
    let mut next = Some(first);
    for (n, share) in shares.iter().enumerate() {
        let frame = match next.take() {
            Some(frame) => Ok(frame),
            None => {
                let files = files_of(share);
                announce(n, share, &files);
                model_frame(&silver, &files, share, model, time, options).await
            }
        };
        match write_share(&target, frame, &model.file).await {
            Ok((rows, files)) => {
                report.rows_out += rows;
                written.extend(files);
            }
            Err(e) => {
                delete_written(&target, &written).await;
                return Err(e);
            }
        }
    }
    report.partitions_rebuilt = keys.len();
    let parent = target.metadata().current_snapshot_id();
    if keys.is_empty() {
        // The new silver snapshots hold no rows: nothing to rebuild, but the
        // progress is recorded so the next run does not look at them again.
        let mut append = Append::new()
            .add_files(written)
            .set(files::source_key(&silver_ident), current.to_string())
            .expect_parent(parent);
        report.newest_record_ms = files::newest_record_ms(&silver);
        for (key, value) in files::freshness_summary(report.newest_record_ms) {
            append = append.set(key, value);
        }
        let committed = lake_table::commit(catalog, &target, append).await?;
        report.snapshot = committed.metadata().current_snapshot_id();
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let replaced: BTreeSet<i64> = keys.iter().copied().collect();
    let mut overwrite = Overwrite::new(FileSelector::matching(move |file| {
        partition_number(file).is_some_and(|p| replaced.contains(&p))
    }))
    .add_files(written)
    .set(files::source_key(&silver_ident), current.to_string())
    .set(
        "lake.transform.partitions",
        report.partitions_rebuilt.to_string(),
    )
    .expect_parent(parent);
    report.newest_record_ms = files::newest_record_ms(&silver);
    for (key, value) in files::freshness_summary(report.newest_record_ms) {
        overwrite = overwrite.set(key, value);
    }
    let committed = lake_table::commit(catalog, &target, overwrite).await?;
    report.snapshot = committed.metadata().current_snapshot_id();
    report.elapsed = started.elapsed();
    report.record_metrics();
    Ok(report)
}

/// Runs one share of a gold rebuild into new files of `target`: the rows
/// and files written. `frame` is the share's query, or why planning it
/// failed, so that the caller's clean-up after a failed share covers both.
async fn write_share(
    target: &Table,
    frame: Result<datafusion::dataframe::DataFrame>,
    model: &str,
) -> Result<(u64, Vec<iceberg::spec::DataFile>)> {
    let frame = frame?;
    let mut writer = TableWriter::new(target, writer_options(&[])).await?;
    let schema = writer.schema().clone();
    // Gold results are small: one writer takes every partition's batches.
    let mut stream = futures::stream::select_all(execute(frame, model).await?);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        writer.write(&fit(&batch, &schema)?).await?;
    }
    let rows = writer.rows();
    Ok((rows, writer.close().await?))
}

/// The query of `model` over the silver rows of its hours or days `keys`
/// (sorted), read from `files`.
async fn model_frame(
    silver: &Table,
    files: &[LiveFile],
    keys: &[i64],
    model: &GoldSpec,
    time: &str,
    options: &TransformOptions,
) -> Result<datafusion::dataframe::DataFrame> {
    let ctx = session(options);
    // The day files of a share hold other hours too (or, for a day split
    // into shares, the other shares' hours): their row groups outside the
    // share's time ranges are skipped by statistics rather than read.
    let scan = match time_predicate(silver, time, model.grain, keys) {
        Some(predicate) => file_set_table_where(silver, files, options.partitions, &predicate)?,
        None => file_set_table(silver, files, &[], options.partitions)?,
    };
    ctx.register_table("silver_files", scan)?;
    let silver_files = ctx.table("silver_files").await?;
    let view = match time_ranges(&silver_files, time, model.grain, keys)? {
        Some(predicate) => silver_files.filter(predicate)?,
        None => {
            let key_list = if keys.is_empty() {
                "NULL".to_string()
            } else {
                keys.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            ctx.sql(&format!(
                "SELECT * FROM silver_files WHERE {} IN ({key_list})",
                grain_key(time, model.grain)
            ))
            .await?
        }
    };
    ctx.register_table("silver", view.into_view())?;
    plan(&ctx, &model.file, &model.sql).await
}

/// The changed hours or days `keys` (sorted) in runs of consecutive keys
/// whose silver rows stay within `budget`, each run one query: a gold
/// model's memory (its aggregation state) follows the rows it reads, so a
/// first build or backfill over a large silver table is done a share at a
/// time. Rows are estimated from the row counts of the day partitions
/// holding the keys (an hour a 24th of its day). A run takes whole days,
/// since each reads its days' files in full; only a day over the budget on
/// its own is split into runs of its hours. Keys whose day has no
/// partitioned files count for nothing. Never empty: no keys is one empty
/// run, so the model still runs once.
fn rebuild_shares(
    keys: &[i64],
    grain: Granularity,
    day_rows: &BTreeMap<i64, u64>,
    budget: u64,
) -> Vec<Vec<i64>> {
    let mut shares: Vec<Vec<i64>> = Vec::new();
    let mut current: Vec<i64> = Vec::new();
    let mut rows = 0u64;
    for day_keys in keys.chunk_by(|a, b| day_of(*a, grain) == day_of(*b, grain)) {
        let Some(&key) = day_keys.first() else {
            continue;
        };
        let each = key_rows(key, grain, day_rows);
        let total = each.saturating_mul(day_keys.len() as u64);
        if total > budget && day_keys.len() > 1 {
            if !current.is_empty() {
                shares.push(std::mem::take(&mut current));
            }
            rows = 0;
            let per_run = usize::try_from(budget / each.max(1)).unwrap_or(usize::MAX);
            shares.extend(day_keys.chunks(per_run.max(1)).map(<[i64]>::to_vec));
            continue;
        }
        if !current.is_empty() && rows.saturating_add(total) > budget {
            shares.push(std::mem::take(&mut current));
            rows = 0;
        }
        current.extend_from_slice(day_keys);
        rows = rows.saturating_add(total);
    }
    if !current.is_empty() || shares.is_empty() {
        shares.push(current);
    }
    shares
}

/// The silver rows of an hour or day, estimated from the row counts of
/// the day partitions: an hour is a 24th of its day.
fn key_rows(key: i64, grain: Granularity, day_rows: &BTreeMap<i64, u64>) -> u64 {
    let day = day_rows.get(&day_of(key, grain)).copied().unwrap_or(0);
    match grain {
        Granularity::Hour => day.div_ceil(24),
        Granularity::Day => day,
    }
}

/// The day of an hour or day number.
fn day_of(key: i64, grain: Granularity) -> i64 {
    match grain {
        Granularity::Hour => key.div_euclid(24),
        Granularity::Day => key,
    }
}

/// A gold partition's hour (`2025-01-01 05h`) or day (`2025-01-01`) for the
/// log.
fn partition_label(key: Option<i64>, grain: Granularity) -> String {
    let Some(key) = key else {
        return "none".to_string();
    };
    let day = day_of(key, grain);
    let date = arrow_array::temporal_conversions::timestamp_s_to_datetime(day * 86_400)
        .map_or_else(|| format!("day {day}"), |t| t.date().to_string());
    match grain {
        Granularity::Hour => format!("{date} {:02}h", key.rem_euclid(24)),
        Granularity::Day => date,
    }
}

/// The distinct hour or day numbers of `column` in `changed`.
async fn changed_keys(ctx: &SessionContext, column: &str, grain: Granularity) -> Result<Vec<i64>> {
    let batches = ctx
        .sql(&format!(
            "SELECT DISTINCT {} AS k FROM changed WHERE \"{column}\" IS NOT NULL ORDER BY k",
            grain_key(column, grain)
        ))
        .await?
        .collect()
        .await?;
    let mut keys = Vec::new();
    for batch in batches {
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Internal("changed keys are not integers".into()))?;
        keys.extend(values.iter().flatten());
    }
    Ok(keys)
}

/// Which layers `lake transform` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    Silver,
    Gold,
    /// Silver, then gold: gold reads what silver just committed.
    All,
}

/// Hears about each model as a run goes (a progress display).
pub trait Observer {
    fn starting(&self, _target: &str) {}
    fn finished(&self, _report: &ModelReport) {}
}

/// Nobody listening.
pub struct Quiet;

impl Observer for Quiet {}

/// Runs the models of `datasets`: every silver model, then every gold model
/// (each reads the silver table its dataset's silver model just updated).
pub async fn run_layers(
    catalog: &LakeCatalog,
    datasets: &[Arc<DatasetSpec>],
    layers: Layers,
    options: &TransformOptions,
    observer: &dyn Observer,
) -> Result<Vec<ModelReport>> {
    let mut reports = Vec::new();
    if matches!(layers, Layers::Silver | Layers::All) {
        for dataset in datasets {
            observer.starting(&dataset.silver.table.to_string());
            let report = run_silver(catalog, dataset, options).await?;
            observer.finished(&report);
            reports.push(report);
        }
    }
    if matches!(layers, Layers::Gold | Layers::All) {
        let models: Vec<(Arc<DatasetSpec>, GoldSpec)> = datasets
            .iter()
            .flat_map(|d| d.gold.iter().map(|m| (d.clone(), m.clone())))
            .collect();
        reports.extend(run_gold_models(catalog, models, options, observer).await?);
    }
    Ok(reports)
}

/// Runs gold models up to twice `options.partitions` at a time, each on a
/// task of its own with its share of the partitions (one each when there
/// are as many models as cores or more). Gold models read silver only,
/// never each other.
/// With only as many models in flight as cores, the longest would end
/// alone on one core while the others idle; with more, the cores take
/// turns among them until the last ends. Reports come back in the models'
/// order. After a failure the models already running finish (none is cut
/// off mid-commit) and the first error is returned.
async fn run_gold_models(
    catalog: &LakeCatalog,
    models: Vec<(Arc<DatasetSpec>, GoldSpec)>,
    options: &TransformOptions,
    observer: &dyn Observer,
) -> Result<Vec<ModelReport>> {
    let width = models.len().clamp(1, 2 * options.partitions.max(1));
    // A model on one partition aggregates its rows once; on two it
    // aggregates them partially, hashes and repartitions the groups, and
    // aggregates them again. The bound keeps what the models hold at once
    // (a scan, an aggregate and a writer each) from growing with their number.
    let per_model = TransformOptions {
        partitions: (options.partitions / width).max(1),
        ..options.clone()
    };
    let mut pending = models.into_iter().enumerate();
    let mut running = tokio::task::JoinSet::new();
    let mut start_next = |running: &mut tokio::task::JoinSet<_>| {
        if let Some((index, (dataset, model))) = pending.next() {
            observer.starting(&model.table.to_string());
            let (catalog, options) = (catalog.clone(), per_model.clone());
            running.spawn(
                async move { (index, run_gold(&catalog, &dataset, &model, &options).await) },
            );
            true
        } else {
            false
        }
    };
    for _ in 0..width {
        start_next(&mut running);
    }
    let mut reports = Vec::new();
    let mut failure = None;
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((index, Ok(report))) => {
                observer.finished(&report);
                reports.push((index, report));
            }
            Ok((_, Err(e))) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(Error::Internal(format!("a gold model's task failed: {e}")));
            }
        }
        if failure.is_none() {
            start_next(&mut running);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    reports.sort_by_key(|(index, _)| *index);
    Ok(reports.into_iter().map(|(_, report)| report).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_keys_number_hours_and_days() {
        assert_eq!(
            grain_key("created_at", Granularity::Hour),
            "CAST(floor(date_part('epoch', \"created_at\") / 3600) AS BIGINT)"
        );
        assert_eq!(Granularity::Day.seconds(), 86_400);
    }

    #[test]
    fn rebuilds_run_in_shares_of_consecutive_keys_within_the_budget() {
        // Days 100, 101 and 103 hold 2.4 M, 1.2 M and 4.8 M rows.
        let days = BTreeMap::from([(100, 2_400_000), (101, 1_200_000), (103, 4_800_000)]);
        let shares = |keys: &[i64], grain, budget| rebuild_shares(keys, grain, &days, budget);

        let all_days = [100, 101, 103];
        assert_eq!(
            shares(&all_days, Granularity::Day, 4_000_000),
            vec![vec![100, 101], vec![103]],
            "a day over the budget is a share of its own"
        );
        assert_eq!(
            shares(&all_days, Granularity::Day, 1),
            vec![vec![100], vec![101], vec![103]]
        );
        assert_eq!(
            shares(&all_days, Granularity::Day, u64::MAX),
            vec![all_days.to_vec()]
        );

        // Hours are a 24th of their day: 100 k rows each on day 100, 50 k
        // on day 101, none known for day 102. Day 100's four hours are over
        // the budget on their own, so only they are split.
        let hours: Vec<i64> = (100 * 24 + 20..101 * 24 + 4)
            .chain([102 * 24, 102 * 24 + 1])
            .collect();
        assert_eq!(
            shares(&hours, Granularity::Hour, 300_000),
            vec![
                vec![2420, 2421, 2422],
                vec![2423],
                vec![2424, 2425, 2426, 2427, 2448, 2449],
            ]
        );
        assert_eq!(
            shares(&hours, Granularity::Hour, 500_000),
            vec![
                vec![2420, 2421, 2422, 2423],
                vec![2424, 2425, 2426, 2427, 2448, 2449],
            ],
            "whole days, where they fit"
        );

        assert_eq!(
            shares(&[], Granularity::Hour, 1),
            vec![Vec::<i64>::new()],
            "no keys still run the model once"
        );
    }

    /// Steps as the snapshot each reaches and the names of its files.
    fn steps_of(
        snapshots: &[(i64, bool)],
        files: &[(i64, u64, &'static str)],
        live: bool,
        budget: u64,
    ) -> Vec<(i64, Vec<&'static str>)> {
        let current = snapshots.last().unwrap().0;
        group_steps(snapshots, current, files.to_vec(), live, budget)
    }

    #[test]
    fn a_backlog_is_split_at_snapshots_within_the_budget() {
        let appends = [(1, true), (2, true), (3, true), (4, true)];
        let files = [(1, 3, "a"), (2, 3, "b"), (3, 3, "c"), (4, 3, "d")];
        assert_eq!(
            steps_of(&appends, &files, false, 6),
            [(2, vec!["a", "b"]), (4, vec!["c", "d"])]
        );
        // Within the budget: one step, at the current snapshot.
        assert_eq!(
            steps_of(&appends, &files, false, 12),
            [(4, vec!["a", "b", "c", "d"])]
        );
        // A snapshot over the budget is a step of its own.
        let files = [(1, 3, "a"), (2, 10, "b"), (3, 3, "c")];
        assert_eq!(
            steps_of(&appends, &files, false, 6),
            [(1, vec!["a"]), (2, vec!["b"]), (4, vec!["c"])]
        );
        // Snapshots without files join the step after them, and the last
        // step reaches the current snapshot.
        let files = [(2, 3, "b"), (3, 3, "c")];
        assert_eq!(
            steps_of(&appends, &files, false, 1),
            [(2, vec!["b"]), (4, vec!["c"])]
        );
        // Files of expired snapshots are the oldest.
        let files = [(2, 3, "b"), (99, 3, "x")];
        assert_eq!(
            steps_of(&appends, &files, true, 1),
            [(1, vec!["x"]), (4, vec!["b"])]
        );
    }

    #[test]
    fn a_first_run_ends_no_step_before_a_compaction() {
        // Snapshot 3 compacted the files of 1 (and more); 2's survived.
        let history = [(1, true), (2, true), (3, false), (4, true)];
        let files = [(2, 3, "b"), (3, 6, "compacted"), (4, 3, "d")];
        assert_eq!(
            steps_of(&history, &files, true, 1),
            [(3, vec!["b", "compacted"]), (4, vec!["d"])]
        );
        // Files appended since a position hold only their own rows.
        assert_eq!(
            steps_of(&history, &files, false, 1),
            [(2, vec!["b"]), (3, vec!["compacted"]), (4, vec!["d"])]
        );
    }

    #[test]
    fn partitions_are_labelled_by_their_date_and_hour() {
        assert_eq!(
            partition_label(Some(20_089 * 24 + 5), Granularity::Hour),
            "2025-01-01 05h"
        );
        assert_eq!(
            partition_label(Some(20_089), Granularity::Day),
            "2025-01-01"
        );
        assert_eq!(partition_label(None, Granularity::Day), "none");
    }
}
