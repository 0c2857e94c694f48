//! The consumer side of `lake ingest`: one thread polls Kafka, decodes
//! chunks of records (checking them as it goes) and hands the rows to each
//! table's sink; it decides when an epoch
//! ends and commits, and it owns the group membership (rebalances).
//!
//! Offsets come from the tables, never from Kafka: on every assignment the
//! consumer asks each sink for its table's offsets and starts there. Kafka's
//! committed offsets are written after each table commit, for lag displays.
//! Both group protocols work: eager (classic range/roundrobin) rebalances
//! revoke everything and assign afresh; incremental ones (KIP-848's consumer
//! protocol, classic cooperative-sticky) add and remove a few partitions,
//! and the partitions kept are read again from their epoch's start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lake_core::metrics as names;
use lake_table::LakeCatalog;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::bronze::{Offsets, Route, ensure_bronze, ensure_rejects};
use crate::decode::{Chunk, Coordinates, NewFields, RecordDecoder};
use crate::error::{Error, Result};
use crate::sink::{Command, CommitOutcome, Sink, SinkTotals};
use crate::status::IngestStatus;

/// Decoded chunks that may wait between the consumer and a table's writer.
/// Deep enough to ride out either side being descheduled on a small machine.
const CHANNEL_CHUNKS: usize = 16;

/// Records between checks of the commit and stop conditions.
const CHECK_EVERY: u32 = 256;

/// How the consumer group shares partitions out (librdkafka's `group.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// Join/sync rounds led by a member; works with every broker. A new
    /// group waits the broker's `group.initial.rebalance.delay.ms` (3 s by
    /// default) before its first assignment.
    #[default]
    Classic,
    /// KIP-848: the broker assigns partitions through heartbeats, with no
    /// initial delay; needs Kafka 4.0 or later. The session timeout is the
    /// broker's (`group.consumer.session.timeout.ms`, 45 s by default).
    Consumer,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }
}

/// How `lake ingest` runs.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub routes: Vec<Route>,
    pub group_id: String,
    /// Overridden by `-X group.protocol=…`, as every librdkafka default is.
    pub group_protocol: GroupProtocol,
    /// Commit an epoch after this long…
    pub commit_interval: Duration,
    /// …or this many payload bytes…
    pub commit_bytes: Option<u64>,
    /// …or this many records, whichever comes first.
    pub commit_records: Option<u64>,
    /// Records above this size go to the dead-letter table.
    pub max_record_bytes: usize,
    /// Stop once the end offsets seen at start are reached and committed.
    pub until_caught_up: bool,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    pub evolve_schema: bool,
    /// Records handed to a sink at a time.
    pub chunk_records: usize,
    /// How long a Kafka metadata or watermark request may take.
    pub kafka_timeout: Duration,
    pub progress: bool,
    /// How long a running ingest keeps starting over while the catalog or
    /// the storage is unreachable before it gives up; zero gives up at once.
    pub retry_budget: Duration,
    /// Where the run reports how it stands (`/ready`) and what it committed.
    pub status: Arc<IngestStatus>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            group_id: "lake-ingest".to_string(),
            group_protocol: GroupProtocol::Classic,
            commit_interval: Duration::from_secs(10),
            commit_bytes: None,
            commit_records: None,
            max_record_bytes: 1024 * 1024,
            until_caught_up: false,
            max_records: None,
            evolve_schema: false,
            chunk_records: 4096,
            kafka_timeout: Duration::from_secs(10),
            progress: false,
            retry_budget: Duration::from_secs(300),
            status: Arc::default(),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct IngestSummary {
    /// Records read from Kafka (a rewound epoch's records count again).
    pub consumed: u64,
    pub bytes: u64,
    /// Rows committed to bronze tables.
    pub rows: u64,
    /// Records committed to dead-letter tables.
    pub rejected: u64,
    pub commits: u64,
    /// Epochs discarded because another writer owned a partition first, or
    /// because of a rebalance.
    pub rewinds: u64,
    pub elapsed: Duration,
    /// From start to the first record: joining the group, seeking, fetching.
    /// A broker delays a new group's first assignment
    /// (`group.initial.rebalance.delay.ms`, 3 s by default).
    pub first_record_after: Option<Duration>,
    /// Peak resident memory of this process, when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    pub caught_up: bool,
    pub interrupted: bool,
    /// Times the run started over after the catalog or the storage failed.
    pub recoveries: u64,
}

impl IngestSummary {
    /// Adds what one attempt read; its flags are the run's when it is the last.
    fn absorb(&mut self, attempt: &IngestSummary) {
        self.consumed += attempt.consumed;
        self.bytes += attempt.bytes;
        self.rewinds += attempt.rewinds;
        self.first_record_after = self.first_record_after.or(attempt.first_record_after);
        self.caught_up = attempt.caught_up;
        self.interrupted = attempt.interrupted;
    }
}

