//! Logs (tracing, to stderr) and metrics (Prometheus exporter, off by default).

use anyhow::Context;
use lake_core::config::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber. `RUST_LOG` wins over `telemetry.log`, which
/// wins over the command's `default` filter.
pub fn init_logs(config: &TelemetryConfig, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log.as_deref().unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Starts the Prometheus exporter when `telemetry.metrics_addr` is set.
/// Needs a Tokio runtime: the listener runs on it.
pub fn init_metrics(config: &TelemetryConfig) -> anyhow::Result<()> {
    let Some(addr) = config.metrics_addr else {
        return Ok(());
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(lake_core::metrics::LATENCY_BUCKETS)
        .context("metrics histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    metrics::gauge!(lake_core::metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(())
}
