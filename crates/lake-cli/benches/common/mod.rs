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
