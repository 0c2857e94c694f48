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
    /// A model whose output cannot be written where it goes.
    #[error("{0}")]
    Models(String),
    /// A dataset name or pipeline directory that cannot be used.
    #[error(transparent)]
    Spec(#[from] lake_spec::Error),
    /// Models that do not plan against the declared schemas; nothing ran.
    #[error("{0}\nnothing was run; `lake validate` checks a pipeline without data")]
    Pipeline(lake_spec::Problems),
    /// Too much of the input broke a quality rule (`--fail-on-quarantine-ratio`).
    #[error("{0}")]
    QuarantineRatio(String),
    /// Settings or table contents that cannot work.
    #[error("{0}")]
    Invalid(String),
}
