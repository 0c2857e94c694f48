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
    /// Settings that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A consumed-position summary that is not a snapshot id: the table was
    /// written by something else, or by hand.
    #[error("{table}: `{key}` is `{value}`, not a snapshot id")]
    Position {
        table: String,
        key: String,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// A model's column that cannot become the table's column type.
    #[error("column `{column}`: the model gives {from}, the table has {to}")]
    Cast {
        column: String,
        from: String,
        to: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A writer task of a model ended abnormally.
    #[error("{model}: a writer task ended abnormally")]
    Task {
        model: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A broken invariant inside lake: a bug, not something a user gave.
    #[error("internal error (a bug in lake): {0}")]
    Internal(String),
}
