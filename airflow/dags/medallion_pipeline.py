"""lake's batch steps as two Airflow DAGs.

``lake_medallion``: ``lake ingest --until-caught-up`` -> ``lake transform silver`` ->
``lake transform gold`` -> ``lake compact --all``, every 15 minutes by default.
``lake_maintenance``: ``lake maintain all`` once a day.

Every step is idempotent and exactly-once on its own (offsets and consumed snapshots
live in the tables' snapshot summaries), so a retry or a rerun never doubles a row;
the DAG only has to keep the order and stop at the first failing step.

Where lake finds its services and datasets: the task inherits the worker's environment,
so the ``LAKE_*`` variables of lake's configuration (LAKE_CATALOG__URI, LAKE_CATALOG__TOKEN,
LAKE_KAFKA__BROKERS, LAKE_STORAGE__S3__*, LAKE_PIPELINE__DIR, or LAKE_CONFIG naming a
lake.toml) are set on the Airflow workers, never in this file. Every step runs every dataset
of that pipeline directory (the built-in tweets and speedtest without one), so adding a
dataset needs no change here.

Airflow Variables, read when a task runs (each also settable as AIRFLOW_VAR_<NAME>):
  lake_bin             the lake executable (default: ``lake`` on PATH)
  lake_ingest_mode     ``batch`` (default): the ingest step runs ``lake ingest --until-caught-up``;
                       ``continuous``: a long-running ``lake ingest`` keeps bronze current and
                       the step only says so (two consumers of one topic would race for it)
  lake_ingest_args     extra arguments for ``lake ingest``, e.g. ``tweets --commit-records 500000``
  lake_transform_args  extra flags for both transforms, e.g. ``--dataset tweets``
  lake_compact_args    extra flags for ``lake compact --all``
  lake_maintain_args   extra flags for ``lake maintain all``

Read when the file is parsed (environment of the scheduler and DAG processor):
  LAKE_DAG_SCHEDULE              cron or preset of the pipeline (default ``*/15 * * * *``)
  LAKE_DAG_MAINTENANCE_SCHEDULE  cron or preset of maintenance (default ``@daily``)
  LAKE_DAG_RETRIES               retries per task (default 2)
  LAKE_DAG_RETRY_DELAY_SECONDS   wait before a retry (default 60)
  LAKE_DAG_TIMEOUT_MINUTES       time limit of each task (default 60)
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from e


SCHEDULE = os.environ.get("LAKE_DAG_SCHEDULE", "*/15 * * * *")
MAINTENANCE_SCHEDULE = os.environ.get("LAKE_DAG_MAINTENANCE_SCHEDULE", "@daily")
TIMEOUT = timedelta(minutes=_env_int("LAKE_DAG_TIMEOUT_MINUTES", 60))

DEFAULT_ARGS = {
    "owner": "lake",
    "retries": _env_int("LAKE_DAG_RETRIES", 2),
    "retry_delay": timedelta(seconds=_env_int("LAKE_DAG_RETRY_DELAY_SECONDS", 60)),
    "execution_timeout": TIMEOUT,
}

# Jinja, rendered when the task runs: Variables are read then, not at every parse.
LAKE = "{{ var.value.get('lake_bin', 'lake') }}"


def _args(variable: str) -> str:
    return "{{ var.value.get('" + variable + "', '') }}"


def lake_task(task_id: str, command: str, doc: str) -> BashOperator:
    # One process per task: its exit status is the task's, so a failing step fails the run.
    return BashOperator(task_id=task_id, bash_command=f"{LAKE} {command}", doc_md=doc)


def lake_dag(dag_id: str, description: str, schedule: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        # One run at a time: a second run would only wait on the first one's commits.
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["lake"],
        doc_md=__doc__,
    )


with lake_dag(
    "lake_medallion", "Kafka -> bronze -> silver -> gold, then compaction", SCHEDULE
) as medallion:
    ingest = BashOperator(
        task_id="ingest",
        bash_command=(
            "{% if var.value.get('lake_ingest_mode', 'batch') == 'continuous' %}"
            "echo 'lake_ingest_mode=continuous: a running lake ingest keeps bronze current'"
            "{% else %}"
            f"{LAKE} ingest --until-caught-up {_args('lake_ingest_args')}"
            "{% endif %}"
        ),
        doc_md="Kafka -> bronze up to the end offsets seen at start, then exit.",
    )
    silver = lake_task(
        "transform_silver",
        f"transform silver {_args('lake_transform_args')}",
        "Bronze rows appended since the last run -> silver (dedup, rules, quarantine).",
    )
    gold = lake_task(
        "transform_gold",
        f"transform gold {_args('lake_transform_args')}",
        "Recompute the gold hours and days that received silver rows.",
    )
    compact = lake_task(
        "compact",
        f"compact --all {_args('lake_compact_args')}",
        "Merge the small files the steps before wrote.",
    )
    ingest >> silver >> gold >> compact


with lake_dag(
    "lake_maintenance",
    "Retention, compaction, manifests, snapshot expiry, orphan files",
    MAINTENANCE_SCHEDULE,
) as maintenance:
    lake_task(
        "maintain_all",
        f"maintain all {_args('lake_maintain_args')}",
        "The daily policy on every table, see docs/maintenance.md.",
    )
