//! `lake run`: one process that keeps the whole medallion current.
//!
//! Ingest runs as `lake ingest` does, continuously and exactly once. Every
//! bronze commit wakes the transforms, which run as `lake transform all`
//! does — silver, then gold, over what is new since the snapshots each table
//! last consumed — so gold follows a commit within one round, not on a clock.
//! Between rounds, the small files that frequent commits leave in bronze and
//! silver are compacted to a modest size (128 MiB) (a replace rebases over ingest's
//! appends; silver's compaction never races its transform, as both run on
//! this loop). Gold needs none: each round overwrites the partitions it
//! rebuilds.
//!
//! Every step is the separate command's own library call, and each commits
//! atomically with what it consumed, so a kill at any moment leaves every
//! table at a commit and a restart goes on from there: the exactly-once and
//! idempotence guarantees are those of `lake ingest` and `lake transform`.

pub mod error;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iceberg::TableIdent;
use lake_core::config::StorageConfig;
use lake_core::metrics as names;
use lake_ingest::{IngestOptions, IngestSummary};
use lake_maintain::{CompactOptions, Done, Task};
use lake_spec::{DatasetSpec, Pipeline};
use lake_table::LakeCatalog;
use lake_transform::{Layers, TransformOptions};
use rdkafka::ClientConfig;
use tokio::sync::watch;

pub use error::{Error, Result};
pub use status::RunStatus;

/// How often the freshness gauge is set: it ages between commits, so it is
/// published on a clock rather than on each commit.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Ingest as `lake ingest` runs it; its `status` is replaced by
    /// `status.ingest` so that one probe sees everything.
    pub ingest: IngestOptions,
    /// The datasets whose silver and gold tables are kept current (every
    /// dataset ingest reads when empty).
    pub datasets: Vec<String>,
    pub transform: TransformOptions,
    /// How the small files of bronze and silver are compacted between
    /// rounds; its target is a tier below the tables' own (daily
    /// `lake maintain all` merges further), so a file that reached it is
    /// never rewritten again by the run.
    pub compact: CompactOptions,
    /// Compaction is considered after a round at most this often.
    pub compact_every: Duration,
    /// How long failing transform rounds are retried before the run gives up.
    pub retry_budget: Duration,
    pub status: Arc<RunStatus>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            ingest: IngestOptions::default(),
            datasets: Vec::new(),
            transform: TransformOptions::default(),
            compact: CompactOptions {
                target_file_size: Some(128 * 1024 * 1024),
                min_input_files: 4,
                ..CompactOptions::default()
            },
            compact_every: Duration::from_secs(60),
            retry_budget: Duration::from_secs(300),
            status: Arc::default(),
        }
    }
}

/// What a run did, for its last line.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub ingest: IngestSummary,
    /// Transform rounds that ended, and those that failed and were retried.
    pub rounds: u64,
    pub failed_rounds: u64,
    /// Rows each silver and gold table received over the run.
    pub rows: BTreeMap<String, u64>,
    /// Compaction passes, and the small files they merged.
    pub compactions: u64,
    pub files_compacted: u64,
    /// Freshness of each silver and gold table at the end.
    pub freshness: Vec<(String, Duration)>,
}

