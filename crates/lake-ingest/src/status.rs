//! What a running ingest knows about itself, for `/ready` and for the run's
//! summary: where it stands in its group, when an epoch last ended, whether
//! the brokers and the catalog answer, and what it committed across the
//! attempts an outage split the run into.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use lake_core::health::{Check, Probe, age};
use lake_table::LakeCatalog;

/// How often the catalog is asked whether it answers, while someone may
/// ask `/ready`.
const CATALOG_PING_EVERY: Duration = Duration::from_secs(5);

/// Where the run stands.
#[derive(Clone, Debug)]
enum Phase {
    Starting,
    WaitingForTopic(String),
    Joining,
    /// In the group with this many partitions (0 when the group has more
    /// members than partitions: idle by design).
    Assigned(usize),
    /// Between attempts, after the catalog or the storage failed.
    Recovering {
        since: Instant,
        cause: String,
    },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    group: String,
    commit_interval: Duration,
    /// When an epoch last ended: committed, or due with nothing to commit.
    last_epoch_end: Instant,
    /// Brokers up and known, from the client's statistics.
    brokers: Option<(usize, usize)>,
    /// The catalog's last answer (its latency) or why it did not answer, and when.
    catalog: Option<(Result<Duration, String>, Instant)>,
}

/// Shared between the consumer thread, the table writers, the catalog
/// watcher and the health listener. Cheap to update: the consumer touches it
/// on group events and epoch ends, never per record.
#[derive(Debug)]
pub struct IngestStatus {
    inner: Mutex<Inner>,
    commits: AtomicU64,
    rows: AtomicU64,
    rejected: AtomicU64,
    /// Commits so far, for whoever waits on the next one (`lake run`'s
    /// transforms start as soon as bronze moves, not on a clock).
    landed: tokio::sync::watch::Sender<u64>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Starting,
                group: String::new(),
                commit_interval: Duration::from_secs(10),
                last_epoch_end: Instant::now(),
                brokers: None,
                catalog: None,
            }),
            commits: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            landed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl IngestStatus {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain values behind.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn configure(&self, group: &str, commit_interval: Duration) {
        let mut inner = self.lock();
        inner.group = group.to_string();
        inner.commit_interval = commit_interval;
    }

    pub(crate) fn starting(&self) {
        self.lock().phase = Phase::Starting;
    }

    pub(crate) fn waiting_for_topic(&self, topic: &str) {
        self.lock().phase = Phase::WaitingForTopic(topic.to_string());
    }

    pub(crate) fn joining(&self) {
        let mut inner = self.lock();
        inner.phase = Phase::Joining;
        inner.last_epoch_end = Instant::now();
    }

    /// The group gave this member `partitions` in all. Reaching the group
    /// coordinator proves a broker answers.
    pub(crate) fn assigned(&self, partitions: usize) {
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::Assigned(_)) {
            inner.last_epoch_end = Instant::now();
        }
        inner.phase = Phase::Assigned(partitions);
        if inner.brokers.is_none_or(|(up, _)| up == 0) {
            inner.brokers = Some((1, inner.brokers.map_or(1, |(_, known)| known.max(1))));
        }
    }

    pub(crate) fn recovering(&self, cause: String) {
        let mut inner = self.lock();
        let since = match &inner.phase {
            Phase::Recovering { since, .. } => *since,
            _ => Instant::now(),
        };
        inner.phase = Phase::Recovering { since, cause };
    }

    pub(crate) fn epoch_ended(&self) {
        self.lock().last_epoch_end = Instant::now();
    }

    pub(crate) fn committed(&self, rows: u64, rejected: u64) {
        let commits = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.epoch_ended();
        self.landed.send_replace(commits);
    }

    /// Wakes on every commit that lands (the value is the number so far);
    /// commits landing while nobody looks are seen as one change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.landed.subscribe()
    }

    pub(crate) fn brokers(&self, up: usize, known: usize) {
        self.lock().brokers = Some((up, known));
    }

    pub(crate) fn brokers_down(&self) {
        let mut inner = self.lock();
        let known = inner.brokers.map_or(1, |(_, known)| known);
        inner.brokers = Some((0, known));
    }

    fn catalog_answer(&self, answer: Result<Duration, String>) {
        self.lock().catalog = Some((answer, Instant::now()));
    }

    /// Epochs committed, rows and dead letters they held, over every attempt.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Asks the catalog every few seconds whether it answers, for as long
    /// as this status is held elsewhere.
    pub(crate) fn watch_catalog(
        self: &Arc<Self>,
        catalog: LakeCatalog,
    ) -> tokio::task::JoinHandle<()> {
        let status: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                let answer = catalog
                    .ping()
                    .await
                    .map(|()| started.elapsed())
                    .map_err(|e| e.to_string());
                match status.upgrade() {
                    Some(status) => status.catalog_answer(answer),
                    None => return,
                }
                tokio::time::sleep(CATALOG_PING_EVERY).await;
            }
        })
    }
}

impl Probe for IngestStatus {
    fn checks(&self) -> Vec<Check> {
        let inner = self.lock();
        let group = match &inner.phase {
            Phase::Starting => Check::new("group", false, "starting"),
            Phase::WaitingForTopic(topic) => Check::new(
                "group",
                false,
                format!("topic `{topic}` does not exist yet; waiting for it"),
            ),
            Phase::Joining => Check::new(
                "group",
                false,
                format!("joining consumer group `{}`", inner.group),
            ),
            Phase::Assigned(0) => Check::new(
                "group",
                true,
                format!(
                    "in consumer group `{}` with no partitions: the group has more members than partitions",
                    inner.group
                ),
            ),
            Phase::Assigned(n) => Check::new(
                "group",
                true,
                format!(
                    "{n} partitions assigned in consumer group `{}`",
                    inner.group
                ),
            ),
            Phase::Recovering { since, cause } => Check::new(
                "group",
                false,
                format!(
                    "left the group {} ago to ride out an outage: {cause}",
                    age(since.elapsed())
                ),
            ),
        };
        let limit = inner.commit_interval * 3;
        let since_epoch = inner.last_epoch_end.elapsed();
        let commits = Check::new(
            "commits",
            since_epoch < limit,
            format!(
                "last epoch ended {} ago (limit {}: 3 × --commit-interval)",
                age(since_epoch),
                age(limit)
            ),
        );
        let brokers = match inner.brokers {
            None => Check::new("brokers", false, "no word from the brokers yet"),
            Some((up, known)) => {
                Check::new("brokers", up > 0, format!("{up} of {known} brokers up"))
            }
        };
        let catalog = match &inner.catalog {
            None => Check::new("catalog", false, "not asked yet"),
            Some((Ok(latency), at)) => Check::new(
                "catalog",
                at.elapsed() < CATALOG_PING_EVERY * 3,
                format!(
                    "answered in {} ms, {} ago",
                    latency.as_millis(),
                    age(at.elapsed())
                ),
            ),
            Some((Err(e), at)) => Check::new(
                "catalog",
                false,
                format!("did not answer {} ago: {e}", age(at.elapsed())),
            ),
        };
        vec![group, commits, brokers, catalog]
    }
}
