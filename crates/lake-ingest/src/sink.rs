//! One bronze table's writing side: streams decoded rows into open Parquet
//! files, and commits an epoch's files with its Kafka offsets.
//!
//! An epoch's commit asserts the snapshot it was built on. When another
//! commit got there first, the table's offsets decide: if every partition of
//! the epoch is still where the epoch started, the commit rebases; if any has
//! moved (another process owns it now, or this one is a zombie), the epoch's
//! files are deleted and its partitions rewound to the table's offsets.

use std::sync::Arc;
use std::time::Instant;

use arrow_schema::SchemaRef;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use lake_core::metrics as names;
use lake_table::{Append, LakeCatalog, Op, TableWriter, WriterOptions};
use tokio::sync::{mpsc, oneshot};

use crate::bronze::{Offsets, Route, ensure_rejects, format_offsets, table_offsets};
use crate::decode::{Decoded, RecordDecoder, Rejected, rejects_batch};
use crate::error::{Error, Result};
use crate::status::IngestStatus;

/// Rows per Parquet row group while ingesting: bounds what an open file
/// holds in memory.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// What the consumer asks of a sink.
pub(crate) enum Command {
    /// Write these rows (and dead letters), decoded by the consumer.
    Write(Decoded),
    /// The consumer's decoder found fields the table lacks: add them, and
    /// answer with a decoder for the new schema.
    Evolve {
        fields: Vec<arrow_schema::Field>,
        reply: oneshot::Sender<Result<RecordDecoder>>,
    },
    /// Commit the epoch: `start` is where each of its partitions began (as
    /// the table recorded), `end` the next offset after its last record.
    Commit {
        start: Offsets,
        end: Offsets,
        reply: oneshot::Sender<CommitOutcome>,
    },
    /// Drop the epoch: delete its files.
    Abort { reply: oneshot::Sender<()> },
    /// The table's current offsets for this topic.
    Offsets {
        reply: oneshot::Sender<Result<Offsets>>,
    },
}

/// How a commit ended.
#[derive(Debug)]
pub(crate) enum CommitOutcome {
    /// Committed; the table's offsets for the topic are now these.
    Committed {
        offsets: Offsets,
        rows: u64,
        rejected: u64,
    },
    /// Another writer moved a partition of the epoch: nothing committed, the
    /// epoch's files deleted; resume each partition at these offsets.
    Rewind {
        to: Offsets,
    },
    Failed(Error),
}

/// Starts a table's writer (writing and committing, beside the consumer
/// that decodes) and returns where the consumer sends commands and the
/// handle to await for the totals.
pub(crate) fn spawn(
    sink: Sink,
    queue: usize,
) -> (
    mpsc::Sender<Command>,
    tokio::task::JoinHandle<Result<SinkTotals>>,
) {
    let (commands, received) = mpsc::channel(queue);
    (commands, tokio::spawn(sink.serve(received)))
}

/// Counts a sink reports when it stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkTotals {
    pub rows: u64,
    pub rejected: u64,
    pub commits: u64,
    pub rewinds: u64,
    /// Time spent writing and committing (the rest is waiting).
    pub writing: std::time::Duration,
    pub committing: std::time::Duration,
}

struct Epoch {
    writer: TableWriter,
    /// Files of writers closed early (after a schema change).
    files: Vec<DataFile>,
    rejected: Vec<Rejected>,
    rows: u64,
}

pub(crate) struct Sink {
    route: Route,
    catalog: LakeCatalog,
    bronze: Table,
    rejects: Option<Table>,
    decoder: RecordDecoder,
    evolve: bool,
    /// Columns written without dictionary or statistics.
    distinct: Vec<String>,
    epoch: Option<Epoch>,
    totals: SinkTotals,
    status: Arc<IngestStatus>,
}

impl Sink {
    pub async fn open(
        catalog: LakeCatalog,
        route: Route,
        bronze: Table,
        evolve: bool,
        status: Arc<IngestStatus>,
    ) -> Result<Self> {
        let decoder = decoder_for(&route, &bronze, evolve)?;
        let distinct = crate::bronze::distinct_columns(&route.dataset);
        Ok(Self {
            distinct,
            route,
            catalog,
            bronze,
            rejects: None,
            decoder,
            evolve,
            epoch: None,
            totals: SinkTotals::default(),
            status,
        })
    }

    /// A decoder for the table's current schema.
    pub fn decoder(&self) -> RecordDecoder {
        self.decoder.clone()
    }

