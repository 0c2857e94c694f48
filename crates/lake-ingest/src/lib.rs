//! `lake ingest`: Kafka → Iceberg bronze tables, exactly once, with a
//! dead-letter table beside each.
//!
//! - [`bronze`]: table definitions, creation, the offsets a snapshot records.
//! - [`decode`]: payloads → bronze rows and dead letters, in one strict pass
//!   where it decodes exactly as the checked path (serde_json's check, then
//!   arrow-json) would.
//! - [`ingest()`]: the consumer, epochs, commits, rebalances.

pub mod bronze;
pub mod decode;
pub mod error;
mod evolve;
mod ingest;
mod onepass;
mod progress;
mod sink;
mod status;

pub use bronze::{Route, routes};
pub use error::{Error, Result};
pub use ingest::{GroupProtocol, IngestOptions, IngestSummary, ingest};
pub use sink::bronze_writer_options;
pub use status::IngestStatus;
