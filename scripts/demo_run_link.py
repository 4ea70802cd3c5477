"""Print the Kubeflow run link that `make demo`'s DAG run left in Airflow's XCom.

Reads the metadata database of the demo's AIRFLOW_HOME, exactly what the
"Kubeflow run" button in the Airflow UI shows for the task.
"""

from __future__ import annotations

import sys

import pendulum
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
    if row is None:
        print("Kubeflow run: (no run link recorded)")
        return 1
    print(f"Kubeflow run: {XComModel.deserialize_value(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