struct TopicState {
    route: Route,
    sink: mpsc::Sender<Command>,
    assigned: BTreeSet<i32>,
    /// Where each assigned partition's epoch began, as the table recorded.
    start: Offsets,
    /// The next offset after each partition's last record in this epoch.
    end: Offsets,
    chunk: Chunk,
    /// Records per chunk.
    chunk_records: usize,
    /// Decodes the chunk for the table's current schema.
    decoder: RecordDecoder,
    /// Time spent decoding.
    decoding: Duration,
    epoch_records: u64,
    epoch_bytes: u64,
    /// End offsets seen at start, for `--until-caught-up`.
    high: BTreeMap<i32, i64>,
    /// The table's offsets for every partition, as last seen.
    table: Offsets,
    /// The `table` metric label, built once.
    label: String,
    unreported_records: u64,
    unreported_bytes: u64,
}

impl TopicState {
    fn position(&self, partition: i32) -> Option<i64> {
        self.end
            .get(&partition)
            .or_else(|| self.start.get(&partition))
            .copied()
    }

    /// Adds what was read since the last report to the metrics.
    fn report(&mut self) {
        if self.unreported_records > 0 {
            metrics::counter!(names::INGEST_RECORDS_TOTAL, "table" => self.label.clone())
                .increment(self.unreported_records);
            metrics::counter!(names::INGEST_BYTES_TOTAL, "table" => self.label.clone())
                .increment(self.unreported_bytes);
            self.unreported_records = 0;
            self.unreported_bytes = 0;
        }
    }

    fn has_epoch(&self) -> bool {
        !self.end.is_empty() || !self.chunk.is_empty()
    }

    fn reset_epoch(&mut self) {
        self.end.clear();
        self.chunk.clear();
        self.epoch_records = 0;
        self.epoch_bytes = 0;
    }
}

#[derive(Default)]
struct Shared {
    topics: HashMap<String, TopicState>,
    error: Option<Error>,
    rewinds: u64,
}

struct IngestContext {
    shared: Arc<Mutex<Shared>>,
    status: Arc<IngestStatus>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock already ends the run; the state is
    // still the best there is for shutting down.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for IngestContext {
    /// librdkafka's statistics (every `statistics.interval.ms`) carry each
    /// partition's lag behind its end; they feed the lag gauge.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let (up, known) = lake_kafka::brokers_up(&statistics);
        self.status.brokers(up, known);
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        names::INGEST_LAG_RECORDS,
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.status.brokers_down();
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut shared = lock(&self.shared);
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Incremental: only the new partitions, which join the
                // running epoch from their table's offsets.
                if let Err(e) = assign(&mut shared, tpl) {
                    tracing::error!(error = %e, "cannot read the tables' offsets for the new assignment");
                    shared.error = Some(e);
                    if !incremental {
                        let _ = consumer.unassign();
                    }
                    return;
                }
                let assigned: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
                    .collect();
                tracing::info!(partitions = ?assigned, "assigned; starting from the tables' offsets");
                let total: usize = shared.topics.values().map(|s| s.assigned.len()).sum();
                self.status.assigned(total);
                let result = if incremental {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    shared.error = Some(e.into());
                    return;
                }
                commit_table_offsets(consumer, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let dropped = abort_epochs(&mut shared);
                tracing::info!(
                    partitions = tpl.count(),
                    records = dropped,
                    "partitions revoked; dropping the uncommitted epoch"
                );
                if let Err(e) = release(consumer, &mut shared, tpl, incremental) {
                    tracing::error!(error = %e, "cannot release the revoked partitions");
                    shared.error = Some(e);
                }
                if incremental {
                    let total: usize = shared.topics.values().map(|s| s.assigned.len()).sum();
                    self.status.assigned(total);
                } else {
                    self.status.joining();
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                abort_epochs(&mut shared);
                if let Err(e) = release(consumer, &mut shared, tpl, incremental) {
                    shared.error = Some(e);
                }
            }
        }
    }
}

fn by_topic(tpl: &TopicPartitionList) -> BTreeMap<String, Vec<i32>> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for element in tpl.elements() {
        by_topic
            .entry(element.topic().to_string())
            .or_default()
            .push(element.partition());
    }
    by_topic
}

/// Gives partitions back once the epoch is dropped: every partition (eager
/// protocols), or those in `tpl`, the rest being read again from their
/// epoch's start (incremental ones).
fn release(
    consumer: &BaseConsumer<IngestContext>,
    shared: &mut Shared,
    tpl: &TopicPartitionList,
    incremental: bool,
) -> Result<()> {
    if !incremental {
        for state in shared.topics.values_mut() {
            state.assigned.clear();
            state.start.clear();
        }
        // An eager unassign fails only while the consumer closes, when
        // nothing stays assigned either way.
        let _ = consumer.unassign();
        return Ok(());
    }
    for (topic, partitions) in by_topic(tpl) {
        if let Some(state) = shared.topics.get_mut(&topic) {
            for partition in partitions {
                state.assigned.remove(&partition);
                state.start.remove(&partition);
            }
        }
    }
    consumer.incremental_unassign(tpl)?;
    reread_kept(consumer, shared)
}

