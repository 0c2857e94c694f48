"""DuckDB rewriting groups of small Parquet files into one file each.

    python compact_duckdb.py OUT_DIR < GROUPS_JSON

GROUPS_JSON is a list of groups, each a list of Parquet file paths (the files
of one partition that `lake compact` merges). Each group is read and written
as one Parquet file the way lake's compaction writes (zstd at the level given
by LEVEL, default 1; 1 Mi-row row groups), one `COPY` after another; DuckDB
uses every core within each. Prints one JSON object: seconds and rows
written.
"""

import json
import os
import pathlib
import sys
import time

import duckdb


def quoted(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    groups = json.load(sys.stdin)
    level = int(os.environ.get("LEVEL", "1"))
    out.mkdir(parents=True, exist_ok=True)
    parquet = (
        f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {level}, "
        "ROW_GROUP_SIZE 1048576)"
    )
    con = duckdb.connect()
    rows = 0
    started = time.perf_counter()
    for i, files in enumerate(groups):
        listed = "[" + ", ".join(quoted(f) for f in files) + "]"
        target = out / f"group-{i:05}.parquet"
        rows += con.execute(
            f"COPY (SELECT * FROM read_parquet({listed})) TO {quoted(target)} {parquet}"
        ).fetchone()[0]
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
