//! The consumer thread's per-record work before decoding: generated tweets
//! taken into a chunk (the size checks and the copy), as ingest does for
//! every Kafka record. The syntax checks come with decoding, in the one
//! strict pass or the checked path (the bronze bench measures both).
//!
//! cargo bench -p lake-ingest --bench records
//!
//! Reports MB/s of payload; criterion compares each run with the last.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lake_ingest::decode::{Chunk, Coordinates};

mod common;

const TWEETS: usize = 100_000;
const MAX_RECORD_BYTES: usize = 1024 * 1024;

fn records(c: &mut Criterion) {
    let payloads = common::tweet_payloads(TWEETS);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let mut chunk = Chunk::with_capacity(TWEETS, bytes + TWEETS);
    let mut group = c.benchmark_group("records");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(20);
    group.bench_function("taken into a chunk", |b| {
        b.iter(|| {
            chunk.clear();
            for (offset, payload) in payloads.iter().enumerate() {
                let at = Coordinates {
                    partition: 0,
                    offset: offset as i64,
                    timestamp_ms: None,
                };
                chunk.push(Some(payload), at, MAX_RECORD_BYTES);
            }
            assert_eq!(chunk.len(), TWEETS);
        })
    });
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
