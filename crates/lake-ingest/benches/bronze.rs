//! What a bronze table costs to fill, stage by stage: generated tweets
//! taken into chunks, decoded in ingest's one strict pass (and, side by
//! side, the checked way: serde_json's syntax check, then arrow-json), then
//! written to a local
//! bronze table five ways — as ingest writes it (the table's zstd level 1),
//! uncompressed (what zstd adds), and without `_raw` (what keeping the raw
//! record adds; the parsed columns are what a consumer that keeps no raw
//! record writes) with zstd level 1, lz4 and no codec (what the table's
//! codec would trade). One thread, no Kafka, no catalog: the in-process work
//! behind every ingested record, split where a decision about bronze's
//! layout would change it.
//!
//! cargo bench -p lake-ingest --bench bronze      (LAKE_BENCH_TWEETS, default 1 000 000;
//!                                                 LAKE_BENCH_CHUNK, records per chunk, default
//!                                                 ingest's 4 096)
//!
//! Prints the median of three runs of each stage, in seconds and MB written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use iceberg::spec::Schema;
use lake_ingest::bronze::{bronze_definition, bronze_partitioning, distinct_columns};
use lake_ingest::decode::{Chunk, Coordinates, RecordDecoder};
use lake_table::writer::{COMPRESSION_CODEC_PROPERTY, TableWriter};

mod common;
use common::START;

const PARTITIONS: usize = 16;
const RUNS: usize = 3;
const MAX_RECORD_BYTES: usize = 1 << 20;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds and bytes of writing `batches` into a new local table of
/// `schema` with `properties`.
fn write(
    runtime: &tokio::runtime::Runtime,
    dataset: &lake_spec::DatasetSpec,
    schema: &Schema,
    properties: &HashMap<String, String>,
    batches: &[RecordBatch],
) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let partitioning = bronze_partitioning(dataset, schema).expect("partitioning");
    runtime.block_on(async {
        let table = lake_table::testing::local_table_with(
            dir.path(),
            "tweets_raw",
            schema.clone(),
            partitioning,
            properties.clone(),
        )
        .await
        .expect("local table");
        let started = Instant::now();
        let mut writer = TableWriter::new(
            &table,
            lake_ingest::bronze_writer_options(&distinct_columns(dataset)),
        )
        .await
        .expect("writer");
        for batch in batches {
            writer.write(batch).await.expect("write");
        }
        let files = writer.close().await.expect("close");
        let bytes = files.iter().map(|f| f.file_size_in_bytes()).sum();
        (started.elapsed().as_secs_f64(), bytes)
    })
}

