//! The two source datasets: what their JSON records hold, where they travel
//! (Kafka topic) and where they land (bronze table). `lake generate` writes
//! records of these shapes; `lake ingest` decodes them into these schemas.

use iceberg::spec::{ListType, NestedField, PrimitiveType, Schema, StructType, Type};

use crate::error::{Error, Result};

/// A source dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// Seed 000: a Twitter-like stream.
    Tweets,
    /// Seed 002: network speed tests.
    Speedtest,
}

/// How a dataset's event time is found in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// An RFC 3339 timestamp field (`timestamptz` in the schema).
    Timestamp(&'static str),
    /// A field of epoch milliseconds (`long` in the schema).
    EpochMillis(&'static str),
}

impl Dataset {
    pub const ALL: [Dataset; 2] = [Dataset::Tweets, Dataset::Speedtest];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Tweets => "tweets",
            Dataset::Speedtest => "speedtest",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::config(format!("unknown dataset `{name}`: tweets or speedtest")))
    }

    /// The Kafka topic the dataset is produced to by default.
    pub fn default_topic(self) -> &'static str {
        match self {
            Dataset::Tweets => "tweets",
            Dataset::Speedtest => "speedtest_raw",
        }
    }

    /// The bronze table (namespace `bronze`) records land in.
    pub fn bronze_table(self) -> &'static str {
        match self {
            Dataset::Tweets => "tweets_raw",
            Dataset::Speedtest => "speedtest_raw",
        }
    }

    /// The field whose value keys Kafka messages (one user's records stay in
    /// order on one partition).
    pub fn key_field(self) -> &'static str {
        match self {
            Dataset::Tweets => "user.user_id",
            Dataset::Speedtest => "user_id",
        }
    }

    /// The field that identifies a record (duplicates repeat it).
    pub fn id_field(self) -> &'static str {
        match self {
            Dataset::Tweets => "tweet_id",
            Dataset::Speedtest => "user_id+timestamp",
        }
    }

    pub fn event_time(self) -> EventTime {
        match self {
            Dataset::Tweets => EventTime::Timestamp("created_at"),
            Dataset::Speedtest => EventTime::EpochMillis("timestamp"),
        }
    }

    /// The schema of one JSON record. Required fields are what a record
    /// cannot be stored without (identity and event time); everything else
    /// may be null and is judged later, in silver.
    pub fn payload_schema(self) -> Schema {
        let fields = match self {
            Dataset::Tweets => tweet_fields(),
            Dataset::Speedtest => speedtest_fields(),
        };
        // The field lists are fixed and valid; a failure here is a bug.
        Schema::builder()
            .with_fields(fields)
            .build()
            .unwrap_or_else(|e| panic!("{} payload schema: {e}", self.name()))
    }
}

fn primitive(t: PrimitiveType) -> Type {
    Type::Primitive(t)
}

fn tweet_fields() -> Vec<iceberg::spec::NestedFieldRef> {
    use PrimitiveType::*;
    let user = StructType::new(vec![
        NestedField::required(20, "user_id", primitive(String)).into(),
        NestedField::optional(21, "username", primitive(String)).into(),
        NestedField::optional(22, "display_name", primitive(String)).into(),
        NestedField::optional(23, "followers_count", primitive(Long)).into(),
        NestedField::optional(24, "verified", primitive(Boolean)).into(),
    ]);
    let strings = |element_id| {
        Type::List(ListType::new(
            NestedField::list_element(element_id, primitive(String), false).into(),
        ))
    };
    vec![
        NestedField::required(1, "tweet_id", primitive(String)).into(),
        NestedField::optional(2, "text", primitive(String)).into(),
        NestedField::required(3, "user", Type::Struct(user)).into(),
        NestedField::required(4, "created_at", primitive(Timestamptz)).into(),
        NestedField::optional(5, "hashtags", strings(30)).into(),
        NestedField::optional(6, "mentions", strings(31)).into(),
        NestedField::optional(7, "lang", primitive(String)).into(),
        NestedField::optional(8, "region", primitive(String)).into(),
        NestedField::optional(9, "country", primitive(String)).into(),
        NestedField::optional(10, "sentiment_score", primitive(Double)).into(),
        NestedField::optional(11, "engagement_score", primitive(Long)).into(),
        NestedField::optional(12, "retweet_count", primitive(Long)).into(),
        NestedField::optional(13, "like_count", primitive(Long)).into(),
    ]
}

fn speedtest_fields() -> Vec<iceberg::spec::NestedFieldRef> {
    use PrimitiveType::*;
    vec![
        NestedField::required(1, "timestamp", primitive(Long)).into(),
        NestedField::required(2, "user_id", primitive(String)).into(),
        NestedField::optional(3, "upload_speed", primitive(Double)).into(),
        NestedField::optional(4, "download_speed", primitive(Double)).into(),
        NestedField::optional(5, "latency", primitive(Double)).into(),
        NestedField::optional(6, "location", primitive(String)).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_build_and_name_their_event_time() {
        for dataset in Dataset::ALL {
            let schema = dataset.payload_schema();
            let field = match dataset.event_time() {
                EventTime::Timestamp(f) | EventTime::EpochMillis(f) => f,
            };
            assert!(schema.field_by_name(field).is_some_and(|f| f.required));
            assert_eq!(Dataset::parse(dataset.name()).unwrap(), dataset);
        }
        assert!(Dataset::parse("clicks").is_err());
        assert_eq!(Dataset::Tweets.default_topic(), "tweets");
        assert_eq!(Dataset::Speedtest.bronze_table(), "speedtest_raw");
    }
}
