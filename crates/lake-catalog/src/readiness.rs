//! Readiness of `lake catalog serve` for its health listener: the database
//! (asked through rustberg's own `/ready`, which lists a namespace) and the
//! warehouse (listed, as at start), probed in the background every few
//! seconds so that a probe's request never reaches either.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use lake_core::config::StorageConfig;
use lake_core::health::{Check, Probe, age};
use lake_core::storage::{self, Location};
use tower::ServiceExt;

const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Answers {
    database: Option<(Result<String, String>, Instant)>,
    warehouse: Option<(Result<Duration, String>, Instant)>,
}

/// What the last probes found.
pub struct CatalogReadiness {
    answers: Mutex<Answers>,
    warehouse_url: String,
}

impl CatalogReadiness {
    pub(crate) fn watch(
        inner: axum::Router,
        storage: StorageConfig,
        warehouse: Location,
    ) -> Arc<Self> {
        let readiness = Arc::new(Self {
            answers: Mutex::new(Answers::default()),
            warehouse_url: warehouse.to_url(),
        });
        let weak: Weak<Self> = Arc::downgrade(&readiness);
        tokio::spawn(async move {
            loop {
                let database = database(&inner).await;
                let started = Instant::now();
                let warehouse =
                    match tokio::time::timeout(TIMEOUT, storage::probe(&storage, &warehouse)).await
                    {
                        Ok(Ok(())) => Ok(started.elapsed()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {}", age(TIMEOUT))),
                    };
                let Some(readiness) = weak.upgrade() else {
                    return;
                };
                {
                    let mut answers = readiness
                        .answers
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let now = Instant::now();
                    answers.database = Some((database, now));
                    answers.warehouse = Some((warehouse, now));
                }
                drop(readiness);
                tokio::time::sleep(EVERY).await;
            }
        });
        readiness
    }
}

/// rustberg's `/ready`, asked in-process: its `catalog` component is the
/// database (a namespace listed within its own timeout).
async fn database(inner: &axum::Router) -> Result<String, String> {
    let request = axum::http::Request::get("/ready")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = match inner.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    let ready: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("unreadable /ready: {e}"))?;
    let catalog = &ready["components"]["catalog"];
    match catalog["status"].as_str() {
        Some("ready") => Ok("a namespace listed".to_string()),
        Some(status) => Err(format!(
            "{status}: {} (the catalog's log has the database's error)",
            catalog["message"].as_str().unwrap_or("no detail")
        )),
        None => Err("no catalog component in /ready".to_string()),
    }
}

impl Probe for CatalogReadiness {
    fn checks(&self) -> Vec<Check> {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // An answer older than three rounds means the watcher is stuck.
        let fresh = |at: &Instant| at.elapsed() < EVERY * 3 + TIMEOUT * 2;
        let database = match &answers.database {
            None => Check::new("database", false, "not probed yet"),
            Some((Ok(detail), at)) => Check::new(
                "database",
                fresh(at),
                format!("{detail}, {} ago", age(at.elapsed())),
            ),
            Some((Err(e), at)) => {
                Check::new("database", false, format!("{e}, {} ago", age(at.elapsed())))
            }
        };
        let warehouse = match &answers.warehouse {
            None => Check::new("warehouse", false, "not probed yet"),
            Some((Ok(latency), at)) => Check::new(
                "warehouse",
                fresh(at),
                format!(
                    "{} listed in {} ms, {} ago",
                    self.warehouse_url,
                    latency.as_millis(),
                    age(at.elapsed())
                ),
            ),
            Some((Err(e), at)) => Check::new(
                "warehouse",
                false,
                format!("{e}, {} ago", age(at.elapsed())),
            ),
        };
        vec![database, warehouse]
    }
}
