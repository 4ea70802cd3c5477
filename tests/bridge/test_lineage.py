"""OpenLineage events and asset events from real ``airflow dags test`` runs.

The OpenLineage provider's own listener and extractor call the operator's
``get_openlineage_facets_on_complete``/``_on_failure`` and write the events with its
file transport; Airflow records the asset event. The pipeline is the
``reporting_pipeline`` fixture on the local backend (real kfp.local).
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from tests.bridge._helpers import FIXTURES, local_connection_env
from tests.dag.helpers import AirflowEnv, airflow_env_vars

pytestmark = pytest.mark.e2e  # real `airflow dags test` runs with OpenLineage on

DAG = """
import pendulum
from airflow.sdk import DAG, Asset
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from prediction_app.assets import record_result

WAREHOUSE = {warehouse!r}
with DAG("lineage_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file={pipeline!r},
        parameters={{
            "target_date": "2026-11-27",
            "table_dir": WAREHOUSE + "/predictions",
            "rows": 3,
            "fail": "{{{{ dag_run.conf.get('fail', False) }}}}",
        }},
        kfp_conn_id="kfp_local",
        report_task="write-table",
        on_result=record_result,
        inlets=[Asset("file://" + WAREHOUSE + t) for t in ("/users", "/page_views")],
        outlets=[Asset("file://" + WAREHOUSE + "/predictions")],
        poll_interval=1,
    )
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    dags, warehouse, ol_log = root / "dags", root / "warehouse", root / "ol.jsonl"
    dags.mkdir()
    (dags / "lineage_probe.py").write_text(
        textwrap.dedent(DAG).format(
            warehouse=str(warehouse), pipeline=str(FIXTURES / "reporting_pipeline.yaml")
        )
    )
    env = airflow_env_vars(root / "home", dags_folder=dags)
    env.update(local_connection_env(root / "runs"))
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(ol_log), "append": True}
    )
    airflow = AirflowEnv(home=root / "home", env=env)
    airflow.run("db", "migrate")
    ok = airflow.run("dags", "test", "lineage_probe", "2026-11-26T21:00:00+00:00", timeout=300)
    failed = airflow.run(
        "dags", "test", "lineage_probe", "2026-11-27T21:00:00+00:00",
        "--conf", '{"fail": true}', check=False, timeout=300,
    )  # fmt: skip
    assert "state=success" in ok.stdout + ok.stderr
    assert failed.returncode != 0 or "state=failed" in failed.stdout + failed.stderr
    events = [json.loads(line) for line in ol_log.read_text().splitlines()]
    return root, warehouse, events


def _task_events(events: list[dict], event_type: str) -> list[dict]:
    return [
        e
        for e in events
        if e["eventType"] == event_type and e["job"]["name"] == "lineage_probe.predict"
    ]


def _kfp_runs(root: Path) -> dict[str, dict]:
    runs = {}
    for request in (root / "runs").glob("*/request.json"):
        body = json.loads(request.read_text())
        state = json.loads((request.parent / "state.json").read_text())["state"]
        # The link users follow: the run's page on the api-server ([api] base_url of the env).
        url = f"http://airflow.test:8080/kfp-bridge/local-runs/{body['run_id']}?conn_id=kfp_local"
        runs[state] = {"run_id": body["run_id"], "url": url}
    return runs


def test_complete_event_has_sources_in_the_reported_partition_out_and_the_kfp_run(probe):
    root, warehouse, events = probe
    [complete] = _task_events(events, "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        ("file", str(warehouse / "users")),
        ("file", str(warehouse / "page_views")),
    ]
    [output] = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(warehouse / "predictions"))
    partition = str(warehouse / "predictions" / "2026-11-27.parquet")
    assert output["facets"]["version"]["datasetVersion"] == partition
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 3
    run = _kfp_runs(root)["SUCCEEDED"]
    facets = complete["run"]["facets"]
    assert facets["externalQuery"]["externalQueryId"] == run["run_id"]
    assert facets["externalQuery"]["source"] == "kfp_local"
    assert facets["kubeflowRun"]["runId"] == run["run_id"]
    assert facets["kubeflowRun"]["runUrl"] == run["url"]
    assert facets["kubeflowRun"]["runName"].startswith("lineage_probe__predict__2026-11-26T")


def test_fail_event_names_the_failed_kfp_run_and_no_row_count(probe):
    root, warehouse, events = probe
    [failed] = _task_events(events, "FAIL")
    run = _kfp_runs(root)["FAILED"]
    facets = failed["run"]["facets"]
    assert facets["externalQuery"]["externalQueryId"] == run["run_id"]
    assert facets["kubeflowRun"]["runUrl"] == run["url"]
    assert "write_table was asked to fail" in facets["errorMessage"]["message"]
    assert [d["name"] for d in failed["inputs"]] == [
        str(warehouse / "users"),
        str(warehouse / "page_views"),
    ]
    [output] = failed["outputs"]  # the declared outlet; nothing was written
    assert output["name"] == str(warehouse / "predictions")
    assert "outputStatistics" not in output.get("outputFacets", {})


def test_only_the_successful_run_recorded_an_asset_event_with_the_reported_result(probe):
    root, warehouse, _ = probe
    con = sqlite3.connect(root / "home" / "airflow.db")
    rows = con.execute(
        "SELECT a.uri, e.extra, e.partition_key, e.source_dag_id FROM asset_event e "
        "JOIN asset a ON a.id = e.asset_id"
    ).fetchall()
    con.close()
    [(uri, extra, partition_key, source_dag_id)] = rows
    assert uri == (warehouse / "predictions").as_uri()
    assert partition_key == "2026-11-27"
    extra = json.loads(extra)
    run = _kfp_runs(root)["SUCCEEDED"]
    assert extra == {
        "target_date": "2026-11-27",
        "partition": str(warehouse / "predictions" / "2026-11-27.parquet"),
        "rows": 3,
        "model_sha256": extra["model_sha256"],
        "run_id": run["run_id"],
        "run_url": run["url"],
    }
    assert len(extra["model_sha256"]) == 64
    assert source_dag_id == "lineage_probe"
