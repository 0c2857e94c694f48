//! Writer throughput: tweet-shaped Arrow batches in, partitioned zstd Parquet
//! data files out, on the local filesystem.
//!
//! cargo bench -p lake-table --bench writer
//!
//! Reports MB/s of Arrow input (in-memory size of the batches) and the
//! Parquet bytes written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iceberg::spec::{
    ListType, NestedField, PrimitiveType, Schema, StructType, Transform, Type, UnboundPartitionSpec,
};
use lake_table::{TableWriter, WriterOptions};

const ROWS: usize = 200_000;
const BATCH: usize = 8_192;
const WORDS: &[&str] = &[
    "data", "stream", "lake", "rust", "kafka", "iceberg", "fast", "today", "love", "new",
    "release", "great", "query", "morning", "team", "build", "ship", "weekend", "music", "news",
];
const LANGS: &[&str] = &["en", "es", "fr", "de", "pt", "ja"];
const REGIONS: &[&str] = &[
    "North America",
    "Europe",
    "Asia",
    "South America",
    "Africa",
    "Oceania",
];

fn schema() -> Schema {
    let s =
        |id, name| NestedField::required(id, name, Type::Primitive(PrimitiveType::String)).into();
    let l = |id, name| NestedField::required(id, name, Type::Primitive(PrimitiveType::Long)).into();
    let user = StructType::new(vec![
        s(20, "user_id"),
        s(21, "username"),
        s(22, "display_name"),
        l(23, "followers_count"),
        NestedField::required(24, "verified", Type::Primitive(PrimitiveType::Boolean)).into(),
    ]);
    let strings = |id, name, element| {
        let list = ListType::new(
            NestedField::list_element(element, Type::Primitive(PrimitiveType::String), true).into(),
        );
        NestedField::required(id, name, Type::List(list)).into()
    };
    Schema::builder()
        .with_fields(vec![
            s(1, "tweet_id"),
            s(2, "text"),
            NestedField::required(3, "user", Type::Struct(user)).into(),
            NestedField::required(4, "created_at", Type::Primitive(PrimitiveType::Timestamptz))
                .into(),
            strings(5, "hashtags", 30),
            strings(6, "mentions", 31),
            s(7, "lang"),
            s(8, "region"),
            NestedField::required(9, "sentiment_score", Type::Primitive(PrimitiveType::Double))
                .into(),
            l(10, "engagement_score"),
            l(11, "retweet_count"),
            l(12, "like_count"),
        ])
        .build()
        .expect("schema")
}

