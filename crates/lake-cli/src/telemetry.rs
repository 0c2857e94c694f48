//! Logs (tracing, to stderr) and metrics (Prometheus exporter, off by default).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lake_core::config::{LogFormat, TelemetryConfig};
use lake_core::health::{Probe, Readiness};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber. `RUST_LOG` wins over `telemetry.log`, which
/// wins over the command's `default` filter.
pub fn init_logs(config: &TelemetryConfig, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log.as_deref().unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: Airflow task logs, `docker
    // logs` and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Metrics still to be delivered when the command ends.
pub struct Metrics {
    push: Option<(String, PrometheusHandle)>,
}

/// Installs the Prometheus recorder when `telemetry.metrics_addr` or
/// `telemetry.push_gateway` is set: the first serves `/metrics` while the
/// command runs, the second receives one push at its end ([`Metrics::push`]).
/// Needs a Tokio runtime: the listener runs on it.
pub fn init_metrics(config: &TelemetryConfig, job: String) -> anyhow::Result<Metrics> {
    if config.metrics_addr.is_none() && config.push_gateway.is_none() {
        return Ok(Metrics { push: None });
    }
    let builder = PrometheusBuilder::new()
        .set_buckets(lake_core::metrics::LATENCY_BUCKETS)
        .context("metrics histogram buckets")?;
    let handle = match config.metrics_addr {
        Some(addr) => {
            let (recorder, exporter) = builder
                .with_http_listener(addr)
                .build()
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).context("metrics recorder")?;
            tokio::spawn(async move {
                if let Err(e) = exporter.await {
                    tracing::warn!("metrics listener stopped: {e:?}");
                }
            });
            // What `install` would do: drain histogram samples between scrapes,
            // so a process nobody scrapes does not grow.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            handle
        }
        None => builder.install_recorder().context("metrics recorder")?,
    };
    metrics::gauge!(lake_core::metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    let push = config.push_gateway.as_ref().map(|gateway| {
        let url = format!("{}/metrics/job/{job}", gateway.trim_end_matches('/'));
        (url, handle)
    });
    Ok(Metrics { push })
}

impl Metrics {
    /// Pushes everything recorded to the Pushgateway, replacing the previous
    /// push of the same job. A failed push is logged, never the command's
    /// failure: the work is done and committed by now.
    pub async fn push(self) {
        let Some((url, handle)) = self.push else {
            return;
        };
        let result = reqwest::Client::new()
            .put(&url)
            .timeout(Duration::from_secs(10))
            .header("content-type", "text/plain; version=0.0.4")
            .body(handle.render())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match result {
            Ok(_) => tracing::debug!(%url, "metrics pushed"),
            Err(e) => tracing::warn!(%url, "cannot push metrics: {e}"),
        }
    }
}

/// Serves `/health` (200 while the process runs) and `/ready` (200 when
/// every check of `probe` holds, else 503; the body names each check and its
/// reason) on `addr` until the process ends. Probes answer from what the
/// command already knows: a request never reaches Kafka, the catalog or the
/// storage, so a probe cannot add load to an outage.
pub async fn serve_health(addr: SocketAddr, probe: Arc<dyn Probe>) -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve /health and /ready on {addr}"))?;
    let local = listener.local_addr().context("health listener address")?;
    let started = Instant::now();
    let json = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "application/json")], body)
    };
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || async move {
                let body = serde_json::json!({
                    "status": "alive",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": started.elapsed().as_secs(),
                });
                json(StatusCode::OK, body.to_string())
            }),
        )
        .route(
            "/ready",
            get(move || async move {
                let readiness = Readiness::of(probe.as_ref());
                let status = if readiness.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = serde_json::to_string(&readiness).unwrap_or_default();
                json(status, body)
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("health listener stopped: {e}");
        }
    });
    tracing::info!(addr = %local, "health at http://{local}/health and http://{local}/ready");
    Ok(())
}
