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
