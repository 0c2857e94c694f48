use super::*;

fn spec_of(pipeline: &Pipeline, name: &str) -> Arc<DatasetSpec> {
    pipeline.dataset(name).expect("a dataset").clone()
}

fn schema_text(spec: &DatasetSpec) -> String {
    types::describe(&iceberg::spec::Type::Struct(
        spec.schema.as_struct().clone(),
    ))
}

#[test]
fn the_built_in_pipeline_holds_the_seeds_as_they_were() {
    let pipeline = Pipeline::built_in().expect("the built-in pipeline loads");
    assert_eq!(pipeline.names(), ["tweets", "speedtest"]);

    let tweets = spec_of(&pipeline, "tweets");
    assert_eq!(tweets.topic, "tweets");
    assert_eq!(tweets.key, ["tweet_id"]);
    assert_eq!(tweets.event_time.field, "created_at");
    assert_eq!(tweets.event_time.format, TimeFormat::Rfc3339);
    assert_eq!(
        schema_text(&tweets),
        "struct<tweet_id: string not null, text: string, user: struct<user_id: string not \
         null, username: string, display_name: string, followers_count: long, verified: \
         boolean> not null, created_at: timestamptz not null, hashtags: list<string>, \
         mentions: list<string>, lang: string, region: string, country: string, \
         sentiment_score: double, engagement_score: long, retweet_count: long, like_count: \
         long>"
    );
    assert_eq!(tweets.bronze.table.to_string(), "bronze.tweets_raw");
    assert_eq!(
        tweets.rejects_table().to_string(),
        "bronze.tweets_raw_rejects"
    );
    assert_eq!(tweets.bronze.partition, Granularity::Hour);
    assert_eq!(tweets.bronze.distinct, ["tweet_id", "text"]);
    assert_eq!(tweets.silver.table.to_string(), "silver.tweets_clean");
    assert_eq!(
        tweets.silver.quarantine.to_string(),
        "silver.tweets_quarantine"
    );
    assert_eq!(tweets.silver.key, ["tweet_id"]);
    let rules: Vec<&str> = tweets
        .silver
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        rules,
        [
            "null_tweet_id",
            "created_at_out_of_range",
            "sentiment_out_of_range",
            "negative_count"
        ]
    );
    let gold: Vec<(String, &str, Granularity)> = tweets
        .gold
        .iter()
        .map(|g| (g.table.to_string(), g.time_column.as_str(), g.grain))
        .collect();
    assert_eq!(
        gold,
        [
            (
                "gold.popular_hashtags_by_hour".into(),
                "hour",
                Granularity::Hour
            ),
            ("gold.active_users_by_day".into(), "day", Granularity::Day),
            (
                "gold.tweet_volume_by_region".into(),
                "hour",
                Granularity::Hour
            ),
            (
                "gold.tweet_metrics_by_language".into(),
                "day",
                Granularity::Day
            ),
        ]
    );

    let speedtest = spec_of(&pipeline, "speedtest");
    assert_eq!(speedtest.topic, "speedtest_raw");
    assert_eq!(speedtest.event_time.format, TimeFormat::EpochMillis);
    assert_eq!(
        schema_text(&speedtest),
        "struct<timestamp: long not null, user_id: string not null, upload_speed: double, \
         download_speed: double, latency: double, location: string>"
    );
    assert_eq!(speedtest.silver.key, ["user_id", "ts"]);
    assert_eq!(speedtest.silver.time_column, "ts");
    assert_eq!(speedtest.gold.len(), 1);
    assert_eq!(speedtest.gold[0].table.to_string(), "gold.speedtest_agg");
}

#[test]
fn init_writes_the_examples_and_they_load_as_the_built_in_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_examples(dir.path(), &[], false).expect("written");
    assert_eq!(written.len(), BUILT_IN.len());
    let loaded = Pipeline::load(dir.path()).expect("loads");
    let built_in = Pipeline::built_in().expect("built in");
    let mut names = loaded.names();
    names.sort_unstable();
    assert_eq!(names, ["speedtest", "tweets"]);
    for name in ["tweets", "speedtest"] {
        let (a, b) = (spec_of(&loaded, name), spec_of(&built_in, name));
        assert_eq!(a.schema, b.schema, "{name}");
        assert_eq!(a.silver.rules, b.silver.rules, "{name}");
        assert_eq!(a.silver.sql, b.silver.sql, "{name}");
        assert_eq!(a.gold.len(), b.gold.len(), "{name}");
    }
    // A second init does not overwrite; --force does; one example alone.
    assert!(matches!(
        write_examples(dir.path(), &[], false),
        Err(Error::Exists(_))
    ));
    write_examples(dir.path(), &[], true).expect("forced");
    let one = tempfile::tempdir().expect("tempdir");
    write_examples(one.path(), &["speedtest".into()], false).expect("one");
    assert_eq!(
        Pipeline::load(one.path()).expect("loads").names(),
        ["speedtest"]
    );
    assert!(write_examples(one.path(), &["orders".into()], false).is_err());
}

