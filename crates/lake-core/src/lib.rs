//! Shared foundations of lake: layered configuration, the error type, the
//! Iceberg REST catalog client and storage (FileIO / OpenDAL) setup.

pub mod catalog;
pub mod config;
pub mod error;
pub mod health;
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

/// This process's peak resident set size (`VmHWM`); `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
