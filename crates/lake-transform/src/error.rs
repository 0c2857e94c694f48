//! The error type of `lake-transform`.

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
    /// A model's SQL failed to plan or run.
    #[error("model {model}: {source}")]
    Model {
        model: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A models directory or file that cannot be used.
    #[error("{0}")]
    Models(String),
    /// Too much of the input broke a quality rule (`--fail-on-quarantine-ratio`).
    #[error("{0}")]
    QuarantineRatio(String),
    /// Settings or table contents that cannot work.
    #[error("{0}")]
    Invalid(String),
}
