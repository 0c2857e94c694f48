//! The Kafka broker `tests/run` started. Every test of a run shares it, so
//! each one names its own topics and consumer groups ([`Kafka::unique`]).
//! Topics are created through the admin API, as an operator's tools would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{required_env, run_java};

/// How long one admin or metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The test broker.
#[derive(Clone, Debug)]
pub struct Kafka {
    brokers: String,
}

/// One consumed message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A consumer group as Kafka's own admin client reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// `Classic` or `Consumer` (KIP-848): the protocol the broker runs the group with.
    pub protocol: String,
    /// `Empty`, `Stable`, … (`Dead` for a group the broker does not know).
    pub state: String,
    /// Committed offset per topic and partition.
    pub offsets: BTreeMap<(String, i32), i64>,
}

impl GroupView {
    /// The committed offsets of one topic, by partition.
    pub fn offsets_of(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.offsets
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, partition), offset)| (*partition, *offset))
            .collect()
    }
}

/// One test's topics on the shared broker, one per dataset, and the `lake`
/// arguments that route each dataset through its own.
#[derive(Clone, Debug)]
pub struct DatasetTopics {
    pub kafka: Kafka,
    pub tweets: String,
    pub speedtest: String,
}

impl DatasetTopics {
    /// Creates both topics, each with `partitions` partitions.
    pub async fn create(partitions: i32) -> Result<Self> {
        let topics = Self {
            kafka: Kafka::from_env(),
            tweets: Kafka::unique("tweets"),
            speedtest: Kafka::unique("speedtest_raw"),
        };
        for topic in [&topics.tweets, &topics.speedtest] {
            topics.kafka.create_topic(topic, partitions).await?;
        }
        Ok(topics)
    }

    /// The topic of `dataset` (`tweets` or `speedtest`).
    pub fn of(&self, dataset: &str) -> &str {
        match dataset {
            "tweets" => &self.tweets,
            _ => &self.speedtest,
        }
    }

    /// `--brokers … --topic tweets=… --topic speedtest=…` for `lake ingest`.
    pub fn ingest_args(&self) -> Vec<String> {
        vec![
            "--brokers".into(),
            self.kafka.brokers().into(),
            "--topic".into(),
            format!("tweets={}", self.tweets),
            "--topic".into(),
            format!("speedtest={}", self.speedtest),
        ]
    }

    /// `--brokers … --topic …` for `lake generate dataset`.
    pub fn generate_args(&self, dataset: &str) -> Vec<String> {
        vec![
            "--brokers".into(),
            self.kafka.brokers().into(),
            "--topic".into(),
            self.of(dataset).into(),
        ]
    }
}

impl Kafka {
    /// The broker `tests/run` started (`LAKE_TEST_KAFKA_BROKERS`).
    pub fn from_env() -> Self {
        Self {
            brokers: required_env("LAKE_TEST_KAFKA_BROKERS"),
        }
    }

    /// A broker of a test's own ([`crate::OwnBroker`]).
    pub fn at(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
        }
    }

    /// `host:port` for `--brokers`.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A topic or group name no other test uses: `base` and a random suffix.
    pub fn unique(base: &str) -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{base}-{}", &suffix[..12])
    }

    /// A librdkafka configuration reaching the broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// Creates `topic` through the admin API and waits until the broker's
    /// metadata shows all its partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.create_topic_with(topic, partitions, &[]).await
    }

    /// [`Kafka::create_topic`] with topic configuration, e.g.
    /// `max.message.bytes`.
    pub async fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        config: &[(&str, &str)],
    ) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (key, value) in config {
            new = new.set(key, value);
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(REQUEST_TIMEOUT))
            .request_timeout(Some(REQUEST_TIMEOUT));
        for result in admin.create_topics(&[new], &options).await? {
            if let Err((name, code)) = result {
                bail!("creating topic {name} at {}: {code}", self.brokers);
            }
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while self.partitions(topic)? < partitions as usize {
            if Instant::now() >= deadline {
                bail!("topic {topic} was created but its partitions do not show in the metadata");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// How many partitions `topic` has (0 when it does not exist).
    pub fn partitions(&self, topic: &str) -> Result<usize> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| format!("metadata of {topic} from {}", self.brokers))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    }

    /// The end offset (high watermark) of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        let consumer: BaseConsumer = self.client_config().create()?;
        (0..self.partitions(topic)? as i32)
            .map(|p| Ok((p, consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?.1)))
            .collect()
    }

    /// A consumer group's protocol, state and committed offsets, read with
    /// Kafka's Java admin client (tests/java/GroupOffsets.java).
    pub fn group(&self, group: &str) -> Result<GroupView> {
        self.group_command(&[&self.brokers, group])
    }

    /// Sets `group`'s committed offsets on every partition of `topic` back
    /// to 0 (the group must have no members), then reports it as
    /// [`Kafka::group`] does.
    pub fn rewind_group(&self, group: &str, topic: &str) -> Result<GroupView> {
        self.group_command(&[&self.brokers, group, "rewind", topic])
    }

    fn group_command(&self, args: &[&str]) -> Result<GroupView> {
        let libs = required_env("LAKE_TEST_KAFKA_LIBS");
        let out = run_java("GroupOffsets", &format!("{libs}/*"), args)?;
        let mut view = GroupView {
            protocol: String::new(),
            state: String::new(),
            offsets: BTreeMap::new(),
        };
        for line in out.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["group", protocol, state] => {
                    view.protocol = protocol.to_string();
                    view.state = state.to_string();
                }
                ["offset", topic, partition, offset] => {
                    view.offsets
                        .insert((topic.to_string(), partition.parse()?), offset.parse()?);
                }
                _ => bail!("unexpected line from GroupOffsets: {line}"),
            }
        }
        Ok(view)
    }

    /// Reads `topic` from the beginning until `expected` messages arrived
    /// and then a quiet second passed (so extra messages would be seen), or
    /// fails after `timeout`.
    pub fn consume_all(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<Consumed>> {
        use rdkafka::Message;
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", Self::unique("verify"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[topic])?;
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::with_capacity(expected);
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    quiet_since = None;
                    messages.push(Consumed {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().unwrap_or_default().to_vec(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(e)) => bail!("consuming {topic}: {e}"),
                None if messages.len() >= expected => {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(1) {
                        return Ok(messages);
                    }
                }
                None => {}
            }
        }
        bail!(
            "consumed {} of {expected} messages from {topic} within {timeout:?}",
            messages.len()
        )
    }
}