/// Runs ingest and keeps the silver and gold tables of `pipeline`'s datasets
/// current until `stop` is set (then ingest commits what it read, one last
/// round carries it to gold, and the run returns) or a step fails in a way
/// waiting will not fix.
pub async fn run(
    catalog: LakeCatalog,
    storage: StorageConfig,
    kafka: ClientConfig,
    pipeline: &Pipeline,
    mut options: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let names = if options.datasets.is_empty() {
        options
            .ingest
            .routes
            .iter()
            .map(|r| r.dataset.name.clone())
            .collect()
    } else {
        options.datasets.clone()
    };
    let datasets = pipeline.select(&names)?;
    // Everything a round could refuse is refused before anything is read.
    let selected = Pipeline {
        source: pipeline.source.clone(),
        datasets: datasets.clone(),
    };
    let problems = lake_transform::validate(&selected).await;
    if !problems.is_empty() {
        return Err(lake_transform::Error::Pipeline(problems).into());
    }
    for dataset in &datasets {
        lake_transform::pii::require_key(dataset, options.transform.pii_key.as_ref())?;
    }

    let status = options.status.clone();
    options.ingest.status = status.ingest.clone();
    for dataset in &datasets {
        let mut tables = vec![dataset.silver.table.clone()];
        tables.extend(dataset.gold.iter().map(|g| g.table.clone()));
        for ident in tables {
            if let Ok(table) = catalog.load(&ident).await
                && let Some(newest) = lake_table::files::newest_record_ms(&table)
            {
                status.reached(&ident.to_string(), newest);
            }
        }
    }
    let gauges = tokio::spawn(publish_freshness(status.clone()));

    let mut landed = status.ingest.subscribe();
    let (done_tx, done) = watch::channel(false);
    let ingest = tokio::spawn({
        let catalog = catalog.clone();
        let stop = stop.clone();
        let ingest_options = options.ingest.clone();
        async move {
            let result = lake_ingest::ingest(catalog, kafka, ingest_options, stop).await;
            let _ = done_tx.send(true);
            result
        }
    });
    let mut keeper = Keeper {
        catalog: &catalog,
        storage: &storage,
        datasets: &datasets,
        options: &options,
        status: &status,
        summary: RunSummary::default(),
    };
    let kept = keeper.keep_current(&mut landed, done).await;
    if kept.is_err() {
        // Ingest commits what it holds and returns; the tables stay exact.
        stop.store(true, Ordering::Relaxed);
    }
    let ingested = ingest.await;
    gauges.abort();
    kept?;
    let mut summary = keeper.summary;
    summary.ingest = ingested.map_err(|e| Error::Internal(format!("ingest task: {e}")))??;
    summary.freshness = status.freshness();
    Ok(summary)
}

/// Sets the freshness gauge of every table the run knows, every second.
async fn publish_freshness(status: Arc<RunStatus>) {
    let mut tick = tokio::time::interval(GAUGE_EVERY);
    loop {
        tick.tick().await;
        for (table, lag) in status.freshness() {
            metrics::gauge!(names::TABLE_FRESHNESS_SECONDS, "table" => table)
                .set(lag.as_secs_f64());
        }
    }
}

struct Keeper<'a> {
    catalog: &'a LakeCatalog,
    storage: &'a StorageConfig,
    datasets: &'a [Arc<DatasetSpec>],
    options: &'a RunOptions,
    status: &'a RunStatus,
    summary: RunSummary,
}

