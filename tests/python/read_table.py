"""Read an Iceberg table through the REST catalog with pyiceberg, as an
independent engine would, and print what every snapshot holds as JSON.

Usage: read_table.py NAMESPACE.TABLE COLUMN
Environment: LAKE_PY_URI, LAKE_PY_TOKEN, and optionally LAKE_PY_S3_ENDPOINT,
LAKE_PY_S3_ACCESS_KEY, LAKE_PY_S3_SECRET_KEY.

Output: {"current": id, "snapshots": {"<id>": {"operation": ..., "summary": {...},
         "rows": n, "values": [sorted COLUMN values]}}}
"""

import json
import os
import sys

from pyiceberg.catalog.rest import RestCatalog


def catalog() -> RestCatalog:
    props = {"uri": os.environ["LAKE_PY_URI"], "token": os.environ["LAKE_PY_TOKEN"]}
    endpoint = os.environ.get("LAKE_PY_S3_ENDPOINT")
    if endpoint:
        props.update(
            {
                "s3.endpoint": endpoint,
                "s3.access-key-id": os.environ["LAKE_PY_S3_ACCESS_KEY"],
                "s3.secret-access-key": os.environ["LAKE_PY_S3_SECRET_KEY"],
                "s3.region": "us-east-1",
                "s3.force-virtual-addressing": "false",
            }
        )
    return RestCatalog("lake", **props)


def main() -> None:
    name, column = sys.argv[1], sys.argv[2]
    table = catalog().load_table(name)
    out = {"current": table.metadata.current_snapshot_id, "snapshots": {}}
    for snapshot in table.metadata.snapshots:
        data = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=(column,)).to_arrow()
        values = sorted(data.column(column).to_pylist())
        summary = snapshot.summary
        out["snapshots"][str(snapshot.snapshot_id)] = {
            "operation": summary.operation.value if summary else None,
            "summary": {k: v for k, v in (summary.additional_properties if summary else {}).items()},
            "rows": data.num_rows,
            "values": values,
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
