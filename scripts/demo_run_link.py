"""Print the Kubeflow run link and the predictions asset event `make demo`'s DAG run left.

Reads the metadata database of the demo's AIRFLOW_HOME: the XCom the "Kubeflow run"
button in the Airflow UI shows, and the asset event downstream DAGs are scheduled on.
"""

from __future__ import annotations

import json
import sys

import pendulum
from airflow.models.asset import AssetEvent
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY


def main(target_date: str) -> int:
    logical_date = pendulum.parse(f"{target_date}T06:00:00", tz="Asia/Tokyo").in_timezone("UTC")
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == "daily_prediction",
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
                AssetEvent.source_dag_id == "daily_prediction",
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
    sys.exit(main(sys.argv[1]))
