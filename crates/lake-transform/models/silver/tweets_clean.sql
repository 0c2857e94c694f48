-- silver.tweets_clean: one row per tweet_id, user flattened, hashtags
-- lower-cased and de-duplicated, derived columns added.
--
-- Inputs:  bronze   — bronze.tweets_raw rows appended since the last run
--          existing — tweet_id of every row already in silver.tweets_clean
--                     or silver.tweets_quarantine
-- Output:  the silver columns, then `_rule`: the first quality rule the row
--          breaks (NULL when clean). Rows with a rule go to
--          silver.tweets_quarantine.
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
    SELECT tweet_id, _position FROM positioned
    UNION ALL
    -- A row already in silver or its quarantine wins over any new copy.
    SELECT tweet_id, CAST(-1 AS DECIMAL(38, 0)) FROM existing
),
-- Duplicates keep the copy read first from Kafka. An aggregate and a join
-- rather than a window: tweet ids are nearly all distinct.
first_copy AS (
    SELECT tweet_id, min(_position) AS _position
    FROM candidates
    GROUP BY tweet_id
    HAVING min(_position) >= 0
),
fresh AS (
    SELECT p.*
    FROM first_copy f
    JOIN positioned p
      ON (p.tweet_id IS NOT DISTINCT FROM f.tweet_id)
     AND (p._position IS NOT DISTINCT FROM f._position)
)
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
    _ingested_at,
    CASE
        WHEN tweet_id IS NULL THEN 'null_tweet_id'
        WHEN created_at IS NULL
          OR created_at < CAST('2006-01-01T00:00:00Z' AS TIMESTAMP)
          OR created_at > now() THEN 'created_at_out_of_range'
        WHEN sentiment_score < -1 OR sentiment_score > 1 THEN 'sentiment_out_of_range'
        WHEN "user"['followers_count'] < 0 OR retweet_count < 0 OR like_count < 0
          OR engagement_score < 0 THEN 'negative_count'
    END AS _rule
FROM fresh
