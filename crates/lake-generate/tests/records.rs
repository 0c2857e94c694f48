//! Every generated record is what it claims to be: well-formed ones decode
//! into the bronze schema, malformed ones fail in their stated way; fault
//! rates hold; the same seed gives the same bytes.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow_json::ReaderBuilder;
use arrow_schema::SchemaRef;
use lake_core::datasets::{Dataset, EventTime};
use lake_generate::{Fault, FaultRates, Generator, GeneratorConfig, MalformedKind};

const START: i64 = 1_767_225_600_000_000;
const N: u64 = 100_000;

fn config(dataset: Dataset, seed: u64) -> GeneratorConfig {
    let mut config = GeneratorConfig::new(dataset, seed, START);
    config.population = 5_000;
    config.faults = FaultRates {
        duplicates: 0.01,
        malformed: 0.002,
        late: 0.01,
        invalid: 0.005,
    };
    config.late_by = Duration::from_secs(7200);
    config
}

fn bronze_arrow(dataset: Dataset) -> SchemaRef {
    Arc::new(iceberg::arrow::schema_to_arrow_schema(&dataset.payload_schema()).unwrap())
}

/// Decodes one JSON record into the bronze payload schema.
fn decode(schema: &SchemaRef, payload: &[u8]) -> Result<usize, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let consumed = decoder.decode(payload).map_err(|e| e.to_string())?;
    if consumed != payload.len() {
        return Err(format!("decoded {consumed} of {} bytes", payload.len()));
    }
    match decoder.flush().map_err(|e| e.to_string())? {
        Some(batch) => Ok(batch.num_rows()),
        None => Err("no row".into()),
    }
}

fn event_micros(dataset: Dataset, value: &serde_json::Value) -> i64 {
    match dataset.event_time() {
        EventTime::Timestamp(field) => value[field]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_microsecond(),
        EventTime::EpochMillis(field) => value[field].as_i64().unwrap() * 1000,
    }
}

fn check_dataset(dataset: Dataset) {
    let schema = bronze_arrow(dataset);
    let mut generator = Generator::new(config(dataset, 42));
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut kinds: HashMap<&'static str, u64> = HashMap::new();
    for index in 0..N {
        let record = generator.next_record();
        let payload = record.payload.to_vec();
        match record.fault {
            Fault::Malformed(kind) => {
                *kinds.entry("malformed").or_default() += 1;
                assert!(
                    decode(&schema, &payload).is_err(),
                    "{kind:?} decoded: {}",
                    String::from_utf8_lossy(&payload)
                );
                let json = serde_json::from_slice::<serde_json::Value>(&payload);
                match kind {
                    MalformedKind::Truncated => assert!(json.is_err()),
                    MalformedKind::WrongType(field) => {
                        assert_eq!(json.unwrap()[field], "not-a-number");
                    }
                    MalformedKind::MissingField(field) => {
                        assert!(json.unwrap().get(field).is_none(), "{field} still there");
                    }
                }
            }
            fault => {
                assert_eq!(
                    decode(&schema, &payload),
                    Ok(1),
                    "{fault:?}: {}",
                    String::from_utf8_lossy(&payload)
                );
                let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                let key_field = dataset.key_field();
                let key = key_field
                    .split('.')
                    .fold(&value, |v, part| &v[part])
                    .as_str()
                    .unwrap();
                assert_eq!(key.as_bytes(), record.key);
                let nominal = START + index as i64 * 1000;
                let event = event_micros(dataset, &value);
                match fault {
                    Fault::Duplicate => {
                        *kinds.entry("duplicate").or_default() += 1;
                        assert!(
                            seen.contains(&payload),
                            "a duplicate repeats an earlier record"
                        );
                    }
                    Fault::Late => {
                        *kinds.entry("late").or_default() += 1;
                        let lag = nominal - event;
                        assert!(
                            (7_199_000_000..=7_201_000_000).contains(&lag),
                            "late by {lag}µs"
                        );
                    }
                    Fault::Invalid(_) => *kinds.entry("invalid").or_default() += 1,
                    _ => {
                        assert!((nominal - event).abs() <= 200_000, "on time within jitter");
                        assert!(!seen.contains(&payload), "fresh records are unique");
                    }
                }
                seen.insert(payload);
            }
        }
    }
    let counts = generator.counts();
    assert_eq!(counts.total, N);
    for (name, rate, count) in [
        ("duplicate", 0.01, counts.duplicates),
        ("malformed", 0.002, counts.malformed),
        ("late", 0.01, counts.late),
        ("invalid", 0.005, counts.invalid),
    ] {
        let expected = N as f64 * rate;
        assert_eq!(kinds.get(name).copied().unwrap_or(0), count, "{name}");
        assert!(
            (count as f64 - expected).abs() <= expected * 0.1,
            "{}: {name} {count}, expected {expected} ± 10%",
            dataset.name()
        );
    }
}

#[test]
fn tweets_decode_into_bronze_or_fail_as_stated() {
    check_dataset(Dataset::Tweets);
}

#[test]
fn speedtests_decode_into_bronze_or_fail_as_stated() {
    check_dataset(Dataset::Speedtest);
}

fn bytes(config: GeneratorConfig, n: u64) -> Vec<u8> {
    let mut generator = Generator::new(config);
    let mut out = Vec::new();
    for _ in 0..n {
        let record = generator.next_record();
        out.extend_from_slice(record.key);
        out.push(b'\t');
        out.extend_from_slice(record.payload);
        out.push(b'\n');
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    for dataset in Dataset::ALL {
        let a = bytes(config(dataset, 7), N);
        let b = bytes(config(dataset, 7), N);
        assert!(a == b, "{} differs between runs", dataset.name());
        let c = bytes(config(dataset, 8), 1000);
        assert_ne!(
            &a[..c.len().min(a.len())],
            &c[..],
            "another seed, other data"
        );
    }
}
