//! What the benchmarks share: an embedded catalog on a local warehouse, medians.

use std::path::Path;

use lake_catalog::CatalogServer;
use lake_core::config::{ApiKeyConfig, Role, ServerConfig, StorageConfig};

/// Generated event times start here (2026-01-01T00:00:00Z, in µs).
pub const START: i64 = 1_767_225_600_000_000;

/// An embedded catalog serving on a loopback port from this runtime, its
/// database and warehouse under `dir`. Returns its URI and an admin key (the transform bench drops tables).
pub fn embedded_catalog(runtime: &tokio::runtime::Runtime, dir: &Path) -> (String, String) {
    let key = lake_catalog::generate_key();
    let server = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: dir.join("catalog").display().to_string(),
        warehouse: dir.join("warehouse").display().to_string(),
        insecure_http: true,
        api_keys: vec![ApiKeyConfig {
            name: "bench".into(),
            role: Role::Admin,
            key: Some(lake_core::Secret::new(&key)),
            key_env: None,
        }],
        ..ServerConfig::default()
    };
    let catalog = runtime
        .block_on(CatalogServer::bind(&server, &StorageConfig::default()))
        .expect("catalog");
    let uri = catalog.uri();
    runtime.spawn(catalog.serve(std::future::pending()));
    (uri, key)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Points a `lake` command at the bench catalog with the bench's log level
/// (`LAKE_BENCH_LOG`, default warn), run from `dir`.
pub fn lake_env<'a>(
    command: &'a mut std::process::Command,
    uri: &str,
    key: &str,
    dir: &Path,
) -> &'a mut std::process::Command {
    command
        .env("LAKE_CATALOG__URI", uri)
        .env("LAKE_CATALOG__TOKEN", key)
        .env(
            "RUST_LOG",
            std::env::var("LAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(dir)
}

/// The `peak memory N MB` a lake summary line reports.
pub fn peak_mb(stderr: &str) -> f64 {
    stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|mb| mb.parse().ok())
        .unwrap_or(f64::NAN)
}
