//! What a running `lake run` knows about itself: ingest's state, how the
//! last transform round went, and how fresh each table is, for `/ready`,
//! the freshness gauge and the run's log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lake_core::health::{Check, Probe, age};
use lake_ingest::IngestStatus;

#[derive(Debug, Default)]
struct Inner {
    /// How the last round ended, and when.
    round: Option<(Result<(), String>, Instant)>,
    /// Silver and gold tables → the newest Kafka record timestamp (ms) that
    /// has reached them.
    newest: BTreeMap<String, i64>,
}

/// Shared between the run, the gauge publisher and the health listener.
#[derive(Debug, Default)]
pub struct RunStatus {
    /// Ingest's own state (group, commits, brokers, catalog).
    pub ingest: Arc<IngestStatus>,
    inner: Mutex<Inner>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    lake_core::now_micros() / 1000
}

impl RunStatus {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain values behind.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn round_ended(&self, outcome: Result<(), String>) {
        self.lock().round = Some((outcome, Instant::now()));
    }

    pub(crate) fn reached(&self, table: &str, newest_ms: i64) {
        let mut inner = self.lock();
        let entry = inner.newest.entry(table.to_string()).or_insert(newest_ms);
        *entry = (*entry).max(newest_ms);
    }

    /// Each table's freshness now: how old the newest Kafka record that has
    /// reached it is.
    pub fn freshness(&self) -> Vec<(String, Duration)> {
        let now = now_ms();
        self.lock()
            .newest
            .iter()
            .map(|(table, newest)| {
                let lag = u64::try_from(now - newest).unwrap_or(0);
                (table.clone(), Duration::from_millis(lag))
            })
            .collect()
    }
}

impl Probe for RunStatus {
    fn checks(&self) -> Vec<Check> {
        let mut checks = self.ingest.checks();
        let fresh: Vec<String> = self
            .freshness()
            .into_iter()
            .filter(|(table, _)| table.starts_with("gold."))
            .map(|(table, lag)| format!("{table} {}", age(lag)))
            .collect();
        let fresh = if fresh.is_empty() {
            String::new()
        } else {
            format!("; freshness: {}", fresh.join(", "))
        };
        let transform = match &self.lock().round {
            None => Check::new("transform", true, "no round yet"),
            Some((Ok(()), at)) => Check::new(
                "transform",
                true,
                format!("last round ended {} ago{fresh}", age(at.elapsed())),
            ),
            Some((Err(cause), at)) => Check::new(
                "transform",
                false,
                format!(
                    "last round failed {} ago, retrying: {cause}",
                    age(at.elapsed())
                ),
            ),
        };
        checks.push(transform);
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_round_makes_the_run_unready_until_one_succeeds() {
        let status = RunStatus::default();
        let transform = |s: &RunStatus| {
            s.checks()
                .into_iter()
                .find(|c| c.name == "transform")
                .map(|c| (c.ok, c.detail))
        };
        assert_eq!(transform(&status), Some((true, "no round yet".into())));
        status.round_ended(Err("nothing answers".into()));
        let (ok, detail) = transform(&status).unwrap_or_default();
        assert!(!ok);
        assert!(detail.contains("retrying: nothing answers"), "{detail}");
        status.reached("gold.g", now_ms() - 5_000);
        status.reached("gold.g", now_ms() - 60_000);
        status.round_ended(Ok(()));
        let (ok, detail) = transform(&status).unwrap_or_default();
        assert!(ok);
        // The newest record wins: an older one reaching later does not age it.
        assert!(detail.contains("freshness: gold.g 5."), "{detail}");
    }
}
