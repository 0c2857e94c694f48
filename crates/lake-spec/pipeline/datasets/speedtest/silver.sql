-- silver.speedtest_clean: one row per (user_id, ts), location trimmed and in
-- title case.
--
-- Input:  bronze — the bronze.speedtest_raw rows ingest appended since the
--         last run. lake keeps the first copy of each (user_id, ts) (the
--         silver key in dataset.toml) by this query's _kafka_partition and
--         _kafka_offset, drops keys already in silver or its quarantine, and
--         applies the rules of dataset.toml to what this query returns.
SELECT
    -- Ingest already turned the epoch milliseconds of `timestamp` into a
    -- UTC timestamp.
    _event_time AS ts,
    user_id,
    upload_speed,
    download_speed,
    latency,
    initcap(trim(location)) AS location,
    _kafka_partition,
    _kafka_offset,
    _ingested_at
FROM bronze