    /// Writes and commits until the consumer hangs up.
    async fn serve(mut self, mut commands: mpsc::Receiver<Command>) -> Result<SinkTotals> {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Write(decoded) => self.write(decoded).await?,
                Command::Evolve { fields, reply } => {
                    let result = self.evolve_schema(fields).await;
                    let answer = match result {
                        Ok(()) => Ok(self.decoder.clone()),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
                Command::Commit { start, end, reply } => {
                    let started = Instant::now();
                    let outcome = self.commit(start, end).await;
                    self.totals.committing += started.elapsed();
                    if let CommitOutcome::Failed(e) = outcome {
                        let message = e.to_string();
                        let _ = reply.send(CommitOutcome::Failed(e));
                        return Err(Error::Invalid(format!(
                            "commit to {} failed: {message}",
                            self.route.table
                        )));
                    }
                    let _ = reply.send(outcome);
                }
                Command::Abort { reply } => {
                    self.abort().await;
                    let _ = reply.send(());
                }
                Command::Offsets { reply } => {
                    let offsets = self.reload_offsets().await;
                    let _ = reply.send(offsets);
                }
            }
        }
        self.abort().await;
        Ok(self.totals)
    }

    async fn reload_offsets(&mut self) -> Result<Offsets> {
        self.bronze = self.catalog.load(&self.route.table).await?;
        table_offsets(&self.bronze, &self.route)
    }

    async fn epoch(&mut self) -> Result<&mut Epoch> {
        if self.epoch.is_none() {
            self.epoch = Some(Epoch {
                writer: new_writer(&self.bronze, &self.distinct).await?,
                files: Vec::new(),
                rejected: Vec::new(),
                rows: 0,
            });
        }
        self.epoch
            .as_mut()
            .ok_or_else(|| Error::Invalid("epoch missing".into()))
    }

    async fn write(&mut self, decoded: Decoded) -> Result<()> {
        let started = Instant::now();
        if !decoded.rejected.is_empty() {
            metrics::counter!(names::INGEST_REJECTS_TOTAL, "table" => self.route.table.to_string())
                .increment(decoded.rejected.len() as u64);
        }
        let epoch = self.epoch().await?;
        for batch in &decoded.bronze {
            epoch.writer.write(batch).await?;
        }
        epoch.rows += decoded.rows() as u64;
        epoch.rejected.extend(decoded.rejected);
        self.totals.writing += started.elapsed();
        Ok(())
    }

    /// Adds `fields` as optional top-level columns, then writes on with the
    /// new schema (files written so far keep the old one, which readers
    /// project).
    async fn evolve_schema(&mut self, fields: Vec<arrow_schema::Field>) -> Result<()> {
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        tracing::info!(table = %self.route.table, fields = ?names, "adding columns for new fields");
        self.bronze = crate::evolve::add_columns(&self.catalog, &self.bronze, &fields).await?;
        self.decoder = decoder_for(&self.route, &self.bronze, self.evolve)?;
        if let Some(epoch) = self.epoch.as_mut() {
            let fresh = new_writer(&self.bronze, &self.distinct).await?;
            let old = std::mem::replace(&mut epoch.writer, fresh);
            epoch.files.extend(old.close().await?);
        }
        Ok(())
    }

    async fn commit(&mut self, start: Offsets, end: Offsets) -> CommitOutcome {
        match self.try_commit(start, end).await {
            Ok(outcome) => outcome,
            Err(e) => CommitOutcome::Failed(e),
        }
    }

