"""The workflows page (prediction_app.workflows_page) on a real Airflow metadata database.

A registry of three workflows: one fresh, one whose last run failed, one that never wrote
its due partition. Runs and asset events are rows in the session's SQLite database (under
DAG ids no other test uses); the page is the plugin's FastAPI app behind FastAPI's
TestClient, with Airflow's ``get_user`` overridden and an auth manager that lets the user
read two of the three DAGs (the way tests/plugin/test_run_page.py does).
"""

from __future__ import annotations

import shutil
import textwrap

from tests.dag.helpers import REPO
from tests.dag.test_registry import copy_entry

PAGE = """
import json, re, warnings
warnings.simplefilter("ignore")
import pendulum
from fastapi import FastAPI
from fastapi.testclient import TestClient
from airflow.api_fastapi import app as airflow_app
from airflow.api_fastapi.core_api.security import get_user
from airflow.models.asset import AssetEvent
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from prediction_app.registry import load_registry
from prediction_app.workflows_page import _partition, _schedule_times, create_app

class Auth:
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        return details.id != "wfpage_hidden"
    def get_url_login(self, **kwargs):
        return "/auth/login"

airflow_app._AuthManagerState.instance = Auth()
now = pendulum.now("UTC")
workflows = {w.name: w for _, w in load_registry().workflows}
due = {}
with create_session() as session:
    for name, state, written in (
        ("wfpage_fresh", DagRunState.SUCCESS, True),
        ("wfpage_failing", DagRunState.FAILED, True),
        ("wfpage_stale", DagRunState.SUCCESS, False),
        ("wfpage_hidden", DagRunState.SUCCESS, True),
    ):
        wf = workflows[name]
        _, due_at = _schedule_times(wf, now)
        due[name] = _partition(wf, due_at)
        logical = pendulum.instance(due_at).in_timezone("UTC")
        run_id = f"scheduled__{name}"
        session.add(DagRun(dag_id=name, run_id=run_id, logical_date=logical, run_after=logical,
                           run_type="scheduled", state=state))
        if written:
            # The failing one wrote the partition before, not the one its last run was for.
            target = due[name] if state == DagRunState.SUCCESS else _partition(
                wf, logical.subtract(days=1))
            session.add(AssetEvent(
                asset_id=1, source_dag_id=name, source_task_id="predict",
                source_run_id=run_id if state == DagRunState.SUCCESS else "earlier",
                partition_key=target, timestamp=now.subtract(hours=2),
                extra={"target_date": target, "rows": 3, "model_sha256": "ab" * 32,
                       "run_url": f"http://kfp.test/#/runs/details/{name}"}))
    # A backfill of an older date after it, with another model: not fresher, but the model
    # now in use.
    old = _partition(workflows["wfpage_fresh"], now.subtract(days=5))
    session.add(AssetEvent(
        asset_id=1, source_dag_id="wfpage_fresh", source_task_id="predict",
        source_run_id="backfill__old", partition_key=old, timestamp=now.subtract(hours=1),
        extra={"target_date": old, "rows": 3, "model_sha256": "cd" * 32}))
page = create_app()
page.dependency_overrides[get_user] = lambda: object()
root = FastAPI()
root.mount("/prediction-workflows", page)
with TestClient(root) as client:
    response = client.get("/prediction-workflows/")
    anonymous = create_app()
    root2 = FastAPI(); root2.mount("/prediction-workflows", anonymous)
    with TestClient(root2) as client2:
        refused = client2.get("/prediction-workflows/").status_code
html = response.text
rows = dict(re.findall(r'<tr id="wf-(\\w+)"[^>]*data-flags="([^"]*)"', html))
def cell(name, css):
    part = html.split(f'id="wf-{name}"')[1].split("</tr>")[0]
    return re.sub(r"\\s+", " ", part.split(f'class="{css}"')[1].split("</td>")[0])
print(json.dumps({
    "status": response.status_code, "refused": refused, "rows": rows, "due": due,
    "fresh_written": cell("wfpage_fresh", "written"), "fresh_run": cell("wfpage_fresh", "run"),
    "fresh_model": cell("wfpage_fresh", "model"), "fresh_next": cell("wfpage_fresh", "next"),
    "fresh_schedule": cell("wfpage_fresh", "schedule"),
    "owner": cell("wfpage_fresh", "owner"), "stale_written": cell("wfpage_stale", "written"),
    "failing_run": cell("wfpage_failing", "run"),
    "dag_link": 'href="http://airflow.test:8080/dags/wfpage_fresh"' in html,
}))
"""


def test_page_lists_every_readable_workflow_and_flags_stale_and_failing(airflow_env, tmp_path):
    registry = tmp_path / "workflows"
    registry.mkdir()
    shutil.copy(REPO / "workflows" / "teams.yaml", registry / "teams.yaml")
    copy_entry(registry, "wfpage_fresh", owner="alice")
    copy_entry(registry, "wfpage_failing")
    copy_entry(
        registry,
        "wfpage_stale",
        schedule={"cron": "0 0 * * *", "timezone": "UTC"},
        target_date={"timezone": "UTC", "partition": "daily"},
        operations={"dagrun_timeout_minutes": 30},
    )
    copy_entry(registry, "wfpage_hidden")
    info = airflow_env.python_json(
        textwrap.dedent(PAGE), extra_env={"PREDICTION_WORKFLOWS_DIR": str(registry)}
    )
    assert info["status"] == 200 and info["refused"] == 401
    # Every workflow the user may read; the failing one's due partition is missing too.
    assert info["rows"] == {
        "wfpage_failing": "failing stale",
        "wfpage_fresh": "",
        "wfpage_stale": "stale",
    }
    due = info["due"]
    assert f"{due['wfpage_fresh']}<br>" in info["fresh_written"]
    assert "2 h 0" in info["fresh_written"]  # the partition's age
    assert "success" in info["fresh_run"]
    assert 'href="http://kfp.test/#/runs/details/wfpage_fresh">Kubeflow run<' in info["fresh_run"]
    assert ">cdcdcdcdcdcd<" in info["fresh_model"].replace(" ", "").replace("\n", "")
    assert "<code>0 6 * * *</code> Asia/Tokyo" in info["fresh_schedule"]
    assert "JST" in info["fresh_next"] or "+09" in info["fresh_next"]
    assert info["owner"].startswith(">alice / recommendation")
    assert (
        "none" in info["stale_written"] and f"due: {due['wfpage_stale']}" in (info["stale_written"])
    )
    assert "failed" in info["failing_run"]
    assert info["dag_link"]
