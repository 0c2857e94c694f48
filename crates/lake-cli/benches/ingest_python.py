"""What a seed user writes in an afternoon: Kafka → Iceberg with confluent-kafka,
pyarrow and pyiceberg.

    python ingest_python.py BROKERS TOPIC GROUP TABLE RECORDS

Environment: LAKE_PY_URI, LAKE_PY_TOKEN (the REST catalog), and for an S3
warehouse LAKE_PY_S3_ENDPOINT, LAKE_PY_S3_ACCESS_KEY, LAKE_PY_S3_SECRET_KEY. Reads TOPIC from
the earliest offset as GROUP, parses every 100 000 records with pyarrow's JSON
reader (the schema of the first batch fixed for the rest), appends them to
TABLE (created from that schema) with pyiceberg and then commits the Kafka
offsets, until RECORDS records are in the table. Prints one JSON object:
seconds, rows, data files, and the process's CPU seconds and peak RSS.
"""

import io
import json
import os
import resource
import sys
import time

import pyarrow.json as pj
from confluent_kafka import Consumer
from pyiceberg.catalog.rest import RestCatalog

APPEND_RECORDS = 100_000


def main() -> None:
    brokers, topic, group, name, records = sys.argv[1:6]
    records = int(records)
    started = time.perf_counter()
    props = {"uri": os.environ["LAKE_PY_URI"], "token": os.environ["LAKE_PY_TOKEN"]}
    if os.environ.get("LAKE_PY_S3_ENDPOINT"):
        props.update(
            {
                "s3.endpoint": os.environ["LAKE_PY_S3_ENDPOINT"],
                "s3.access-key-id": os.environ["LAKE_PY_S3_ACCESS_KEY"],
                "s3.secret-access-key": os.environ["LAKE_PY_S3_SECRET_KEY"],
                "s3.region": "us-east-1",
                "s3.force-virtual-addressing": "false",
            }
        )
    catalog = RestCatalog("lake", **props)
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    table = None
    options = None
    pending = []
    rows = 0
    while rows < records:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error():
                raise RuntimeError(message.error())
            pending.append(message.value())
        if len(pending) >= APPEND_RECORDS or (pending and rows + len(pending) >= records):
            data = pj.read_json(io.BytesIO(b"\n".join(pending)), parse_options=options)
            if table is None:
                options = pj.ParseOptions(
                    explicit_schema=data.schema, unexpected_field_behavior="ignore"
                )
                namespace = name.split(".")[0]
                catalog.create_namespace_if_not_exists(namespace)
                table = catalog.create_table(name, schema=data.schema)
            table.append(data)
            consumer.commit(asynchronous=False)
            rows += data.num_rows
            pending = []
    consumer.close()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    files = len(list(table.scan().plan_files()))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": rows,
                "files": files,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_mb": usage.ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
