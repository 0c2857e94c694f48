//! The error type of `lake-table`.

use iceberg::TableIdent;
use iceberg::table::Table;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong writing to or committing an Iceberg table.
///
/// The conflict variants carry the table as it is now, so a caller (an ingest
/// zombie, a compaction group) can decide what to do without another load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The commit's precondition no longer holds: the table is not at the
    /// snapshot the caller built on, or concurrent data landed where this commit
    /// replaces data. Nothing was committed.
    #[error("commit to {table} refused: {reason}")]
    Conflict {
        table: TableIdent,
        reason: String,
        current: Box<Table>,
    },

    /// A file this commit removes is no longer live (another commit already
    /// replaced or deleted it). Nothing was committed.
    #[error("commit to {table} refused: {path} is no longer live")]
    FileNotLive {
        table: TableIdent,
        path: String,
        current: Box<Table>,
    },

    /// Every attempt lost a race with another writer.
    #[error("commit to {table} gave up after {attempts} attempts lost to concurrent commits")]
    TooManyConflicts { table: TableIdent, attempts: u32 },

    /// The catalog failed in a way that leaves open whether the commit landed,
    /// and reloading could not tell either.
    #[error("commit to {table} may or may not have landed: {message}")]
    CommitStateUnknown { table: TableIdent, message: String },

    /// The catalog answered with an error that is not a conflict.
    #[error("catalog: {0}")]
    Catalog(String),

    /// The request cannot work on this table (unsupported format version,
    /// a batch that does not fit the schema, …).
    #[error("{0}")]
    Invalid(String),

    /// A declaration asks for a schema the table cannot take (a changed type,
    /// a new `not null` field, …). Nothing was written.
    #[error("{0}")]
    SchemaChange(String),

    /// A broken invariant inside lake: a bug, not something a user gave.
    #[error("internal error (a bug in lake): {0}")]
    Internal(String),

    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),

    #[error(transparent)]
    Core(#[from] lake_core::Error),

    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),

    #[error("storage: {0}")]
    Storage(#[from] opendal::Error),
}

impl Error {
    /// True for the refusals a caller may resolve by reloading and rebuilding.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::FileNotLive { .. } | Error::TooManyConflicts { .. }
        )
    }

    /// True when a commit may or may not have landed: the one failure after
    /// which retrying blindly could write the same data twice.
    pub fn is_commit_state_unknown(&self) -> bool {
        matches!(self, Error::CommitStateUnknown { .. })
    }

    /// The table as it is now, when the error carries it.
    pub fn current_table(&self) -> Option<&Table> {
        match self {
            Error::Conflict { current, .. } | Error::FileNotLive { current, .. } => Some(current),
            _ => None,
        }
    }
}
