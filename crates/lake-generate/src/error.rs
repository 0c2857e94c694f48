//! The error type of `lake-generate`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No broker answered within the connect timeout.
    #[error("{0}")]
    Unreachable(String),
    /// Kafka refused something (bad settings, topic creation, a send).
    #[error("kafka: {0}")]
    Kafka(String),
    /// The output file could not be written.
    #[error("{0}")]
    Io(String),
    /// The request cannot work (a rate out of range, …).
    #[error("{0}")]
    Invalid(String),
}
