//! Table upkeep: `lake compact` (bin-pack small files per partition) and, in
//! time, `lake maintain` (snapshot expiry with file deletion, orphans,
//! manifests, retention).

pub mod compact;
pub mod error;

pub use compact::{CompactOptions, CompactReport, Group, compact, plan};
pub use error::{Error, Result};
