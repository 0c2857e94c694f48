-- silver.speedtest_clean: one row per (user_id, ts), measurements in range,
-- location trimmed and in title case.
--
-- Inputs:  bronze   — bronze.speedtest_raw rows appended since the last run
--          existing — (user_id, ts) of every row already in
--                     silver.speedtest_clean or silver.speedtest_quarantine
-- Output:  the silver columns, then `_rule` (NULL when clean).
WITH ranked AS (
    SELECT b.*,
           row_number() OVER (
               PARTITION BY user_id, "timestamp" ORDER BY _kafka_partition, _kafka_offset
           ) AS _copy
    FROM bronze b
),
fresh AS (
    SELECT * FROM ranked r
    WHERE _copy = 1
      AND NOT EXISTS (
          SELECT 1 FROM existing e WHERE e.user_id = r.user_id AND e.ts = r._event_time
      )
)
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
    _ingested_at,
    CASE
        WHEN upload_speed IS NULL OR download_speed IS NULL OR latency IS NULL
          OR location IS NULL OR trim(location) = '' THEN 'null_field'
        WHEN upload_speed < 0 OR upload_speed > 10000
          OR download_speed < 0 OR download_speed > 10000 THEN 'speed_out_of_range'
        WHEN latency < 0 OR latency > 10000 THEN 'latency_out_of_range'
    END AS _rule
FROM fresh
