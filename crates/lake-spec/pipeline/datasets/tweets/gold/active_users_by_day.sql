-- gold.active_users_by_day. Input: silver — the silver.tweets_clean rows of
-- the days being rebuilt.
-- lake: time_column = "day", grain = "day"
SELECT CAST(created_at AS DATE) AS "day",
       user_id,
       max(username) AS username,
       count(*) AS tweet_count,
       sum(engagement_score) AS total_engagement,
       avg(sentiment_score) AS avg_sentiment,
       max(followers_count) AS followers_count
FROM silver
GROUP BY 1, 2