/// Writes a dataset folder `name` with `toml` and a trivial silver model.
fn folder(root: &Path, name: &str, toml: &str) {
    let dir = root.join("datasets").join(name);
    std::fs::create_dir_all(dir.join("gold")).expect("dirs");
    std::fs::write(dir.join("dataset.toml"), toml).expect("toml");
    std::fs::write(dir.join("silver.sql"), "SELECT * FROM bronze").expect("sql");
}

const ORDERS: &str = r#"
topic = "orders"
key = ["order_id", "line_no"]

[event_time]
field = "ordered_at"
format = "epoch_ms"

[schema]
order_id = "string not null"
line_no = "int not null"
ordered_at = "long not null"
amount = "decimal(12, 2)"
items = "list<struct<sku: string not null, qty: int>>"
"#;

#[test]
fn a_dataset_of_its_own_loads_with_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    folder(dir.path(), "orders", ORDERS);
    let pipeline = Pipeline::load(dir.path()).expect("loads");
    let orders = spec_of(&pipeline, "orders");
    assert_eq!(orders.bronze.table.to_string(), "bronze.orders_raw");
    assert_eq!(orders.silver.table.to_string(), "silver.orders_clean");
    assert_eq!(
        orders.silver.quarantine.to_string(),
        "silver.orders_quarantine"
    );
    assert_eq!(orders.silver.key, ["order_id", "line_no"]);
    assert_eq!(orders.silver.time_column, "ordered_at");
    assert!(orders.gold.is_empty());
    assert_eq!(orders.silver.upkeep, Upkeep::default());
    assert!(orders.bronze.raw);
    assert!(pipeline.dataset("clicks").is_err());
}

#[test]
fn bronze_keeps_the_raw_record_unless_told_not_to() {
    let names = |spec: &DatasetSpec| -> Vec<String> {
        let schema = spec.bronze_schema().expect("bronze schema");
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    folder(dir.path(), "orders", ORDERS);
    let kept = names(&spec_of(
        &Pipeline::load(dir.path()).expect("loads"),
        "orders",
    ));
    folder(
        dir.path(),
        "orders",
        &format!("{ORDERS}\n[bronze]\nraw = false\n"),
    );
    let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
    assert!(!orders.bronze.raw);
    let without = names(&orders);
    assert_eq!(
        kept,
        [
            "order_id",
            "line_no",
            "ordered_at",
            "amount",
            "items",
            "_raw",
            "_kafka_topic",
            "_kafka_partition",
            "_kafka_offset",
            "_kafka_timestamp",
            "_ingested_at",
            "_event_time"
        ]
    );
    let mut expected = kept.clone();
    expected.retain(|name| name != "_raw");
    assert_eq!(without, expected);
    // The other lake columns keep their ids, so a table may gain or lose
    // `_raw` without renumbering them.
    let id = |spec: &DatasetSpec, name: &str| {
        spec.bronze_schema()
            .expect("bronze schema")
            .field_by_name(name)
            .map(|f| f.id)
    };
    let kept_spec = {
        folder(dir.path(), "orders", ORDERS);
        spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders")
    };
    for name in ["_kafka_topic", "_kafka_offset", "_event_time"] {
        assert_eq!(id(&orders, name), id(&kept_spec, name), "{name}");
    }

    folder(
        dir.path(),
        "orders",
        &format!("{ORDERS}\n[bronze]\nraw = \"no\"\n"),
    );
    let problems = match Pipeline::load(dir.path()) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("raw = \"no\" loaded"),
    };
    assert!(
        problems.contains("dataset.toml:17: invalid type: string \"no\", expected a boolean"),
        "{problems}"
    );
}

#[test]
fn upkeep_sizes_and_retentions_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = format!(
        "{ORDERS}\n[bronze]\ntarget_file_size = \"64MiB\"\n\n[silver]\nretention = \"400d\"\n"
    );
    folder(dir.path(), "orders", &kept);
    let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
    assert_eq!(orders.bronze.upkeep.target_file_size, Some(64 << 20));
    assert_eq!(orders.bronze.upkeep.retention, None);
    assert_eq!(
        orders.silver.upkeep.properties(),
        [
            ("lake.retention", Some("400d".to_string())),
            ("write.target-file-size-bytes", None),
            ("write.parquet.compression-codec", None),
            ("write.parquet.compression-level", None),
        ]
    );

    let broken = format!("{ORDERS}\n[bronze]\ntarget_file_size = \"10KB\"\n");
    folder(dir.path(), "orders", &broken);
    let problems = match Pipeline::load(dir.path()) {
        Err(Error::Invalid(problems)) => problems.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        problems.contains("dataset.toml:17: target_file_size `10KB` is under 1 MB"),
        "{problems}"
    );
}

