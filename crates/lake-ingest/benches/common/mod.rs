//! What lake-ingest's benches share: the generated tweets they feed in.

use lake_generate::{Generator, GeneratorConfig};

/// The first tweet's time (2026-01-01), in microseconds.
pub const START: i64 = 1_767_225_600_000_000;

/// `count` generated tweets, seed 42, as the payloads Kafka would carry.
pub fn tweet_payloads(count: usize) -> Vec<Vec<u8>> {
    let mut generator = Generator::new(GeneratorConfig::new(
        lake_generate::Stream::Tweets,
        42,
        START,
    ));
    (0..count)
        .map(|_| generator.next_record().payload.to_vec())
        .collect()
}
