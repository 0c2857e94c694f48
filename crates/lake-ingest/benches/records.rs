//! The consumer thread's per-record checks: generated tweets pushed into a
//! chunk (size, UTF-8, a JSON object, nesting depth, serde_json's syntax
//! check, the copy into the chunk), as ingest does for every Kafka record
//! before decoding.
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
    group.bench_function("checked into a chunk", |b| {
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
