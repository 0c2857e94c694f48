//! The error type of `lake-ingest`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Kafka could not be reached or refused a request; the message says
    /// what to check.
    #[error("kafka: {0}")]
    Kafka(String),
    /// librdkafka refused the client settings (`kafka.properties`, `-X`).
    #[error("invalid Kafka settings")]
    Settings(#[source] rdkafka::error::KafkaError),
    /// A Kafka client call failed.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
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
    /// Settings that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A snapshot summary whose Kafka offsets cannot be read: the table was
    /// written by something else, or by hand.
    #[error("{table}: snapshot {snapshot} has unreadable {key}")]
    Offsets {
        table: String,
        snapshot: i64,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A task or thread of the ingest pipeline ended abnormally.
    #[error("the {what} ended abnormally")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot start the consumer thread")]
    Thread(#[source] std::io::Error),
    /// A broken invariant inside lake: a bug, not something a user gave.
    #[error("internal error (a bug in lake): {0}")]
    Internal(String),
    /// A dataset's declaration cannot be ingested as it stands.
    #[error("{0}")]
    Dataset(String),
    /// Shutdown did not finish within its deadline.
    #[error("{0}")]
    Shutdown(String),
    /// A table writer ended; its own error says why.
    #[error("a table writer stopped unexpectedly")]
    WriterStopped,
    /// The catalog or the storage stayed unreachable for the whole retry budget.
    #[error(
        "gave up after {} of retries (--retry-budget): the catalog at {uri} or its storage \
         failed: {cause}",
        lake_core::health::age(*waited)
    )]
    Outage {
        uri: String,
        waited: std::time::Duration,
        cause: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// True when the catalog or the storage failed in a way that may end by
    /// itself, so that starting over from the tables' offsets later can work.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Table(e) => {
                e.is_outage() || matches!(e, lake_table::Error::TooManyConflicts { .. })
            }
            Error::Iceberg(e) => lake_table::error::outage_in_chain(e),
            _ => false,
        }
    }

    /// What failed, in plain words: where nothing answered, or what answered
    /// with which status, rather than the client library's wording.
    pub fn plain_cause(&self) -> String {
        lake_table::error::describe_outage(self)
    }
}
