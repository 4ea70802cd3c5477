"""Deliver each target date's predictions: one run per asset event of the predictions table.

The example downstream of ``daily_prediction`` (the step that would hand each user's best
content to the messaging system). It is scheduled on the predictions table's Asset with
Airflow 3.3's ``PartitionedAssetTimetable``: each event the prediction task records carries
the target date as its partition key, and the scheduler makes one run per key, so a
backfill of three dates gives three deliveries and a failed prediction (no event) none.
The task takes the target date and the partition from the triggering event (what the
pipeline reported), reads exactly that partition, and writes one message per user to
the outbox (``DELIVER_PREDICTIONS_OUTBOX``, default ``var/outbox``), replacing that date's
file. Kept light for parsing: pyarrow and the Google provider are imported by the task.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, PartitionedAssetTimetable, task

from prediction_app.assets import table_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The same setting as daily_prediction's: the two DAGs must name the same table.
WAREHOUSE = os.environ.get("DAILY_PREDICTION_WAREHOUSE") or str(PROJECT_ROOT / "var" / "warehouse")
PREDICTIONS = Asset(table_uri(WAREHOUSE, "predictions"))
OUTBOX = Path(os.environ.get("DELIVER_PREDICTIONS_OUTBOX") or PROJECT_ROOT / "var" / "outbox")
COLUMNS = ["target_date", "user_id", "content_id", "score", "model_sha256"]


def triggering_result(events: list[Any], target_date: str) -> dict[str, Any]:
    """The newest event's ``extra`` (a date re-run before this run started gives several)."""
    if not events:
        raise ValueError(f"no asset event of {PREDICTIONS.uri} triggered this run")
    extra = dict(max(events, key=lambda e: e.timestamp).extra or {})
    if extra.get("target_date") != target_date:
        raise ValueError(
            f"the triggering event is for target date {extra.get('target_date')!r}, "
            f"the run for partition key {target_date!r}"
        )
    return extra


def read_partition(extra: dict[str, Any]) -> Any:
    """Exactly the reported partition, as an Arrow table, checked against the report."""
    from prediction_app.assets import partition_table_uri

    partition = str(extra["partition"])
    if Asset(partition_table_uri(partition)).uri != PREDICTIONS.uri:
        raise ValueError(f"partition {partition} is not in {PREDICTIONS.uri}")
    if partition.startswith("/"):
        import pyarrow.parquet as pq

        table = pq.read_table(partition, columns=COLUMNS)
    else:  # PROJECT.DATASET.predictions$YYYYMMDD: the decorator reads that partition only
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        project = partition.split(".", 1)[0]
        client = BigQueryHook(gcp_conn_id="google_cloud_default").get_client(project_id=project)
        table = client.list_rows(partition, selected_fields=None).to_arrow().select(COLUMNS)
    dates = {d.isoformat() for d in table.column("target_date").to_pylist()}
    if dates - {extra["target_date"]} or table.num_rows != extra["rows"]:
        raise ValueError(
            f"partition {partition} holds {table.num_rows} rows for {sorted(dates)}; the "
            f"event reported {extra['rows']} for {extra['target_date']}: it changed since"
        )
    return table


def write_outbox(table: Any, target_date: str) -> Path:
    """One JSON message per user into ``OUTBOX/TARGET_DATE.jsonl`` (replaced atomically).

    Each write has a temporary file of its own: two runs for one date (a re-run beside a
    late one) may write at once, and the last to finish wins whole.
    """
    import json
    import tempfile

    OUTBOX.mkdir(parents=True, exist_ok=True)
    path = OUTBOX / f"{target_date}.jsonl"
    fd, tmp = tempfile.mkstemp(dir=OUTBOX, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # as open() would make it: mkstemp's 0600 would stay on replace
        with os.fdopen(fd, "w") as out:
            for row in table.select(["user_id", "content_id", "score"]).to_pylist():
                out.write(json.dumps({"target_date": target_date, **row}) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


with DAG(
    dag_id="deliver_predictions",
    description="Hand each target date's best content per user to the messaging outbox",
    doc_md=__doc__,
    schedule=PartitionedAssetTimetable(assets=PREDICTIONS),
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
    catchup=False,
    max_active_runs=4,
    default_args={"owner": "recommendation", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["prediction", "delivery"],
) as dag:

    @task
    def deliver(*, dag_run: Any, triggering_asset_events: Any) -> dict[str, Any]:
        """Deliver the partition of the run's target date (its partition key)."""
        target_date = dag_run.partition_key
        extra = triggering_result(list(triggering_asset_events[PREDICTIONS]), target_date)
        table = read_partition(extra)
        path = write_outbox(table, target_date)
        print(f"delivered {table.num_rows} messages for {target_date} from {extra['partition']}")
        return {"target_date": target_date, "messages": table.num_rows, "outbox": str(path)}

    deliver()