fn main() {
    let tweets: usize = std::env::var("LAKE_BENCH_TWEETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let chunk_records: usize = std::env::var("LAKE_BENCH_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(lake_ingest::IngestOptions::default().chunk_records);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dataset = lake_spec::Pipeline::built_in()
        .expect("the built-in pipeline")
        .dataset("tweets")
        .expect("tweets")
        .clone();
    let (schema, _) = bronze_definition(&dataset).expect("bronze schema");
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).expect("arrow schema"));
    let decoder = RecordDecoder::new(&dataset, "tweets", arrow.clone(), false);
    let checked = decoder.clone().checked_only();

    let payloads = common::tweet_payloads(tweets);
    let payload_mb = payloads.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;

    // Checked and decoded as the consumer thread and the decoder do, chunk
    // by chunk; the batches of the last run are written below.
    let (mut check, mut decode, mut decode_checked) = (Vec::new(), Vec::new(), Vec::new());
    let mut batches = Vec::new();
    for run in 0..RUNS {
        batches.clear();
        let (mut checking, mut decoding, mut decoding_checked) = (0.0, 0.0, 0.0);
        let mut chunk = Chunk::sized_for(chunk_records);
        for (i, payload) in payloads.iter().enumerate() {
            let at = Coordinates {
                partition: (i % PARTITIONS) as i32,
                offset: (i / PARTITIONS) as i64,
                timestamp_ms: Some(START / 1000),
            };
            let started = Instant::now();
            chunk.push(Some(payload), at, MAX_RECORD_BYTES);
            checking += started.elapsed().as_secs_f64();
            if chunk.len() == chunk_records || i + 1 == payloads.len() {
                // The two ways take turns going first, chunk by chunk.
                let mut decoded = None;
                let mut by_check = None;
                for way in [run + i, run + i + 1].map(|w| w % 2) {
                    let started = Instant::now();
                    if way == 0 {
                        decoded = Some(decoder.decode(&chunk, START).expect("decode"));
                        decoding += started.elapsed().as_secs_f64();
                    } else {
                        by_check = Some(checked.decode(&chunk, START).expect("decode"));
                        decoding_checked += started.elapsed().as_secs_f64();
                    }
                }
                let (decoded, by_check) = (decoded.expect("decoded"), by_check.expect("decoded"));
                assert!(decoded.rejected.is_empty(), "a generated tweet was refused");
                assert_eq!(decoded.bronze, by_check.bronze, "the two ways' rows");
                batches.extend(decoded.bronze);
                chunk.clear();
            }
        }
        check.push(checking);
        decode.push(decoding);
        decode_checked.push(decoding_checked);
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, tweets, "decoded rows");

    let without_raw = Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(
            schema
                .as_struct()
                .fields()
                .iter()
                .filter(|f| f.name != lake_ingest::bronze::RAW)
                .cloned(),
        )
        .build()
        .expect("schema without _raw");
    let raw_index = arrow
        .index_of(lake_ingest::bronze::RAW)
        .expect("bronze has _raw");
    let keep: Vec<usize> = (0..arrow.fields().len())
        .filter(|i| *i != raw_index)
        .collect();
    let parsed: Vec<RecordBatch> = batches
        .iter()
        .map(|b| b.project(&keep).expect("projection"))
        .collect();
    let as_declared = HashMap::new();
    let uncompressed = HashMap::from([(
        COMPRESSION_CODEC_PROPERTY.to_string(),
        "uncompressed".to_string(),
    )]);
    let lz4 = HashMap::from([(COMPRESSION_CODEC_PROPERTY.to_string(), "lz4".to_string())]);
    let mut written = Vec::new();
    // Each way: its name, the table's schema and properties, what is written.
    for (name, schema, properties, batches) in [
        (
            "write, as ingest does (zstd 1)",
            &schema,
            &as_declared,
            &batches,
        ),
        ("write, uncompressed", &schema, &uncompressed, &batches),
        (
            "write without _raw (zstd 1)",
            &without_raw,
            &as_declared,
            &parsed,
        ),
        ("write without _raw (lz4)", &without_raw, &lz4, &parsed),
        (
            "write without _raw (uncompressed)",
            &without_raw,
            &uncompressed,
            &parsed,
        ),
    ] {
        let runs: Vec<(f64, u64)> = (0..RUNS)
            .map(|_| write(&runtime, &dataset, schema, properties, batches))
            .collect();
        let seconds = median(runs.iter().map(|r| r.0).collect());
        written.push((name, seconds, runs[0].1));
    }

    let check = median(check);
    let decode = median(decode);
    let decode_checked = median(decode_checked);
    println!(
        "bronze: {tweets} tweets, {payload_mb:.0} MB of JSON in chunks of {chunk_records}, one thread, medians of {RUNS}"
    );
    println!("bronze/check: {check:.2}s");
    println!("bronze/decode: {decode:.2}s");
    println!("bronze/decode the checked way: {decode_checked:.2}s");
    println!(
        "bronze/one strict pass: check + decode {:.2}× the checked way's",
        (check + decode) / (check + decode_checked)
    );
    for (name, seconds, bytes) in &written {
        println!(
            "bronze/{name}: {seconds:.2}s, {:.0} MB",
            *bytes as f64 / 1e6
        );
    }
    let ingest = check + decode + written[0].1;
    let zstd = written[0].1 - written[1].1;
    let raw = written[0].1 - written[2].1;
    println!(
        "bronze/shares of check + decode + write ({ingest:.2}s): zstd {:.0} %, keeping _raw {:.0} % \
         ({:.2}s and {:.0} MB of the file)",
        100.0 * zstd / ingest,
        100.0 * raw / ingest,
        raw,
        (written[0].2 as f64 - written[2].2 as f64) / 1e6
    );
    // The codec is the table's choice (write.parquet.compression-codec):
    // what lz4 would trade against zstd's level 1 where `_raw` is left out.
    let parsed_ingest = check + decode + written[2].1;
    println!(
        "bronze/lz4 instead of zstd 1, without _raw: {:+.0} % of check + decode + write ({parsed_ingest:.2}s), \
         {:.2}× the bytes",
        100.0 * (written[3].1 - written[2].1) / parsed_ingest,
        written[3].2 as f64 / written[2].2 as f64
    );
}
