"""The tweet models of `lake transform`, run by DuckDB over bronze Parquet files.

    python transform_duckdb.py MODELS_DIR OUT_DIR BRONZE_FILE...

MODELS_DIR is what `lake transform models --out` writes. The model files are
run as they are, but for the DuckDB spellings of the functions whose names
differ (DIALECT). Like `lake transform`, silver reads bronze without `_raw`,
deduplicates against an (empty) `existing`, splits clean rows from
quarantined ones, and every output is written as Parquet the way lake writes
it (zstd level 1, 128 k-row row groups); gold reads the
clean silver file. Prints one JSON object: seconds in all and for silver, and
the rows of each output, named as lake's tables.
"""

import json
import pathlib
import sys
import time

import duckdb

# (DataFusion, DuckDB) spellings.
DIALECT = [
    # DuckDB's cardinality() is for maps; len() counts list elements.
    ("cardinality(", "len("),
    # DuckDB spells DataFusion's LEFT ANTI JOIN without LEFT.
    ("LEFT ANTI JOIN", "ANTI JOIN"),
    # [silver.pii]'s hash is an HMAC-SHA256 under lake's key; DuckDB's SHA-256
    # does the same work per value.
    ("lake_pii_hash(", "sha256("),
]

GOLD = [
    "popular_hashtags_by_hour",
    "active_users_by_day",
    "tweet_volume_by_region",
    "tweet_metrics_by_language",
]


def model(models: pathlib.Path, name: str) -> str:
    sql = (models / name).read_text()
    for datafusion, duck in DIALECT:
        sql = sql.replace(datafusion, duck)
    return sql


def quoted(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def main() -> None:
    models = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    bronze = sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    # As lake writes silver and gold: zstd level 1, 128 k-row row groups.
    parquet = "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 131072)"
    rows = {}

    con = duckdb.connect()
    # Dates and hours of timestamptz columns are taken in UTC, as lake does.
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    files = "[" + ", ".join(quoted(f) for f in bronze) + "]"
    con.execute(f"CREATE VIEW bronze AS SELECT * EXCLUDE (_raw) FROM read_parquet({files})")
    con.execute("CREATE TABLE existing (tweet_id VARCHAR)")
    con.execute(f"CREATE TEMP TABLE silver_all AS {model(models, 'silver/tweets_clean.sql')}")
    clean = out / "tweets_clean.parquet"
    rows["silver.tweets_clean"] = con.execute(
        f"COPY (SELECT * EXCLUDE (_rule) FROM silver_all WHERE _rule IS NULL) "
        f"TO {quoted(clean)} {parquet}"
    ).fetchone()[0]
    rows["silver.tweets_quarantine"] = con.execute(
        f"COPY (SELECT * EXCLUDE (_rule), _rule AS rule, now() AS quarantined_at "
        f"FROM silver_all WHERE _rule IS NOT NULL) "
        f"TO {quoted(out / 'tweets_quarantine.parquet')} {parquet}"
    ).fetchone()[0]
    con.execute("DROP TABLE silver_all")
    silver_seconds = time.perf_counter() - started

    con.execute(f"CREATE VIEW silver AS SELECT * FROM read_parquet({quoted(clean)})")
    for name in GOLD:
        rows[f"gold.{name}"] = con.execute(
            f"COPY ({model(models, f'gold/{name}.sql')}) "
            f"TO {quoted(out / (name + '.parquet'))} {parquet}"
        ).fetchone()[0]
    seconds = time.perf_counter() - started

    json.dump({"seconds": seconds, "silver_seconds": silver_seconds, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
