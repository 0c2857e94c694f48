//! Kafka client settings and checks shared by every lake command that talks
//! to Kafka (`lake generate`, `lake ingest`).

use std::time::Duration;

use lake_core::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka refused the settings (an unknown property, a bad value).
    #[error("invalid Kafka settings: {0}")]
    Settings(#[source] Box<KafkaError>),
    /// No broker answered within the timeout.
    #[error(
        "no Kafka broker at {brokers} answered within {}s ({cause}); check --brokers / \
         kafka.brokers and that the cluster is up",
        timeout.as_secs()
    )]
    Unreachable {
        brokers: String,
        timeout: Duration,
        cause: String,
        #[source]
        source: Option<Box<KafkaError>>,
    },
    /// The admin request creating a topic failed.
    #[error("cannot create topic `{topic}`: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: Box<KafkaError>,
    },
    /// The cluster answered the creation of a topic with an error.
    #[error(
        "topic `{topic}` does not exist and creating it failed ({code}); create it with your \
         Kafka tools or enable auto-creation"
    )]
    TopicRefused {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// A topic was created but the cluster's metadata does not show it.
    #[error("topic `{0}` was created but does not show up in the cluster metadata")]
    TopicNotVisible(String),
}

/// A librdkafka configuration: `kafka.brokers`, then `kafka.properties`,
/// then `-X key=value` pairs, later ones winning.
pub fn client_config(kafka: &KafkaConfig, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

/// Parses one `-X key=value`.
pub fn parse_property(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not key=value")),
    }
}

/// What the cluster says about a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: usize,
    pub created: bool,
}

fn unreachable(brokers: &str, timeout: Duration, source: Option<KafkaError>, cause: &str) -> Error {
    Error::Unreachable {
        brokers: brokers.to_string(),
        timeout,
        cause: cause.to_string(),
        source: source.map(Box::new),
    }
}

/// Confirms the cluster answers, and returns how many partitions `topic`
/// has (0 when it does not exist).
pub fn topic_partitions(config: &ClientConfig, topic: &str, timeout: Duration) -> Result<usize> {
    let brokers = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let consumer: BaseConsumer = config.create().map_err(|e| Error::Settings(Box::new(e)))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unreachable(&brokers, timeout, Some(e.clone()), &e.to_string()))?;
    if metadata.brokers().is_empty() {
        return Err(unreachable(
            &brokers,
            timeout,
            None,
            "no brokers in the metadata",
        ));
    }
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}

/// Makes sure `topic` exists, creating it with `partitions` partitions when
/// it does not.
pub async fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<TopicInfo> {
    let existing = topic_partitions(config, topic, timeout)?;
    if existing > 0 {
        return Ok(TopicInfo {
            name: topic.to_string(),
            partitions: existing,
            created: false,
        });
    }
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| Error::Settings(Box::new(e)))?;
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(replication),
            )],
            &options,
        )
        .await
        .map_err(|source| Error::CreateTopic {
            topic: topic.to_string(),
            source: Box::new(source),
        })?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::TopicRefused { topic, code }),
        }
    }
    // Metadata catches up with a new topic a moment later.
    for _ in 0..50 {
        let now = topic_partitions(config, topic, timeout)?;
        if now > 0 {
            return Ok(TopicInfo {
                name: topic.to_string(),
                partitions: now,
                created: true,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::TopicNotVisible(topic.to_string()))
}

/// Brokers up and known, from librdkafka's statistics: those the client
/// learned from the cluster, or the bootstrap entries until it has learned
/// any. What `/ready` reports as `N of M brokers up`.
pub fn brokers_up(statistics: &rdkafka::Statistics) -> (usize, usize) {
    let learned: Vec<&rdkafka::statistics::Broker> = statistics
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .collect();
    let brokers: Vec<&rdkafka::statistics::Broker> = if learned.is_empty() {
        statistics
            .brokers
            .values()
            .filter(|b| b.source == "configured")
            .collect()
    } else {
        learned
    };
    let up = brokers.iter().filter(|b| b.state == "UP").count();
    (up, brokers.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_layer() {
        assert_eq!(
            parse_property("compression.type=zstd").unwrap(),
            ("compression.type".to_string(), "zstd".to_string())
        );
        assert_eq!(parse_property("sasl.jaas=a=b").unwrap().1, "a=b");
        assert!(parse_property("novalue").is_err());
        let mut kafka = KafkaConfig::default();
        kafka.properties.insert("linger.ms".into(), "5".into());
        let config = client_config(&kafka, &[("linger.ms".into(), "50".into())]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("bootstrap.servers"), Some("localhost:9092"));
    }
}
