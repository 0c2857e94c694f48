//! Sending generated records somewhere at a set rate: Kafka, a file, or
//! stdout, with a progress bar on a terminal and a summary at the end.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lake_core::metrics as names;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::error::{Error, Result};
use crate::generator::{Counts, Generator, Record};

/// Where records come from: a generator (endless) or a replayed file.
pub trait Records {
    /// The next record; `None` when there are no more.
    fn next_record(&mut self) -> Result<Option<Record<'_>>>;
    /// What was produced so far.
    fn counts(&self) -> Counts;
    /// The records' name in metrics (`dataset` label).
    fn label(&self) -> &str;
}

impl Records for Generator {
    fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        Ok(Some(Generator::next_record(self)))
    }

    fn counts(&self) -> Counts {
        Generator::counts(self)
    }

    fn label(&self) -> &str {
        self.config().stream.name()
    }
}

/// Records between progress updates, rate checks and producer polls.
const CHUNK: u32 = 256;
/// How long the final flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Where records go.
#[derive(Clone, Debug)]
pub enum Target {
    Kafka {
        config: ClientConfig,
        topic: String,
        /// Key records by user id (one user's records stay in order on one
        /// partition); without keys the partitioner spreads them evenly.
        keyed: bool,
    },
    /// Newline-delimited JSON; `None` is stdout.
    File(Option<PathBuf>),
}

/// When to stop and how fast to go.
#[derive(Clone, Debug, Default)]
pub struct RunLimits {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Records per second; 0 is as fast as possible.
    pub rate: u32,
    pub progress: bool,
    /// Where the run reports how deliveries go (`/ready`).
    pub status: Arc<GenerateStatus>,
}

/// How a run's deliveries to Kafka go, for the health listener's `/ready`.
#[derive(Debug)]
pub struct GenerateStatus {
    started: Instant,
    /// Milliseconds after `started` of the last acknowledged record, plus
    /// one (0: none yet). An atomic: it is written once per record.
    last_ack: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Brokers up and known, from the producer's statistics.
    brokers: std::sync::Mutex<Option<(usize, usize)>>,
}

impl Default for GenerateStatus {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_ack: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            brokers: std::sync::Mutex::new(None),
        }
    }
}

/// A generator is ready while Kafka acknowledged a record this recently.
const ACK_WITHIN: Duration = Duration::from_secs(30);

impl lake_core::health::Probe for GenerateStatus {
    fn checks(&self) -> Vec<lake_core::health::Check> {
        use lake_core::health::{Check, age};
        let brokers = match *self
            .brokers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            None => Check::new("brokers", false, "no word from the brokers yet"),
            Some((up, known)) => {
                Check::new("brokers", up > 0, format!("{up} of {known} brokers up"))
            }
        };
        let delivered = self.delivered.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let deliveries = match self.last_ack.load(Ordering::Relaxed) {
            0 => Check::new(
                "deliveries",
                false,
                format!("no record acknowledged yet; {failed} failed"),
            ),
            at => {
                let since = self
                    .started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1));
                Check::new(
                    "deliveries",
                    since < ACK_WITHIN,
                    format!(
                        "last record acknowledged {} ago (limit {}); {delivered} delivered, {failed} failed",
                        age(since),
                        age(ACK_WITHIN)
                    ),
                )
            }
        };
        vec![brokers, deliveries]
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub counts: Counts,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Acknowledged by Kafka (equals `counts.total` for files).
    pub delivered: u64,
    pub failed: u64,
    pub interrupted: bool,
    pub first_error: Option<String>,
}

