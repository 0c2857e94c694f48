//! The error type of `lake-quickstart`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] lake_spec::Error),
    #[error(transparent)]
    Catalog(#[from] lake_catalog::Error),
    #[error("connecting to the embedded catalog")]
    Connect(#[source] lake_table::Error),
    /// librdkafka's in-process cluster refused to start or make a topic.
    #[error("{what} on the in-process Kafka cluster")]
    Mock {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("generating {dataset}")]
    Generate {
        dataset: String,
        #[source]
        source: lake_generate::Error,
    },
    #[error("ingesting")]
    Ingest(#[source] lake_ingest::Error),
    #[error("transforming")]
    Transform(#[source] lake_transform::Error),
    /// The quickstart's own key for hashing personal data cannot be read or kept.
    #[error("the key for hashing personal data in {}", path.display())]
    KeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compacting")]
    Maintain(#[source] lake_maintain::Error),
    #[error(transparent)]
    Query(#[from] lake_query::Error),
    /// The pipeline has no dataset a built-in generator writes.
    #[error(
        "{source_dir} has no dataset a built-in generator writes (generator = \"tweets\" or \
         \"speedtest\"); quickstart has nothing to generate"
    )]
    NothingToGenerate { source_dir: String },
    /// Generated records the in-process cluster did not take.
    #[error("{failed} records were not delivered to the in-process Kafka cluster: {first_error}")]
    NotDelivered { failed: u64, first_error: String },
    /// Ingest read fewer records than were generated: a bug, as the
    /// in-process cluster keeps every record of a run.
    #[error("ingest read {consumed} of the {expected} generated records")]
    Lost { consumed: u64, expected: u64 },
    /// Some tables failed to compact; each was reported as it failed.
    #[error("{0} tables failed to compact")]
    Compaction(usize),
    #[error("the generator's thread ended abnormally")]
    Thread(#[from] tokio::task::JoinError),
}