/// Deterministic pseudo-random tweets (xorshift), ~6 hours of event time.
fn batches(arrow_schema: &arrow_schema::SchemaRef) -> Vec<RecordBatch> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let user_fields = match arrow_schema.field(2).data_type() {
        DataType::Struct(fields) => fields.clone(),
        _ => Fields::empty(),
    };
    let list_field = |i: usize| match arrow_schema.field(i).data_type() {
        DataType::List(f) => f.clone(),
        _ => Arc::new(Field::new("element", DataType::Utf8, true)),
    };
    let mut out = Vec::new();
    for start in (0..ROWS).step_by(BATCH) {
        let n = BATCH.min(ROWS - start);
        let mut id = StringBuilder::new();
        let mut text = StringBuilder::new();
        let mut user = StructBuilder::from_fields(user_fields.clone(), n);
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("+00:00");
        let mut tags = ListBuilder::new(StringBuilder::new()).with_field(list_field(4));
        let mut mentions = ListBuilder::new(StringBuilder::new()).with_field(list_field(5));
        let (mut lang, mut region) = (StringBuilder::new(), StringBuilder::new());
        let mut sentiment = Float64Builder::new();
        let (mut engagement, mut retweets, mut likes) = (
            Int64Builder::new(),
            Int64Builder::new(),
            Int64Builder::new(),
        );
        for row in start..start + n {
            let r = next();
            id.append_value(format!("{:016x}-{:016x}", r, next()));
            let words: Vec<&str> = (0..12)
                .map(|k| WORDS[((r >> (k * 4)) % 20) as usize])
                .collect();
            let tag = format!("#{}", WORDS[(r % 7) as usize]);
            let mention = format!("@user{}", r % 5000);
            text.append_value(format!("{} {tag} {mention}", words.join(" ")));
            let uid = r % 50_000;
            let u = &mut user;
            u.field_builder::<StringBuilder>(0)
                .expect("user_id")
                .append_value(format!("u{uid:08}"));
            u.field_builder::<StringBuilder>(1)
                .expect("username")
                .append_value(format!("user{uid}"));
            u.field_builder::<StringBuilder>(2)
                .expect("display_name")
                .append_value(format!("User Number {uid}"));
            u.field_builder::<Int64Builder>(3)
                .expect("followers")
                .append_value((uid * uid % 1_000_003) as i64);
            u.field_builder::<BooleanBuilder>(4)
                .expect("verified")
                .append_value(uid % 97 == 0);
            u.append(true);
            created.append_value(1_767_225_600_000_000 + (row as i64) * 108_000);
            tags.values().append_value(&tag[1..]);
            tags.append(true);
            mentions.values().append_value(&mention[1..]);
            mentions.append(true);
            lang.append_value(LANGS[(r % 6) as usize]);
            region.append_value(REGIONS[(r >> 8) as usize % 6]);
            sentiment.append_value(((r % 2001) as f64 - 1000.0) / 1000.0);
            engagement.append_value((r % 10_000) as i64);
            retweets.append_value((r % 500) as i64);
            likes.append_value((r % 5_000) as i64);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(text.finish()),
            Arc::new(user.finish()),
            Arc::new(created.finish()),
            Arc::new(tags.finish()),
            Arc::new(mentions.finish()),
            Arc::new(lang.finish()),
            Arc::new(region.finish()),
            Arc::new(sentiment.finish()),
            Arc::new(engagement.finish()),
            Arc::new(retweets.finish()),
            Arc::new(likes.finish()),
        ];
        out.push(RecordBatch::try_new(arrow_schema.clone(), columns).expect("batch"));
    }
    out
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(4, "created_at_hour", Transform::Hour)
        .expect("spec")
        .build();
    let table = runtime
        .block_on(lake_table::testing::local_table(
            dir.path(),
            "tweets",
            schema(),
            spec,
        ))
        .expect("table");
    let arrow_schema = Arc::new(
        iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
            .expect("arrow schema"),
    );
    let batches = batches(&arrow_schema);
    let arrow_bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();

    let write = || async {
        let mut writer = TableWriter::new(&table, WriterOptions::default())
            .await
            .expect("writer");
        for batch in &batches {
            writer.write(batch).await.expect("write");
        }
        writer.close().await.expect("close")
    };

    // One untimed run for the output size, then nine timed ones for a median.
    let files = runtime.block_on(write());
    let parquet_bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
    let mut runs: Vec<Duration> = (0..9)
        .map(|_| {
            let started = Instant::now();
            runtime.block_on(write());
            started.elapsed()
        })
        .collect();
    runs.sort();
    let median = runs[runs.len() / 2];
    eprintln!(
        "writer: {ROWS} tweets, {:.1} MB Arrow in -> {:.1} MB Parquet out in {} files ({:.1}x smaller); \
         median of 9: {:.3}s = {:.0} MB/s, {:.0} k tweets/s",
        arrow_bytes as f64 / 1e6,
        parquet_bytes as f64 / 1e6,
        files.len(),
        arrow_bytes as f64 / parquet_bytes as f64,
        median.as_secs_f64(),
        arrow_bytes as f64 / 1e6 / median.as_secs_f64(),
        ROWS as f64 / 1e3 / median.as_secs_f64()
    );

    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Bytes(arrow_bytes as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("tweets_arrow_to_parquet", |b| {
        b.to_async(&runtime).iter(write);
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
