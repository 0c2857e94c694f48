-- silver.tweets_clean: the user flattened, hashtags lower-cased and
-- de-duplicated, derived columns added.
--
-- Input:  bronze — the bronze.tweets_raw rows ingest appended since the last
--         run. lake keeps the first copy of each tweet_id (the key in
--         dataset.toml) by this query's _kafka_partition and _kafka_offset,
--         drops ids already in silver or its quarantine, and applies the
--         rules of dataset.toml to what this query returns.
SELECT
    tweet_id,
    text,
    "user"['user_id'] AS user_id,
    "user"['username'] AS username,
    "user"['display_name'] AS display_name,
    "user"['followers_count'] AS followers_count,
    "user"['verified'] AS verified,
    created_at,
    CASE
        WHEN hashtags IS NULL OR cardinality(hashtags) = 0 THEN hashtags
        ELSE array_distinct(string_to_array(lower(array_to_string(hashtags, chr(31))), chr(31)))
    END AS hashtags,
    mentions,
    lang,
    region,
    country,
    sentiment_score,
    engagement_score,
    retweet_count,
    like_count,
    CAST(character_length(text) AS BIGINT) AS text_length,
    CAST(coalesce(cardinality(mentions), 0) AS BIGINT) AS mention_count,
    CASE
        WHEN sentiment_score < -0.05 THEN 'negative'
        WHEN sentiment_score > 0.05 THEN 'positive'
        WHEN sentiment_score IS NOT NULL THEN 'neutral'
    END AS sentiment_category,
    CAST(engagement_score AS DOUBLE)
        / CAST(greatest(coalesce("user"['followers_count'], 0), 1) AS DOUBLE) AS engagement_rate,
    _kafka_partition,
    _kafka_offset,
    _ingested_at
FROM bronze
