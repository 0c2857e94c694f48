//! The error type of `lake-query`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Table(#[from] lake_table::Error),
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    /// The query failed to plan or run; the message is DataFusion's, made
    /// readable where we can.
    #[error("{0}")]
    Query(String),
    /// Arguments that name nothing: an unknown table or snapshot, a bad time.
    #[error("{0}")]
    Invalid(String),
    /// One table of a listing could not be read.
    #[error("reading {table}")]
    Reading {
        table: String,
        #[source]
        source: Box<Error>,
    },
    #[error("writing the result: {0}")]
    Output(String),
}
