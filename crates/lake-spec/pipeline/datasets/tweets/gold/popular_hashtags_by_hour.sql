-- gold.popular_hashtags_by_hour. Input: silver — the silver.tweets_clean rows
-- of the hours being rebuilt.
-- lake: time_column = "hour", grain = "hour"
WITH tweets AS (
    -- The hour once per tweet, not once per hashtag.
    SELECT date_trunc('hour', created_at) AS "hour",
           hashtags,
           user_id,
           sentiment_score,
           engagement_score
    FROM silver
),
tags AS (
    SELECT "hour",
           unnest(hashtags) AS hashtag,
           user_id,
           sentiment_score,
           engagement_score
    FROM tweets
),
counts AS (
    SELECT "hour",
           hashtag,
           count(*) AS tweet_count,
           count(DISTINCT user_id) AS unique_users,
           avg(sentiment_score) AS avg_sentiment,
           sum(engagement_score) AS total_engagement
    FROM tags
    WHERE hashtag IS NOT NULL
    GROUP BY "hour", hashtag
)
SELECT "hour",
       hashtag,
       tweet_count,
       unique_users,
       avg_sentiment,
       total_engagement,
       CAST(rank() OVER (PARTITION BY "hour" ORDER BY tweet_count DESC) AS BIGINT) AS "rank"
FROM counts