#[test]
fn codecs_are_declared_per_layer_and_checked_as_the_writers_read_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let declared =
        format!("{ORDERS}\n[bronze]\ncompression = \" LZ4\"\n\n[silver]\ncompression_level = 3\n");
    folder(dir.path(), "orders", &declared);
    let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
    assert_eq!(
        orders.bronze.upkeep.properties()[2..],
        [
            ("write.parquet.compression-codec", Some("lz4".to_string())),
            ("write.parquet.compression-level", None),
        ]
    );
    // A level alone is zstd's, the codec the writers use when none is named.
    assert_eq!(
        orders.silver.upkeep.properties()[2..],
        [
            ("write.parquet.compression-codec", None),
            ("write.parquet.compression-level", Some("3".to_string())),
        ]
    );

    for (bronze, problem) in [
        (
            "compression = \"lzo\"",
            "dataset.toml:17: compression: `lzo` is not a codec lake writes: zstd, snappy, gzip, \
             lz4, brotli, uncompressed",
        ),
        (
            "compression = \"lz4\"\ncompression_level = 9",
            "dataset.toml:18: compression_level: lz4 takes no level, but level 9 is given",
        ),
        (
            "compression_level = 99",
            "dataset.toml:17: compression_level: level for zstd: ",
        ),
        (
            "compression_level = 5000000000",
            "dataset.toml:17: compression_level 5000000000 is out of range",
        ),
    ] {
        folder(
            dir.path(),
            "orders",
            &format!("{ORDERS}\n[bronze]\n{bronze}\n"),
        );
        let problems = match Pipeline::load(dir.path()) {
            Err(Error::Invalid(problems)) => problems.to_string(),
            other => panic!("{bronze}: {other:?}"),
        };
        assert!(problems.contains(problem), "{bronze}: {problems}");
    }
}

#[test]
fn the_dedup_horizon_defaults_to_a_day_and_all_means_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    folder(dir.path(), "orders", ORDERS);
    let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
    assert_eq!(
        orders.silver.dedup_horizon,
        Some(std::time::Duration::from_secs(86_400))
    );
    for (declared, wanted) in [
        ("7d", Some(std::time::Duration::from_secs(7 * 86_400))),
        ("0s", Some(std::time::Duration::ZERO)),
        ("all", None),
    ] {
        let text = format!("{ORDERS}\n[silver]\ndedup_horizon = \"{declared}\"\n");
        folder(dir.path(), "orders", &text);
        let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
        assert_eq!(orders.silver.dedup_horizon, wanted, "{declared}");
    }
    let text = format!("{ORDERS}\n[silver]\ndedup_horizon = \"forever\"\n");
    folder(dir.path(), "orders", &text);
    let problems = match Pipeline::load(dir.path()) {
        Err(Error::Invalid(problems)) => problems.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        problems.contains("dedup_horizon `forever` is not a duration (1d, 0s) or `all`"),
        "{problems}"
    );
}

#[test]
fn every_problem_is_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = ORDERS
        .replace("\"decimal(12, 2)\"", "\"decimal(12, 2\"")
        .replace("[\"order_id\", \"line_no\"]", "[\"order_id\", \"line\"]");
    folder(dir.path(), "orders", &broken);
    let problems = match Pipeline::load(dir.path()) {
        Err(Error::Invalid(problems)) => problems.to_string(),
        other => panic!("{other:?}"),
    };
    let file = dir.path().join("datasets/orders/dataset.toml");
    assert!(
        problems.contains(&format!(
            "{}:3: key field `line` is not in [schema]",
            file.display()
        )),
        "{problems}"
    );
    assert!(
        problems.contains(&format!(
            "{}:13: [schema] amount = \"decimal(12, 2\": expected `)`",
            file.display()
        )),
        "{problems}"
    );
}

#[test]
fn pii_protections_are_checked() {
    let tweets = Pipeline::built_in().expect("built in");
    let tweets = tweets.dataset("tweets").expect("tweets");
    assert_eq!(
        tweets.silver.pii,
        [
            ("user_id".to_string(), Protection::Hash),
            ("username".to_string(), Protection::Hash),
            ("display_name".to_string(), Protection::Hash),
        ]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!("{ORDERS}\n[silver.pii]\ncustomer = \"redact\"\nnote = \"drop\"\n");
    folder(dir.path(), "orders", &text);
    let orders = spec_of(&Pipeline::load(dir.path()).expect("loads"), "orders");
    assert_eq!(
        orders.silver.pii,
        [
            ("customer".to_string(), Protection::Redact),
            ("note".to_string(), Protection::Drop),
        ]
    );
    let text = format!("{ORDERS}\n[silver.pii]\norder_id = \"hash\"\ncustomer = \"mask\"\n");
    folder(dir.path(), "orders", &text);
    let problems = match Pipeline::load(dir.path()) {
        Err(Error::Invalid(problems)) => problems.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        problems.contains("pii `order_id`: silver's key, time column and Kafka coordinates"),
        "{problems}"
    );
    assert!(
        problems.contains("pii `customer`: `mask` is hash, redact or drop"),
        "{problems}"
    );
}
