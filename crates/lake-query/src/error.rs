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
    /// The result could not be written out: the reader went away
    /// (`lake sql … | head`) or the disk is full.
    #[error("writing the result")]
    Output(#[from] std::io::Error),
    /// Arrow refused to format or assemble the rows.
    #[error("formatting the result")]
    Format(#[from] datafusion::arrow::error::ArrowError),
}