/// After an incremental revocation dropped the epoch, positions every
/// partition still assigned back at its epoch's start (the table's offset),
/// and resumes any that `--until-caught-up` had paused. Seeking also
/// discards what librdkafka prefetched past that point, so no record of the
/// dropped epoch can reach the next one.
fn reread_kept(consumer: &BaseConsumer<IngestContext>, shared: &Shared) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for state in shared.topics.values() {
        for &partition in &state.assigned {
            let offset = state
                .start
                .get(&partition)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(&state.route.topic, partition, offset)?;
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let sought = consumer.seek_partitions(tpl.clone(), Duration::from_secs(10))?;
    for element in sought.elements() {
        element.error()?;
    }
    consumer.resume(&tpl)?;
    Ok(())
}

/// Sets every newly assigned partition's start to its table's offset.
fn assign(shared: &mut Shared, tpl: &mut TopicPartitionList) -> Result<()> {
    for (topic, partitions) in by_topic(tpl) {
        let Some(state) = shared.topics.get_mut(&topic) else {
            continue;
        };
        let offsets = request(&state.sink, |reply| Command::Offsets { reply })??;
        state.table.clone_from(&offsets);
        for partition in partitions {
            let offset = match offsets.get(&partition) {
                Some(&o) => {
                    state.start.insert(partition, o);
                    Offset::Offset(o)
                }
                None => {
                    state.start.remove(&partition);
                    Offset::Beginning
                }
            };
            tpl.set_partition_offset(&topic, partition, offset)?;
            state.assigned.insert(partition);
        }
    }
    Ok(())
}

/// Tells Kafka where the tables are for newly assigned partitions. A member
/// that died between its table commit and its Kafka commit leaves Kafka's
/// offsets behind the table; if nothing new arrives, no later epoch would
/// correct them, and lag displays reading the group would show records that
/// are long in bronze. For lag only: the tables stay the source of truth.
fn commit_table_offsets(consumer: &BaseConsumer<IngestContext>, assigned: &TopicPartitionList) {
    let mut known = TopicPartitionList::new();
    for element in assigned.elements() {
        if let Offset::Offset(offset) = element.offset() {
            let _ = known.add_partition_offset(
                element.topic(),
                element.partition(),
                Offset::Offset(offset),
            );
        }
    }
    if known.count() > 0
        && let Err(e) = consumer.commit(&known, CommitMode::Async)
    {
        tracing::debug!(error = %e, "committing the tables' offsets to Kafka for lag");
    }
}

/// Drops every uncommitted epoch; returns how many records they held.
fn abort_epochs(shared: &mut Shared) -> u64 {
    let mut aborted = 0;
    let mut records = 0;
    for state in shared.topics.values_mut() {
        if state.has_epoch() {
            aborted += 1;
            records += state.epoch_records;
            let _ = request(&state.sink, |reply| Command::Abort { reply });
        }
        state.reset_epoch();
    }
    shared.rewinds += aborted;
    records
}

/// Sends a command to a sink and waits for its answer (from the consumer
/// thread, which is not a Tokio worker).
fn request<T>(
    sink: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T> {
    let (reply, answer) = oneshot::channel();
    sink.blocking_send(command(reply))
        .map_err(|_| Error::WriterStopped)?;
    answer.blocking_recv().map_err(|_| Error::WriterStopped)
}

/// Runs ingestion until stopped, caught up, or out of records.
///
/// When the catalog or the storage fails (refused connections, timeouts,
/// 5xx, a commit whose outcome is unknown), the run starts over inside this
/// process: it leaves the group, waits with backoff, and joins again from the
/// tables' offsets — what a restarted process would do, so exactly-once holds
/// as it does across a crash — until `retry_budget` has passed without a
/// commit; then it fails, naming the catalog and the last error.
pub async fn ingest(
    catalog: LakeCatalog,
    mut kafka: ClientConfig,
    options: IngestOptions,
    stop: Arc<AtomicBool>,
) -> Result<IngestSummary> {
    if options.routes.is_empty() {
        return Err(Error::Invalid("nothing to ingest: no topics".into()));
    }
    prepare_consumer_config(&mut kafka, &options)?;
    let status = options.status.clone();
    status.configure(&options.group_id, options.commit_interval);
    let watcher = status.watch_catalog(catalog.clone());
    // The status may have served an earlier run (options are cloned): this
    // run's counts are what it adds.
    let before = (status.rows(), status.rejected(), status.commits());
    let started = Instant::now();
    let mut total = IngestSummary::default();
    // When the current run of failed attempts began, and how many there were.
    let mut outage: Option<(Instant, u32)> = None;
    let result = loop {
        let commits_before = status.commits();
        let attempt_started = Instant::now();
        status.starting();
        let (attempt, error) = run_once(&catalog, kafka.clone(), &options, stop.clone()).await;
        total.absorb(&attempt);
        let Some(error) = error else { break Ok(()) };
        if !error.is_outage() || options.retry_budget.is_zero() {
            break Err(error);
        }
        // An attempt that committed, or that ran longer than the whole
        // budget, ended the previous outage: this failure starts a new one.
        // (An attempt stuck on a hanging catalog lasts a request timeout,
        // well under the budget, so a hang still spends it.)
        if status.commits() > commits_before || attempt_started.elapsed() > options.retry_budget {
            outage = None;
        }
        let (since, attempts) = outage.get_or_insert_with(|| (Instant::now(), 0));
        *attempts += 1;
        let waited = since.elapsed();
        let cause = error.plain_cause();
        if waited >= options.retry_budget {
            break Err(Error::Outage {
                uri: catalog.uri().to_string(),
                waited,
                cause,
                source: Box::new(error),
            });
        }
        let delay = lake_core::health::retry_delay(*attempts, options.retry_budget - waited);
        tracing::warn!(
            catalog = catalog.uri(),
            attempt = *attempts,
            retry_in = %lake_core::health::age(delay),
            gives_up_in = %lake_core::health::age(options.retry_budget - waited),
            "the catalog or its storage failed: {cause}; starting over from the tables' offsets"
        );
        metrics::counter!(names::INGEST_RECOVERIES_TOTAL).increment(1);
        total.recoveries += 1;
        status.recovering(cause);
        let resume_at = Instant::now() + delay;
        while Instant::now() < resume_at && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if stop.load(Ordering::Relaxed) {
            total.interrupted = true;
            break Ok(());
        }
    };
    watcher.abort();
    result?;
    total.rows = status.rows() - before.0;
    total.rejected = status.rejected() - before.1;
    total.commits = status.commits() - before.2;
    total.elapsed = started.elapsed();
    total.peak_rss_bytes = lake_core::peak_rss_bytes();
    Ok(total)
}

/// One attempt: the tables and their writers, a consumer in the group, until
/// the run ends or fails. Returns what it read, and its error if it failed.
async fn run_once(
    catalog: &LakeCatalog,
    kafka: ClientConfig,
    options: &IngestOptions,
    stop: Arc<AtomicBool>,
) -> (IngestSummary, Option<Error>) {
    // The consumer joins the group while the tables open: a join takes a few
    // round trips to the coordinator (and a classic group the broker's
    // initial delay), which need not wait for the catalog's.
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (tables_open, opened) = std::sync::mpsc::channel();
    // Set when the tables cannot be opened, for a consumer still waiting
    // for its topic to exist.
    let abandoned = Arc::new(AtomicBool::new(false));
    let thread_abandoned = abandoned.clone();
    let thread_shared = shared.clone();
    let thread_options = options.clone();
    let spawned = std::thread::Builder::new()
        .name("lake-ingest-consumer".into())
        .spawn(move || {
            let mut summary = IngestSummary::default();
            let opened = Opened {
                tables: opened,
                abandoned: thread_abandoned,
            };
            let result = consume(
                kafka,
                thread_shared,
                &thread_options,
                &stop,
                &opened,
                &mut summary,
            );
            (summary, result)
        });
    let mut sinks = Vec::new();
    let mut open_error = None;
    for route in &options.routes {
        let opened = async {
            let bronze = ensure_bronze(catalog, route).await?;
            ensure_rejects(catalog, route).await?;
            Sink::open(
                catalog.clone(),
                route.clone(),
                bronze,
                options.evolve_schema,
                options.status.clone(),
            )
            .await
        };
        let sink = match opened.await {
            Ok(sink) => sink,
            Err(e) => {
                open_error = Some(e);
                break;
            }
        };
        let decoder = sink.decoder();
        let (sender, handle) = crate::sink::spawn(sink, CHANNEL_CHUNKS);
        sinks.push(handle);
        lock(&shared).topics.insert(
            route.topic.clone(),
            TopicState {
                route: route.clone(),
                sink: sender,
                assigned: BTreeSet::new(),
                start: Offsets::new(),
                end: Offsets::new(),
                chunk: Chunk::sized_for(options.chunk_records),
                chunk_records: options.chunk_records,
                decoder,
                decoding: Duration::ZERO,
                epoch_records: 0,
                epoch_bytes: 0,
                high: BTreeMap::new(),
                table: Offsets::new(),
                label: route.table.to_string(),
                unreported_records: 0,
                unreported_bytes: 0,
            },
        );
    }
    abandoned.store(open_error.is_some(), Ordering::Relaxed);
    // A consumer that already stopped (a missing topic, say) no longer
    // listens; its own error is the one reported below.
    let _ = tables_open.send(open_error.is_none());
    let (summary, consumed) = match spawned {
        Err(e) => (IngestSummary::default(), Err(Error::Thread(e))),
        Ok(thread) => match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok((summary, result))) => (summary, result),
            Ok(Err(_)) => (
                IngestSummary::default(),
                Err(Error::Internal("the consumer thread panicked".into())),
            ),
            Err(source) => (
                IngestSummary::default(),
                Err(Error::Task {
                    what: "consumer thread's waiter",
                    source,
                }),
            ),
        },
    };
    if let Some(e) = open_error {
        drop(shared);
        for sink in sinks {
            let _ = sink.await;
        }
        return (summary, Some(e));
    }
    // Hanging up the sinks' channels lets them finish.
    let callback_error = lock(&shared).error.take();
    drop(shared);
    let mut totals = SinkTotals::default();
    let mut sink_error = None;
    for sink in sinks {
        match sink.await {
            Ok(Ok(t)) => {
                totals.writing += t.writing;
                totals.committing += t.committing;
                totals.rewinds += t.rewinds;
            }
            Ok(Err(e)) => sink_error = sink_error.or(Some(e)),
            Err(source) => {
                sink_error = sink_error.or(Some(Error::Task {
                    what: "table writer",
                    source,
                }))
            }
        }
    }
    tracing::debug!(
        writing = ?totals.writing,
        committing = ?totals.committing,
        "time in the table writers"
    );
    let mut summary = summary;
    summary.rewinds += totals.rewinds;
    // The consumer's own error says most, unless it only saw a writer stop:
    // then the writer's says why.
    let error = match consumed {
        Ok(()) => callback_error.or(sink_error),
        Err(Error::WriterStopped) => sink_error.or(callback_error).or(Some(Error::WriterStopped)),
        Err(e) => Some(e),
    };
    (summary, error)
}

