-- gold.tweet_volume_by_region. Input: silver — the silver.tweets_clean rows
-- of the hours being rebuilt.
-- lake: time_column = "hour", grain = "hour"
SELECT date_trunc('hour', created_at) AS "hour",
       region,
       count(*) AS tweet_count,
       count(DISTINCT user_id) AS unique_users,
       avg(sentiment_score) AS avg_sentiment
FROM silver
GROUP BY 1, 2
