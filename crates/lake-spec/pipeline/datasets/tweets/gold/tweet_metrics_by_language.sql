-- gold.tweet_metrics_by_language. Input: silver — the silver.tweets_clean
-- rows of the days being rebuilt.
-- lake: time_column = "day", grain = "day"
SELECT CAST(created_at AS DATE) AS "day",
       lang,
       count(*) AS tweet_count,
       avg(text_length) AS avg_text_length,
       avg(sentiment_score) AS avg_sentiment,
       avg(engagement_score) AS avg_engagement,
       sum(CASE WHEN sentiment_category = 'positive' THEN 1 ELSE 0 END) AS positive_count,
       sum(CASE WHEN sentiment_category = 'neutral' THEN 1 ELSE 0 END) AS neutral_count,
       sum(CASE WHEN sentiment_category = 'negative' THEN 1 ELSE 0 END) AS negative_count
FROM silver
GROUP BY 1, 2
