"""The link to a local run: where the run page lives, so the run URL and the page agree.

The plugin mounts the page (``kfp_bridge.ui``) under ``RUN_PAGE_PREFIX`` on the Airflow
api-server; the hook gives the local backend run URLs that point there, on ``[api]
base_url``. Here, beside the "Kubeflow run" link, so the hook never imports the UI.
"""

from __future__ import annotations

from urllib.parse import quote

RUN_PAGE_PREFIX = "/kfp-bridge"
LOCAL_RUNS_PATH = "/local-runs"
DEFAULT_CONN_ID = "kfp_default"
# Airflow's own fallback when [api] base_url is unset (TaskInstance.log_url,
# airflow/models/taskinstance.py and the task SDK's task_runner.py use the same).
FALLBACK_BASE_URL = "http://localhost:8080/"


def api_base_url() -> str:
    """``[api] base_url`` of this Airflow installation, or Airflow's own fallback."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback=None) or FALLBACK_BASE_URL


def local_run_url(run_id: str, *, conn_id: str = DEFAULT_CONN_ID, base_url: str) -> str:
    """Page of one local run; ``conn_id`` tells the page which runs folder to read."""
    url = f"{base_url.rstrip('/')}{RUN_PAGE_PREFIX}{LOCAL_RUNS_PATH}/{quote(run_id, safe='')}"
    return url if conn_id == DEFAULT_CONN_ID else f"{url}?conn_id={quote(conn_id, safe='')}"
