-- silver.speedtest_clean: one row per (user_id, ts), measurements in range,
-- location trimmed and in title case.
--
-- Inputs:  bronze   — bronze.speedtest_raw rows appended since the last run
--          existing — (user_id, ts) of every row already in
--                     silver.speedtest_clean or silver.speedtest_quarantine
-- Output:  the silver columns, then `_rule` (NULL when clean).
WITH positioned AS (
    SELECT b.*,
           -- Where Kafka held the copy, (partition, offset), as one exact
           -- number in the same order.
           CAST(_kafka_partition AS DECIMAL(38, 0))
               * CAST('10000000000000000000' AS DECIMAL(38, 0))
               + CAST(_kafka_offset AS DECIMAL(38, 0)) AS _position
    FROM bronze b
),
candidates AS (
    SELECT user_id, _event_time AS ts, _position FROM positioned
    UNION ALL
    -- A row already in silver or its quarantine wins over any new copy.
    SELECT user_id, ts, CAST(-1 AS DECIMAL(38, 0)) FROM existing
),
-- Duplicates keep the copy read first from Kafka.
first_copy AS (
    SELECT user_id, ts, min(_position) AS _position
    FROM candidates
    GROUP BY user_id, ts
    HAVING min(_position) >= 0
),
fresh AS (
    SELECT p.*
    FROM first_copy f
    JOIN positioned p
      ON (p.user_id IS NOT DISTINCT FROM f.user_id)
     AND (p._event_time IS NOT DISTINCT FROM f.ts)
     AND (p._position IS NOT DISTINCT FROM f._position)
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
