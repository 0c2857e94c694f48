//! The error type of `lake-maintain`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Table(#[from] lake_table::Error),
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A table this operation cannot safely work on; the message says why.
    #[error("{0}")]
    Unsupported(String),
    /// Settings that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A failure of lake itself, not of its input.
    #[error("internal error: {0}")]
    Internal(String),
}
