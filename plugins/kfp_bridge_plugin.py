"""Airflow plugin: target-date macros for every DAG, and the local run page.

- Macros: templates call ``{{ macros.kfp_bridge.target_date(dag_run) }}`` (Airflow
  exposes a plugin's macros under ``macros.<plugin name>``). The logic lives in
  ``kfp_bridge.target_date`` so the DAG, this plugin and the Slack notifier agree.
- Local run page: a FastAPI app on the api-server under ``/kfp-bridge`` (the local
  backend's "Kubeflow run" link points there), and a "Local Kubeflow runs" entry in the
  UI's Browse menu. The app is built on its first request, so the other Airflow
  processes that import this plugin do not load it.

The daily DAG's timetable is registered by the kfp-bridge package itself (its
``airflow.plugins`` entry point, ``kfp_bridge.timetables``), so the DAG does not
depend on this folder being deployed.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kfp_bridge.target_date import jst_ds, jst_ds_nodash, local_ds, local_ds_nodash, target_date
from kfp_bridge.ui import LazyRunPageApp
from kfp_bridge.ui.urls import LOCAL_RUNS_PATH, RUN_PAGE_PREFIX


class KfpBridgePlugin(AirflowPlugin):
    name = "kfp_bridge"
    macros = [target_date, jst_ds, jst_ds_nodash, local_ds, local_ds_nodash]
    fastapi_apps = [
        {"app": LazyRunPageApp(), "url_prefix": RUN_PAGE_PREFIX, "name": "Local Kubeflow runs"}
    ]
    external_views = [
        {
            "name": "Local Kubeflow runs",
            # relative to the api-server's base URL, so it works behind a path prefix
            "href": f"{RUN_PAGE_PREFIX.lstrip('/')}{LOCAL_RUNS_PATH}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "kfp-local-runs",
        }
    ]
