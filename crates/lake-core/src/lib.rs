//! Shared foundations of lake: layered configuration, the error type, the
//! Iceberg REST catalog client and storage (FileIO / OpenDAL) setup.

pub mod catalog;
pub mod config;
pub mod datasets;
pub mod error;
pub mod metrics;
pub mod storage;

pub use config::{Config, Overrides, Secret};
pub use error::{Error, Result};

/// Microseconds since the Unix epoch (Iceberg's timestamp unit); 0 if the
/// clock is before 1970.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
