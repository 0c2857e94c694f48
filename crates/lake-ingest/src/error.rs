//! The error type of `lake-ingest`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Kafka could not be reached or refused a request.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A table write or commit failed in a way retrying will not fix.
    #[error(transparent)]
    Table(#[from] lake_table::Error),
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error(transparent)]
    KafkaClient(#[from] lake_kafka::Error),
    /// The pipeline cannot be read, or names no such dataset.
    #[error(transparent)]
    Spec(#[from] lake_spec::Error),
    /// Settings or table contents that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A dataset's declaration cannot be ingested as it stands.
    #[error("{0}")]
    Dataset(String),
    /// Shutdown did not finish within its deadline.
    #[error("{0}")]
    Shutdown(String),
}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        Error::Kafka(error.to_string())
    }
}
