"""The application's Airflow plugin: target-date macros, the timetable, the local run page.

- Macros: templates call ``{{ macros.prediction_app.target_date(dag_run) }}`` (Airflow
  exposes a plugin's macros under ``macros.<plugin name>``). The logic lives in
  ``prediction_app.target_date`` so the DAG, this plugin and the Slack notifier agree.
- Local run page: a FastAPI app on the api-server under ``/kfp-bridge`` (the local
  backend's "Kubeflow run" link points there), and a "Local Kubeflow runs" entry in the
  UI's Browse menu. The app is built on its first request, so the other Airflow
  processes that import this plugin do not load it.

- Workflows page: every registry workflow (``prediction_app.workflows_page``) under
  ``/prediction-workflows``, with a "Prediction workflows" entry in the Browse menu.

- Timetable: the daily DAG's ``TargetDateCronTimetable`` (``prediction_app.timetables``);
  Airflow loads a custom timetable only when a plugin registers it.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kfp_bridge.links.local_run import LOCAL_RUNS_PATH, RUN_PAGE_PREFIX
from kfp_bridge.ui import LazyRunPageApp
from prediction_app.target_date import (
    jst_ds,
    jst_ds_nodash,
    local_ds,
    local_ds_nodash,
    target_date,
)
from prediction_app.timetables import TargetDateCronTimetable
from prediction_app.workflows_page import WORKFLOWS_PREFIX, LazyWorkflowsApp


class KfpBridgePlugin(AirflowPlugin):
    name = "prediction_app"
    macros = [target_date, jst_ds, jst_ds_nodash, local_ds, local_ds_nodash]
    timetables = [TargetDateCronTimetable]
    fastapi_apps = [
        {"app": LazyRunPageApp(), "url_prefix": RUN_PAGE_PREFIX, "name": "Local Kubeflow runs"},
        {"app": LazyWorkflowsApp(), "url_prefix": WORKFLOWS_PREFIX, "name": "Prediction workflows"},
    ]
    external_views = [
        {
            "name": "Local Kubeflow runs",
            # relative to the api-server's base URL, so it works behind a path prefix
            "href": f"{RUN_PAGE_PREFIX.lstrip('/')}{LOCAL_RUNS_PATH}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "kfp-local-runs",
        },
        {
            "name": "Prediction workflows",
            "href": f"{WORKFLOWS_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "prediction-workflows",
        },
    ]
