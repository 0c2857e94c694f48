//! The error type of `lake-generate`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Kafka refused the producer's settings.
    #[error("invalid Kafka settings: {0}")]
    Settings(#[source] rdkafka::error::KafkaError),
    /// A record could not be handed to the producer.
    #[error("kafka: cannot send: {0}")]
    Send(#[source] rdkafka::error::KafkaError),
    /// The output file could not be written.
    #[error("{0}")]
    Io(String),
    /// The pipeline cannot be read, or names no such dataset.
    #[error(transparent)]
    Spec(#[from] lake_spec::Error),
    /// The request cannot work (a rate out of range, …).
    #[error("{0}")]
    Invalid(String),
}