    async fn try_commit(&mut self, start: Offsets, end: Offsets) -> Result<CommitOutcome> {
        let started = Instant::now();
        let (files, rejected, rows) = match self.epoch.take() {
            Some(epoch) => {
                let mut files = epoch.files;
                files.extend(epoch.writer.close().await?);
                (files, epoch.rejected, epoch.rows)
            }
            None => (Vec::new(), Vec::new(), 0),
        };
        let rejects_files = if rejected.is_empty() {
            Vec::new()
        } else {
            self.write_rejects(&rejected).await?
        };

        loop {
            let mut offsets = table_offsets(&self.bronze, &self.route)?;
            let stale: Vec<i32> = end
                .keys()
                .filter(|p| offsets.get(p) != start.get(p))
                .copied()
                .collect();
            if !stale.is_empty() {
                tracing::warn!(
                    table = %self.route.table,
                    partitions = ?stale,
                    "another writer committed these partitions first; discarding this epoch"
                );
                delete_files(&self.bronze, &files).await;
                if let Some(rejects) = &self.rejects {
                    delete_files(rejects, &rejects_files).await;
                }
                self.totals.rewinds += 1;
                let to = end
                    .keys()
                    .filter_map(|p| offsets.get(p).or(start.get(p)).map(|o| (*p, *o)))
                    .collect();
                return Ok(CommitOutcome::Rewind { to });
            }
            offsets.extend(end.iter().map(|(p, o)| (*p, *o)));
            let mut append = Append::new()
                .add_files(files.clone())
                .set(self.route.offsets_key(), format_offsets(&offsets))
                .expect_parent(self.bronze.metadata().current_snapshot_id());
            let newest = newest_record_ms(&self.bronze, &files)
                .max(lake_table::files::newest_record_ms(&self.bronze));
            for (key, value) in lake_table::files::freshness_summary(newest) {
                append = append.set(key, value);
            }
            let result = match &self.rejects {
                Some(rejects) if !rejects_files.is_empty() => lake_table::commit_all(
                    &self.catalog,
                    vec![
                        (self.bronze.clone(), Op::from(append)),
                        (
                            rejects.clone(),
                            Append::new().add_files(rejects_files.clone()).into(),
                        ),
                    ],
                )
                .await
                .map(|tables| {
                    let mut tables = tables.into_iter();
                    (tables.next(), tables.next())
                }),
                _ => append
                    .commit(&self.catalog, &self.bronze)
                    .await
                    .map(|table| (Some(table), None)),
            };
            match result {
                Ok((bronze, rejects)) => {
                    if let Some(table) = bronze {
                        self.bronze = table;
                    }
                    // Kept current too: the next epoch's rejects commit would
                    // otherwise start from a stale snapshot and lose a round
                    // to the catalog's conflict check every time.
                    if let Some(table) = rejects {
                        self.rejects = Some(table);
                    }
                    self.totals.commits += 1;
                    self.totals.rows += rows;
                    self.totals.rejected += rejected.len() as u64;
                    self.status.committed(rows, rejected.len() as u64);
                    metrics::histogram!(names::INGEST_COMMIT_DURATION_SECONDS, "table" => self.route.table.to_string())
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(table = %self.route.table, rows, rejected = rejected.len(), "epoch committed");
                    return Ok(CommitOutcome::Committed {
                        offsets,
                        rows,
                        rejected: rejected.len() as u64,
                    });
                }
                Err(
                    e
                    @ (lake_table::Error::Conflict { .. } | lake_table::Error::FileNotLive { .. }),
                ) => {
                    // Reload and decide again: rebase, or rewind.
                    tracing::debug!(table = %self.route.table, error = %e, "commit conflict");
                    self.bronze = match e.current_table() {
                        Some(current) => current.clone(),
                        None => self.catalog.load(&self.route.table).await?,
                    };
                }
                // Not deleting the files: when the outcome is unknown the
                // commit may have landed. Leftovers are orphans.
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn write_rejects(&mut self, rejected: &[Rejected]) -> Result<Vec<DataFile>> {
        if self.rejects.is_none() {
            self.rejects = Some(ensure_rejects(&self.catalog, &self.route).await?);
        }
        let rejects = self
            .rejects
            .as_ref()
            .ok_or_else(|| Error::Invalid("rejects table missing".into()))?;
        let schema: SchemaRef = Arc::new(iceberg::arrow::schema_to_arrow_schema(
            rejects.metadata().current_schema(),
        )?);
        let batch = rejects_batch(&schema, &self.route.topic, rejected, now_micros())?;
        let distinct = [
            crate::bronze::RAW.to_string(),
            crate::bronze::ERROR.to_string(),
        ];
        let mut writer = new_writer(rejects, &distinct).await?;
        writer.write(&batch).await?;
        Ok(writer.close().await?)
    }

    async fn abort(&mut self) {
        if let Some(epoch) = self.epoch.take() {
            let mut files = epoch.files;
            match epoch.writer.close().await {
                Ok(closed) => files.extend(closed),
                Err(e) => tracing::debug!(error = %e, "closing an aborted epoch's writer"),
            }
            delete_files(&self.bronze, &files).await;
        }
    }
}

fn decoder_for(route: &Route, bronze: &Table, evolve: bool) -> Result<RecordDecoder> {
    let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(
        bronze.metadata().current_schema(),
    )?);
    Ok(RecordDecoder::new(
        &route.dataset,
        &route.topic,
        schema,
        evolve,
    ))
}

/// Writer settings for bronze: no dictionary or statistics for the columns
/// whose values are all distinct (the codec and level are the table's).
pub fn bronze_writer_options(distinct: &[String]) -> WriterOptions {
    WriterOptions {
        row_group_rows: ROW_GROUP_ROWS,
        distinct_columns: distinct.to_vec(),
        ..WriterOptions::default()
    }
}

async fn new_writer(table: &Table, distinct: &[String]) -> Result<TableWriter> {
    Ok(TableWriter::new(table, bronze_writer_options(distinct)).await?)
}

/// Deletes files an abandoned epoch wrote. Best effort: what remains is an
/// orphan for `lake maintain remove-orphan-files`.
async fn delete_files(table: &Table, files: &[DataFile]) {
    lake_table::files::delete_data_files(table, files).await;
}

pub(crate) use lake_core::now_micros;

/// The newest Kafka record timestamp (ms) among `files`, from the upper
/// bounds of their `_kafka_timestamp` column.
fn newest_record_ms(bronze: &Table, files: &[DataFile]) -> Option<i64> {
    let field = bronze
        .metadata()
        .current_schema()
        .field_by_name(lake_spec::columns::KAFKA_TIMESTAMP)?
        .id;
    files
        .iter()
        .filter_map(|file| match file.upper_bounds().get(&field)?.literal() {
            iceberg::spec::PrimitiveLiteral::Long(micros) => Some(micros / 1000),
            _ => None,
        })
        .max()
}
