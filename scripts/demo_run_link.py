"""Print the Kubeflow run link and the predictions asset event `make demo`'s DAG run left.

    python scripts/demo_run_link.py TARGET_DATE [DAG_ID]   (default daily_prediction)

Reads the metadata database of the demo's AIRFLOW_HOME: the XCom the "Kubeflow run"
button in the Airflow UI shows, and the asset event downstream DAGs are scheduled on.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from airflow.models.asset import AssetEvent
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from demo import scheduled_at, workflow_settings  # scripts/: this script's directory

from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY


def main(target_date: str, dag_id: str = "daily_prediction") -> int:
    settings = workflow_settings(dag_id)
    day = dt.date.fromisoformat(target_date)
    logical_date = scheduled_at(day, settings.at, settings.zone).in_timezone("UTC")
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_id,
                XComModel.task_id == "predict",
                XComModel.key == RUN_URL_XCOM_KEY,
            )
            .join(XComModel.dag_run)
            .filter_by(logical_date=logical_date)
            .order_by(XComModel.timestamp.desc())
            .first()
        )
        event = (
            session.query(AssetEvent)
            .filter(
                AssetEvent.source_dag_id == dag_id,
                AssetEvent.partition_key == target_date,
            )
            .order_by(AssetEvent.timestamp.desc())
            .first()
        )
        event_text = (
            f"{event.uri} partition {event.partition_key}: {json.dumps(event.extra)}"
            if event
            else None
        )
    if row is None:
        print("Kubeflow run: (no run link recorded)")
        return 1
    print(f"Kubeflow run: {XComModel.deserialize_value(row)}")
    print(f"Asset event: {event_text or '(none recorded)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
