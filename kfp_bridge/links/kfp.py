"""The "Kubeflow run" extra link on the task page.

The operator pushes the run page URL under ``kubeflow_run_url`` as soon as the
run is known. After each worker run Airflow 3 calls ``get_link`` and stores its
result under the same key, and the UI reads that key; so the key holds exactly
the URL and nothing else (failure callbacks read it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

RUN_URL_XCOM_KEY = "kubeflow_run_url"


class KubeflowRunLink(BaseOperatorLink):
    """Link to the pipeline run (KFP UI, Vertex console, or the local run log)."""

    name = "Kubeflow run"
    key = RUN_URL_XCOM_KEY

    @property
    def xcom_key(self) -> str:
        return RUN_URL_XCOM_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(ti_key=ti_key, key=RUN_URL_XCOM_KEY)
        return url if isinstance(url, str) else ""
