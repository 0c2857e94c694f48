//! The error type of `lake-run`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Ingest stopped with an error it could not ride out.
    #[error(transparent)]
    Ingest(#[from] lake_ingest::Error),
    /// A transform round failed in a way waiting will not fix (a model, a
    /// quality threshold, a table written by something else).
    #[error(transparent)]
    Transform(#[from] lake_transform::Error),
    #[error(transparent)]
    Spec(#[from] lake_spec::Error),
    #[error(transparent)]
    Table(#[from] lake_table::Error),
    /// Transform rounds kept failing on the catalog or its storage for
    /// longer than the retry budget.
    #[error(
        "gave up after {} of failing transform rounds (--retry-budget): {cause}",
        lake_core::health::age(*.waited)
    )]
    Outage {
        waited: std::time::Duration,
        cause: String,
        #[source]
        source: Box<lake_transform::Error>,
    },
    /// A task of the run ended without an answer (it panicked): a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether another round may succeed where this one failed: the catalog
    /// or the storage was out, or another writer (a `lake transform` beside
    /// the run) committed the same table first, so the round's commit was
    /// refused and a new round starts from what that writer consumed.
    pub(crate) fn retryable(error: &lake_transform::Error) -> bool {
        match error {
            lake_transform::Error::Table(e) => e.is_outage() || e.is_conflict(),
            other => lake_table::error::outage_in_chain(other),
        }
    }
}