fn prepare_consumer_config(kafka: &mut ClientConfig, options: &IngestOptions) -> Result<()> {
    let protocol = kafka
        .get("group.protocol")
        .unwrap_or(options.group_protocol.as_str())
        .to_string();
    kafka
        .set("group.id", &options.group_id)
        .set("group.protocol", &protocol)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let mut defaults = vec![
        ("auto.offset.reset", "earliest"),
        // Bounds what librdkafka prefetches, whatever the partition count.
        // 32 MiB is ~0.3 s of the writer's work at full speed, many fetch
        // round trips, so it stays fed while the queue is refilled.
        ("queued.max.messages.kbytes", "32768"),
        // When the queue is at that bound, librdkafka skips fetching for
        // this long before it looks again (1 s by default): the writer
        // drained 64 MiB in less than that, then idled with the machine
        // until the next fetch, ~0.3 s of every 1.25 s. At 10 ms the queue
        // is refilled as it drains, for ~100 wake-ups a second while full.
        ("fetch.queue.backoff.ms", "10"),
        ("statistics.interval.ms", "5000"),
    ];
    if protocol == GroupProtocol::Classic.as_str() {
        // librdkafka refuses these with the consumer protocol, where the
        // broker assigns and times sessions out.
        defaults.extend([
            ("partition.assignment.strategy", "roundrobin"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ]);
    }
    for (key, value) in defaults {
        if kafka.get(key).is_none() {
            kafka.set(key, value);
        }
    }
    Ok(())
}

/// How often a continuous ingest asks whether a missing topic exists yet.
const TOPIC_RECHECK: Duration = Duration::from_secs(2);

/// The partition count of `topic` once it exists, or `None` when `given_up`
/// turns true while waiting for it. A run that ends when caught up fails at
/// once instead: a missing topic there is a mistake in its arguments, not a
/// start-up race.
/// A continuous one waits, so that it can start before the producers that
/// create its topics (as in compose) without exiting and being restarted.
fn wait_for_topic(
    kafka: &ClientConfig,
    topic: &str,
    brokers: &str,
    options: &IngestOptions,
    given_up: impl Fn() -> bool,
) -> Result<Option<usize>> {
    let mut waiting_since: Option<Instant> = None;
    loop {
        let partitions = lake_kafka::topic_partitions(kafka, topic, options.kafka_timeout)?;
        if partitions > 0 {
            if let Some(since) = waiting_since {
                tracing::info!(
                    topic,
                    waited_s = since.elapsed().as_secs(),
                    "topic exists now"
                );
            }
            return Ok(Some(partitions));
        }
        if options.until_caught_up {
            return Err(Error::Kafka(format!(
                "topic `{topic}` does not exist at {brokers}; create it (lake generate does) or check --topic"
            )));
        }
        if waiting_since.is_none() {
            options.status.waiting_for_topic(topic);
            tracing::warn!(
                topic,
                brokers,
                "topic does not exist yet; waiting for it (lake generate creates it)"
            );
            waiting_since = Some(Instant::now());
        }
        let deadline = Instant::now() + TOPIC_RECHECK;
        while Instant::now() < deadline {
            if given_up() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How the consumer thread hears whether its attempt's tables opened.
struct Opened {
    /// `true` once every table is open, `false` when one could not be.
    tables: std::sync::mpsc::Receiver<bool>,
    abandoned: Arc<AtomicBool>,
}

/// Reads until the run ends; `summary` holds what was read even when it fails.
fn consume(
    kafka: ClientConfig,
    shared: Arc<Mutex<Shared>>,
    options: &IngestOptions,
    stop: &AtomicBool,
    opened: &Opened,
    summary: &mut IngestSummary,
) -> Result<()> {
    let context = IngestContext {
        shared: shared.clone(),
        status: options.status.clone(),
    };
    let consumer: BaseConsumer<IngestContext> = kafka
        .create_with_context(context)
        .map_err(Error::Settings)?;
    let topics: Vec<String> = options.routes.iter().map(|r| r.topic.clone()).collect();
    let brokers = kafka
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let mut partitions = Vec::with_capacity(topics.len());
    for topic in &topics {
        let given_up = || stop.load(Ordering::Relaxed) || opened.abandoned.load(Ordering::Relaxed);
        let Some(count) = wait_for_topic(&kafka, topic, &brokers, options, given_up)? else {
            summary.interrupted = stop.load(Ordering::Relaxed);
            return Ok(());
        };
        partitions.push(count);
    }
    // The topics' ends are read before subscribing: subscribing at once made
    // the first group on a fresh cluster wait 0.9 and 3.0 s (in two of six
    // runs) for its coordinator while Kafka created `__consumer_offsets`.
    let mut highs = Vec::new();
    if options.until_caught_up {
        for (topic, &count) in topics.iter().zip(&partitions) {
            let mut high = BTreeMap::new();
            for partition in 0..count as i32 {
                let (_, hw) = consumer.fetch_watermarks(topic, partition, options.kafka_timeout)?;
                high.insert(partition, hw);
            }
            highs.push((topic, high));
        }
    }
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    options.status.joining();
    // The group's rebalance callbacks run inside `poll`, so no partition is
    // assigned (and no record read) before the tables are open.
    if !opened.tables.recv().unwrap_or(false) {
        // The attempt fails on its tables: leave the group at once.
        consumer.unsubscribe();
        return Ok(());
    }
    {
        let mut guard = lock(&shared);
        for (topic, high) in highs {
            if let Some(state) = guard.topics.get_mut(topic) {
                state.high = high;
            }
        }
    }

    let started = Instant::now();
    let mut last_commit = Instant::now();
    let mut last_report = Instant::now();
    let mut last_reload = Instant::now();
    let progress = options.progress.then(crate::progress::Progress::new);
    let mut since_check = 0u32;
    let mut in_poll = Duration::ZERO;
    let mut waiting_on_commits = Duration::ZERO;
    // The loop runs once per record: clock reads and locks in it are paid
    // millions of times, so the poll is timed only for the debug log that
    // reports it, and the progress line is updated with the other checks.
    let time_polls = tracing::enabled!(tracing::Level::DEBUG);
    loop {
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        let poll_started = time_polls.then(Instant::now);
        let polled = consumer.poll(Duration::from_millis(100));
        if let Some(poll_started) = poll_started {
            in_poll += poll_started.elapsed();
        }
        {
            let mut guard = lock(&shared);
            // A rebalance callback (they run inside the poll) that failed
            // ends the run before anything else is taken in.
            if let Some(e) = guard.error.take() {
                return Err(e);
            }
            // Checking triggers costs a walk over every partition; do it
            // every few hundred records, and whenever the consumer idles.
            since_check += 1;
            let check = polled.is_none() || since_check >= CHECK_EVERY;
            match polled {
                Some(Ok(message)) => {
                    if let Some(state) = guard.topics.get_mut(message.topic())
                        && state.assigned.contains(&message.partition())
                    {
                        let partition = message.partition();
                        let past_start_end = options.until_caught_up
                            && state
                                .high
                                .get(&partition)
                                .is_some_and(|&high| message.offset() >= high);
                        if past_start_end {
                            // Exactly what was there at start: stop fetching it.
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(&state.route.topic, partition);
                            let _ = consumer.pause(&tpl);
                        } else {
                            summary
                                .first_record_after
                                .get_or_insert_with(|| started.elapsed());
                            let payload = message.payload();
                            let size = payload.map_or(0, <[u8]>::len) as u64;
                            state.chunk.push(
                                payload,
                                Coordinates {
                                    partition,
                                    offset: message.offset(),
                                    timestamp_ms: message.timestamp().to_millis(),
                                },
                                options.max_record_bytes,
                            );
                            state.end.insert(partition, message.offset() + 1);
                            state.epoch_records += 1;
                            state.epoch_bytes += size;
                            summary.consumed += 1;
                            summary.bytes += size;
                            state.unreported_records += 1;
                            state.unreported_bytes += size;
                            if state.chunk.len() >= options.chunk_records {
                                send_chunk(state)?;
                            }
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    let reason = consumer
                        .client()
                        .fatal_error()
                        .map_or_else(|| code.to_string(), |(_, reason)| reason);
                    return Err(Error::Kafka(fatal_hint(&reason, &kafka)));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka reported an error; retrying"),
                None => {}
            }
            if !check {
                continue;
            }
            since_check = 0;
            if last_report.elapsed() >= Duration::from_millis(500) {
                if let Some(progress) = &progress {
                    progress.update(summary, started.elapsed(), last_commit.elapsed());
                }
                last_report = Instant::now();
            }
            for state in guard.topics.values_mut() {
                state.report();
            }
            let (records, bytes) = guard
                .topics
                .values()
                .fold((0, 0), |(r, b), s| (r + s.epoch_records, b + s.epoch_bytes));
            let due = last_commit.elapsed() >= options.commit_interval
                || options.commit_records.is_some_and(|n| records >= n)
                || options.commit_bytes.is_some_and(|n| bytes >= n);
            if records > 0 && due {
                let started = Instant::now();
                commit_epochs(&consumer, &mut guard)?;
                waiting_on_commits += started.elapsed();
                last_commit = Instant::now();
            } else if records == 0 && due {
                last_commit = Instant::now();
                options.status.epoch_ended();
            }
            if options.until_caught_up {
                // Our partitions are done: commit now rather than at the interval.
                if read_to_start_end(&guard) && guard.topics.values().any(TopicState::has_epoch) {
                    commit_epochs(&consumer, &mut guard)?;
                    last_commit = Instant::now();
                }
                if table_covers_start_end(&guard) {
                    summary.caught_up = true;
                    break;
                }
                // Partitions another member owns: watch the table for them.
                if last_reload.elapsed() >= Duration::from_secs(2) {
                    for state in guard.topics.values_mut() {
                        state.table = request(&state.sink, |reply| Command::Offsets { reply })??;
                    }
                    last_reload = Instant::now();
                }
            }
            if options
                .max_records
                .is_some_and(|max| summary.consumed >= max)
            {
                break;
            }
        }
    }
    {
        let mut guard = lock(&shared);
        for state in guard.topics.values_mut() {
            state.report();
        }
        commit_epochs(&consumer, &mut guard)?;
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    summary.elapsed = started.elapsed();
    let decoding: Duration = {
        let guard = lock(&shared);
        summary.rewinds = guard.rewinds;
        guard.topics.values().map(|state| state.decoding).sum()
    };
    tracing::debug!(
        in_poll = ?in_poll,
        decoding = ?decoding,
        waiting_on_commits = ?waiting_on_commits,
        elapsed = ?summary.elapsed,
        "time in the consumer"
    );
    // Leave the group now, with nothing uncommitted, so partitions move on.
    consumer.unsubscribe();
    Ok(())
}

/// librdkafka's fatal error, with what to do when the brokers predate the
/// consumer group protocol.
fn fatal_hint(reason: &str, kafka: &ClientConfig) -> String {
    let consumer_protocol = kafka.get("group.protocol") == Some(GroupProtocol::Consumer.as_str());
    if consumer_protocol && reason.contains("ConsumerGroupHeartbeat") {
        format!(
            "{reason}: the brokers do not support the consumer group protocol (KIP-848, \
             Kafka 4.0 or later); use --group-protocol classic"
        )
    } else {
        reason.to_string()
    }
}

/// Decodes the chunk and hands its rows to the table's writer. Decoding
/// here, where the records were just read, keeps one chunk per table on
/// this thread, filled again as soon as it is decoded, and only decoded
/// batches wait for the writer: a tenth less peak memory than a queue of
/// chunks (docs/performance.md, "Decoding on the consumer thread").
fn send_chunk(state: &mut TopicState) -> Result<()> {
    if state.chunk.is_empty() {
        return Ok(());
    }
    let ingested_at = lake_core::now_micros();
    let decoded = loop {
        let started = Instant::now();
        let decoded = state.decoder.decode(&state.chunk, ingested_at);
        state.decoding += started.elapsed();
        match decoded {
            Ok(decoded) => break decoded,
            Err(Ok(NewFields(fields))) => {
                state.decoder = request(&state.sink, |reply| Command::Evolve { fields, reply })??;
            }
            Err(Err(e)) => return Err(e),
        }
    };
    state.chunk.refill(state.chunk_records);
    state
        .sink
        .blocking_send(Command::Write(decoded))
        .map_err(|_| Error::WriterStopped)
}

/// Ends the epoch of every topic that has one: commit, or rewind.
fn commit_epochs(consumer: &BaseConsumer<IngestContext>, shared: &mut Shared) -> Result<()> {
    let mut rewinds = 0;
    for state in shared.topics.values_mut() {
        if !state.has_epoch() {
            continue;
        }
        send_chunk(state)?;
        let end = std::mem::take(&mut state.end);
        let start: Offsets = end
            .keys()
            .filter_map(|p| state.start.get(p).map(|o| (*p, *o)))
            .collect();
        let outcome = request(&state.sink, |reply| Command::Commit {
            start,
            end: end.clone(),
            reply,
        })?;
        match outcome {
            CommitOutcome::Committed {
                offsets,
                rows,
                rejected,
            } => {
                state.table = offsets;
                let mut tpl = TopicPartitionList::new();
                for (&partition, &offset) in &end {
                    state.start.insert(partition, offset);
                    let _ = tpl.add_partition_offset(
                        &state.route.topic,
                        partition,
                        Offset::Offset(offset),
                    );
                }
                // For lag displays only; the table is the source of truth.
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(error = %e, "committing Kafka offsets for lag");
                }
                tracing::debug!(table = %state.route.table, rows, rejected, "epoch committed");
            }
            CommitOutcome::Rewind { to } => {
                rewinds += 1;
                for (&partition, &offset) in &to {
                    state.start.insert(partition, offset);
                    if state.assigned.contains(&partition)
                        && let Err(e) = consumer.seek(
                            &state.route.topic,
                            partition,
                            Offset::Offset(offset),
                            Duration::from_secs(10),
                        )
                    {
                        tracing::warn!(partition, error = %e, "seek after rewind failed");
                    }
                }
                for partition in end.keys().filter(|p| !to.contains_key(p)) {
                    state.start.remove(partition);
                    if state.assigned.contains(partition) {
                        let _ = consumer.seek(
                            &state.route.topic,
                            *partition,
                            Offset::Beginning,
                            Duration::from_secs(10),
                        );
                    }
                }
                metrics::counter!(names::INGEST_REWINDS_TOTAL, "table" => state.route.table.to_string()).increment(1);
            }
            CommitOutcome::Failed(e) => return Err(e),
        }
        state.reset_epoch();
    }
    shared.rewinds += rewinds;
    Ok(())
}

/// Every partition this process owns has been read up to the end offset
/// seen at start.
fn read_to_start_end(shared: &Shared) -> bool {
    shared.topics.values().all(|state| {
        state.assigned.iter().all(|p| {
            let high = state.high.get(p).copied().unwrap_or(0);
            high == 0 || state.position(*p).is_some_and(|pos| pos >= high)
        })
    })
}

/// The tables record every partition (whoever owns it) at or past the end
/// offset seen at start: what was in the topics is committed.
fn table_covers_start_end(shared: &Shared) -> bool {
    shared.topics.values().all(|state| {
        state
            .high
            .iter()
            .all(|(p, &high)| high == 0 || state.table.get(p).is_some_and(|&o| o >= high))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(protocol: GroupProtocol, extra: &[(&str, &str)]) -> ClientConfig {
        let mut kafka = ClientConfig::new();
        for (key, value) in extra {
            kafka.set(*key, *value);
        }
        let options = IngestOptions {
            group_protocol: protocol,
            ..IngestOptions::default()
        };
        prepare_consumer_config(&mut kafka, &options).expect("prepared");
        kafka
    }

    #[test]
    fn classic_groups_get_lake_session_and_assignment_defaults() {
        let kafka = prepared(GroupProtocol::Classic, &[("session.timeout.ms", "3000")]);
        assert_eq!(kafka.get("group.protocol"), Some("classic"));
        assert_eq!(
            kafka.get("partition.assignment.strategy"),
            Some("roundrobin")
        );
        assert_eq!(kafka.get("session.timeout.ms"), Some("3000"));
        assert_eq!(kafka.get("heartbeat.interval.ms"), Some("1000"));
        assert_eq!(kafka.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn a_full_prefetch_queue_is_looked_at_again_within_milliseconds() {
        for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            let kafka = prepared(protocol, &[]);
            assert_eq!(kafka.get("fetch.queue.backoff.ms"), Some("10"));
            assert_eq!(kafka.get("queued.max.messages.kbytes"), Some("32768"));
        }
        // As every default, a -X of the user's wins.
        let kafka = prepared(
            GroupProtocol::Classic,
            &[
                ("fetch.queue.backoff.ms", "1000"),
                ("queued.max.messages.kbytes", "65536"),
            ],
        );
        assert_eq!(kafka.get("fetch.queue.backoff.ms"), Some("1000"));
        assert_eq!(kafka.get("queued.max.messages.kbytes"), Some("65536"));
    }

    #[test]
    fn consumer_protocol_leaves_assignment_and_sessions_to_the_broker() {
        let kafka = prepared(GroupProtocol::Consumer, &[]);
        assert_eq!(kafka.get("group.protocol"), Some("consumer"));
        for key in [
            "partition.assignment.strategy",
            "session.timeout.ms",
            "heartbeat.interval.ms",
        ] {
            assert_eq!(kafka.get(key), None, "{key}");
        }
        // -X group.protocol wins over the option, like every other -X.
        let kafka = prepared(GroupProtocol::Classic, &[("group.protocol", "consumer")]);
        assert_eq!(kafka.get("group.protocol"), Some("consumer"));
        assert_eq!(kafka.get("session.timeout.ms"), None);
    }

    #[test]
    fn an_old_broker_refusing_the_consumer_protocol_is_named_with_the_way_out() {
        let reason =
            "ConsumerGroupHeartbeat fatal error: Local: Required feature not supported by broker";
        let consumer = prepared(GroupProtocol::Consumer, &[]);
        assert_eq!(
            fatal_hint(reason, &consumer),
            format!(
                "{reason}: the brokers do not support the consumer group protocol (KIP-848, \
                 Kafka 4.0 or later); use --group-protocol classic"
            )
        );
        let classic = prepared(GroupProtocol::Classic, &[]);
        assert_eq!(fatal_hint("Broker: Fenced", &classic), "Broker: Fenced");
    }
}