impl Keeper<'_> {
    /// Runs a round whenever bronze commits (and once at start, for what
    /// earlier runs ingested), until ingest is over and its last commit has
    /// been carried through.
    async fn keep_current(
        &mut self,
        landed: &mut watch::Receiver<u64>,
        mut done: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut seen = None;
        let mut ingest_over = false;
        let mut last_compaction = Instant::now();
        // When the current run of failing rounds began, and how many failed.
        let mut failing: Option<(Instant, u32)> = None;
        loop {
            ingest_over |= *done.borrow();
            let commits = *landed.borrow_and_update();
            if seen != Some(commits) || failing.is_some() {
                match self.round().await {
                    Ok(()) => {
                        seen = Some(commits);
                        failing = None;
                        self.status.round_ended(Ok(()));
                        if last_compaction.elapsed() >= self.options.compact_every {
                            self.compact().await;
                            last_compaction = Instant::now();
                        }
                    }
                    Err(error) if Error::retryable(&error) => {
                        let cause = lake_table::error::describe_outage(&error);
                        self.status.round_ended(Err(cause.clone()));
                        self.summary.failed_rounds += 1;
                        let (since, attempts) = failing.get_or_insert_with(|| (Instant::now(), 0));
                        *attempts += 1;
                        let waited = since.elapsed();
                        if waited >= self.options.retry_budget {
                            return Err(Error::Outage {
                                waited,
                                cause,
                                source: Box::new(error),
                            });
                        }
                        let delay = lake_core::health::retry_delay(
                            *attempts,
                            self.options.retry_budget - waited,
                        );
                        tracing::warn!(
                            attempt = *attempts,
                            retry_in = %lake_core::health::age(delay),
                            gives_up_in = %lake_core::health::age(self.options.retry_budget - waited),
                            "transform round failed: {cause}; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    Err(error) => {
                        self.status.round_ended(Err(error.to_string()));
                        return Err(error.into());
                    }
                }
                // Commits may have landed meanwhile.
                continue;
            }
            if ingest_over {
                return Ok(());
            }
            tokio::select! {
                _ = landed.changed() => {}
                changed = done.changed() => {
                    // The sender goes away once ingest has ended.
                    if changed.is_err() {
                        ingest_over = true;
                    }
                }
            }
        }
    }

    /// Silver, then gold, over what is new.
    async fn round(&mut self) -> Result<(), lake_transform::Error> {
        let started = Instant::now();
        let reports = lake_transform::run_layers(
            self.catalog,
            self.datasets,
            Layers::All,
            &self.options.transform,
            &lake_transform::Quiet,
        )
        .await?;
        let elapsed = started.elapsed();
        self.summary.rounds += 1;
        metrics::histogram!(names::RUN_ROUND_DURATION_SECONDS).record(elapsed.as_secs_f64());
        let mut changed = Vec::new();
        for report in reports.iter().filter(|r| r.snapshot.is_some()) {
            *self.summary.rows.entry(report.target.clone()).or_default() += report.rows_out;
            if let Some(newest) = report.newest_record_ms {
                self.status.reached(&report.target, newest);
            }
            changed.push(format!("{} +{}", report.target, report.rows_out));
        }
        if !changed.is_empty() {
            let freshness: Vec<String> = self
                .status
                .freshness()
                .into_iter()
                .filter(|(table, _)| table.starts_with("gold."))
                .map(|(table, lag)| format!("{table} {:.1}s", lag.as_secs_f64()))
                .collect();
            tracing::info!(
                took = %lake_core::health::age(elapsed),
                freshness = %freshness.join(", "),
                "round: {}",
                changed.join(", ")
            );
        }
        Ok(())
    }

    /// Compacts the small files of bronze, its dead letters, silver and its
    /// quarantine. A table's failure is logged and left for the next pass:
    /// compaction is upkeep, never a reason to stop the pipeline.
    async fn compact(&mut self) {
        let existing = match self.catalog.tables().await {
            Ok(tables) => tables,
            Err(error) => {
                tracing::warn!("compaction skipped: {error}");
                return;
            }
        };
        let wanted: Vec<TableIdent> = self
            .datasets
            .iter()
            .flat_map(|d| {
                [
                    d.bronze.table.clone(),
                    d.rejects_table(),
                    d.silver.table.clone(),
                    d.silver.quarantine.clone(),
                ]
            })
            .filter(|t| existing.contains(t))
            .collect();
        let observer = Compacted::default();
        let task = Task::Compact(self.options.compact.clone());
        if let Err(error) =
            lake_maintain::policy::run(self.catalog, self.storage, Some(&wanted), &task, &observer)
                .await
        {
            tracing::warn!("compaction skipped: {error}");
            return;
        }
        self.summary.compactions += 1;
        let files = observer.files.load(Ordering::Relaxed);
        self.summary.files_compacted += files;
        if files > 0 {
            tracing::info!(files, "compacted small files");
        }
    }
}

/// Counts what a compaction pass merged; logs what failed.
#[derive(Default)]
struct Compacted {
    files: std::sync::atomic::AtomicU64,
}

impl lake_maintain::Observer for Compacted {
    fn done(&self, step: &Done) {
        if let Done::Compact(report) = step {
            let merged = report.files_before.saturating_sub(report.files_after);
            self.files.fetch_add(merged as u64, Ordering::Relaxed);
        }
    }

    fn failed(&self, table: &TableIdent, error: &lake_maintain::Error) {
        tracing::warn!(table = %table, "compaction failed, left for the next pass: {error}");
    }
}
