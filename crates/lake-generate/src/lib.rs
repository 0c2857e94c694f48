//! `lake generate`: the seeds' tweet and speed-test streams, realistic and
//! reproducible, into Kafka or a file.
//!
//! [`Generator`] yields records (key = user id, payload = JSON) with injected
//! faults at set rates: exact duplicates, malformed records (each broken in a
//! known way), late records and rule-breaking values. Same configuration and
//! seed, same bytes. [`run`] sends them at a set rate with a progress bar.

pub mod error;
pub mod faults;
pub mod generator;
pub mod replay;
pub mod run;
mod shape;
pub mod source;
pub mod speedtest;
mod tweets;

pub use error::{Error, Result};
pub use faults::{Fault, FaultRates, InvalidKind, MalformedKind};
pub use generator::{Counts, Generator, GeneratorConfig, Record, Stream};
pub use replay::Replay;
pub use run::{GenerateStatus, Records, RunLimits, Summary, Target, run};
pub use source::{Resolved, Source, resolve};