impl Summary {
    /// Records sent per second of wall time.
    pub fn rate(&self) -> f64 {
        self.counts.total as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct DeliveryCounter(Arc<Deliveries>, Arc<GenerateStatus>);

impl ClientContext for DeliveryCounter {
    /// The statistics (every `statistics.interval.ms`) say which brokers are up.
    fn stats(&self, statistics: rdkafka::Statistics) {
        *self
            .1
            .brokers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(lake_kafka::brokers_up(&statistics));
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
                self.1.delivered.fetch_add(1, Ordering::Relaxed);
                let at = self.1.started.elapsed().as_millis() as u64 + 1;
                self.1.last_ack.store(at, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                self.1.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock()
                    && first.is_none()
                {
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

enum Sink {
    Kafka {
        producer: BaseProducer<DeliveryCounter>,
        topic: String,
        keyed: bool,
        deliveries: Arc<Deliveries>,
    },
    File(Box<dyn Write + Send>),
}

impl Sink {
    fn open(target: &Target, status: &Arc<GenerateStatus>) -> Result<Self> {
        match target {
            Target::Kafka {
                config,
                topic,
                keyed,
            } => {
                let mut config = config.clone();
                // Exactly-once on the producing side too: retries never duplicate.
                for (key, value) in [
                    ("enable.idempotence", "true"),
                    ("compression.type", "lz4"),
                    ("linger.ms", "20"),
                    ("batch.num.messages", "10000"),
                    ("queue.buffering.max.messages", "1000000"),
                    ("queue.buffering.max.kbytes", "1048576"),
                    ("partitioner", "murmur2_random"),
                    ("statistics.interval.ms", "5000"),
                ] {
                    if config.get(key).is_none() {
                        config.set(key, value);
                    }
                }
                // Unkeyed records: spread each one, rather than a linger
                // window's worth at a time, over the partitions.
                if !*keyed && config.get("sticky.partitioning.linger.ms").is_none() {
                    config.set("sticky.partitioning.linger.ms", "0");
                }
                let deliveries = Arc::new(Deliveries::default());
                let producer = config
                    .create_with_context(DeliveryCounter(deliveries.clone(), status.clone()))
                    .map_err(Error::Settings)?;
                Ok(Sink::Kafka {
                    producer,
                    topic: topic.clone(),
                    keyed: *keyed,
                    deliveries,
                })
            }
            Target::File(Some(path)) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?;
                Ok(Sink::File(Box::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    file,
                ))))
            }
            Target::File(None) => Ok(Sink::File(Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )))),
        }
    }

    fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<()> {
        match self {
            Sink::Kafka {
                producer,
                topic,
                keyed,
                ..
            } => {
                let record = BaseRecord::to(topic.as_str()).payload(payload);
                let mut record = if *keyed && !key.is_empty() {
                    record.key(key)
                } else {
                    record
                };
                loop {
                    match producer.send(record) {
                        Ok(()) => return Ok(()),
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            // librdkafka's queue is full: let it drain.
                            producer.poll(Duration::from_millis(10));
                            record = back;
                        }
                        Err((e, _)) => return Err(Error::Send(e)),
                    }
                }
            }
            Sink::File(out) => out
                .write_all(payload)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| Error::Io(format!("cannot write: {e}"))),
        }
    }

    fn poll(&self) {
        if let Sink::Kafka { producer, .. } = self {
            producer.poll(Duration::ZERO);
        }
    }

    fn errors(&self) -> u64 {
        match self {
            Sink::Kafka { deliveries, .. } => deliveries.failed.load(Ordering::Relaxed),
            Sink::File(_) => 0,
        }
    }

    /// Waits for every record to be acknowledged (or written), then reports.
    fn finish(self, summary: &mut Summary) -> Result<()> {
        match self {
            Sink::Kafka {
                producer,
                deliveries,
                ..
            } => {
                let flushed = producer.flush(FLUSH_TIMEOUT);
                summary.delivered = deliveries.delivered.load(Ordering::Relaxed);
                summary.failed = deliveries.failed.load(Ordering::Relaxed);
                summary.first_error = deliveries.first_error.lock().ok().and_then(|e| e.clone());
                if let Err(e) = flushed {
                    let unacked = summary.counts.total - summary.delivered - summary.failed;
                    summary.failed += unacked;
                    summary
                        .first_error
                        .get_or_insert_with(|| format!("flush: {e}"));
                }
                Ok(())
            }
            Sink::File(mut out) => {
                out.flush()
                    .map_err(|e| Error::Io(format!("cannot write: {e}")))?;
                summary.delivered = summary.counts.total;
                Ok(())
            }
        }
    }
}

type Limiter = RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>;

fn limiter(rate: u32) -> Option<(Limiter, u32)> {
    let rate = NonZeroU32::new(rate)?;
    // Bursts of a tenth of a second keep the pace smooth without a check per record.
    let burst = (rate.get() / 10).clamp(1, CHUNK);
    let quota =
        Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Some((RateLimiter::direct(quota), burst))
}

/// Sends records until the count or duration is reached, the records run
/// out, or `stop` is set. Blocking: run it on its own thread.
pub fn run(
    records: &mut dyn Records,
    target: &Target,
    limits: &RunLimits,
    stop: &AtomicBool,
) -> Result<Summary> {
    let mut sink = Sink::open(target, &limits.status)?;
    let dataset = records.label().to_string();
    let bar = progress_bar(limits);
    let limiter = limiter(limits.rate);
    let clock = DefaultClock::default();
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut sent: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        if limits.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let remaining = limits.count.map_or(u64::MAX, |c| c - sent);
        if remaining == 0 {
            break;
        }
        let mut chunk = CHUNK.min(u32::try_from(remaining).unwrap_or(CHUNK));
        if let Some((limiter, burst)) = &limiter {
            chunk = chunk.min(*burst);
            let n = NonZeroU32::new(chunk).unwrap_or(NonZeroU32::MIN);
            while let Ok(Err(not_until)) = limiter.check_n(n) {
                std::thread::sleep(
                    not_until
                        .wait_time_from(clock.now())
                        .min(Duration::from_millis(100)),
                );
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        let mut taken = 0u32;
        let mut exhausted = false;
        while taken < chunk {
            let Some(record) = records.next_record()? else {
                exhausted = true;
                break;
            };
            summary.bytes += record.payload.len() as u64;
            sink.send(record.key, record.payload)?;
            taken += 1;
        }
        sent += u64::from(taken);
        sink.poll();
        metrics::counter!(names::GENERATE_RECORDS_TOTAL, "dataset" => dataset.clone())
            .increment(u64::from(taken));
        if let Some(bar) = &bar {
            bar.set_position(sent);
            let errors = sink.errors();
            if errors > 0 {
                bar.set_message(format!("{errors} delivery errors"));
            }
        }
        if exhausted {
            break;
        }
    }
    summary.counts = records.counts();
    if let Some(bar) = &bar {
        bar.set_message("flushing");
    }
    sink.finish(&mut summary)?;
    summary.elapsed = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    metrics::counter!(names::GENERATE_ERRORS_TOTAL, "dataset" => dataset).increment(summary.failed);
    Ok(summary)
}

fn progress_bar(limits: &RunLimits) -> Option<ProgressBar> {
    if !limits.progress {
        return None;
    }
    let (bar, template) = match limits.count {
        Some(count) => (
            ProgressBar::with_draw_target(Some(count), ProgressDrawTarget::stderr()),
            "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} {rate} {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{elapsed_precise} {spinner} {human_pos} sent {rate} {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        let style = style.progress_chars("=> ").with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0}/s", state.per_sec());
            },
        );
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
