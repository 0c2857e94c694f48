-- gold.speedtest_agg (seed 002). Input: silver — the silver.speedtest_clean
-- rows of the days being rebuilt.
-- lake: time_column = "date", grain = "day"
SELECT CAST(ts AS DATE) AS "date",
       CAST(date_part('hour', ts) AS INT) AS "hour",
       location,
       count(*) AS test_count,
       avg(upload_speed) AS avg_upload_speed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY upload_speed) AS p50_upload_speed,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY upload_speed) AS p95_upload_speed,
       avg(download_speed) AS avg_download_speed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY download_speed) AS p50_download_speed,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY download_speed) AS p95_download_speed,
       avg(latency) AS avg_latency,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95_latency
FROM silver
GROUP BY 1, 2, 3
