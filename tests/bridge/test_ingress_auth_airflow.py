"""Real ``airflow dags test`` runs behind Kubeflow's Dex login and behind Google IAP.

The operator submits in the task, defers, the trigger waits (its own hook, so its own
login or ID token) and the task completes; the ingress's session or ID token runs out
several times during the wait. Afterwards neither the Dex password nor any session cookie
the ingress issued is in the command's output or any file under the Airflow home.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kfp_bridge.testing.kfp_api import iap
from kfp_bridge.testing.kfp_api.server import (
    KfpApiStandIn,
    airflow_connection_json,
    write_google_credentials,
)
from tests.bridge._helpers import AIRFLOW_BIN, TINY_PIPELINE, airflow_env

PASSWORD = "dex-Pa55word-e2e"
DAG_FILE = """
import os
from datetime import datetime, timezone
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

with DAG("ingress_test", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)):
    KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file={pipeline!r},
        parameters={{"message": "{{{{ ds }}}}", "repeat": 2}},
        kfp_conn_id="kfp_ingress",
        poll_interval=0.2,
        deferrable=True,
    )
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow_ingress")
    dags = root / "dags"
    dags.mkdir()
    (dags / "ingress_test.py").write_text(DAG_FILE.format(pipeline=str(TINY_PIPELINE)))
    env = airflow_env(root / "home", dags)
    subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    return {"root": root, "env": env}


def _dags_test(airflow_home, connection: dict, logical_date: str, **env) -> str:
    run_env = {**airflow_home["env"], "AIRFLOW_CONN_KFP_INGRESS": json.dumps(connection), **env}
    done = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", "ingress_test", logical_date],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def _home_text(airflow_home) -> str:
    texts = []
    for path in Path(airflow_home["root"], "home").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_dags_test_behind_dex_with_sessions_expiring_mid_wait(airflow_home):
    with KfpApiStandIn(profile="dex") as server:
        server.set_schedule(pending=3, running=3)
        server.configure_dex(users={"local": {"airflow@example.com": PASSWORD}}, session_requests=2)
        connection = json.loads(
            airflow_connection_json(
                server.url, login="airflow@example.com", password=PASSWORD, auth="dex"
            )
        )
        output = _dags_test(airflow_home, connection, "2026-11-26T21:00:00+00:00")
        [run] = server.runs()
        assert run["state"] == "SUCCEEDED"
        assert "new_state=deferred" in output  # the wait happened in the trigger
        stats = server.dex_stats()
        assert stats["logins"] >= 3 and stats["failed_logins"] == 0
        cookies = list(server.state.dex.sessions)
    assert cookies
    everything = output + _home_text(airflow_home)
    assert PASSWORD not in everything
    assert not [c for c in cookies if c in everything]


def test_dags_test_behind_iap_with_id_tokens_renewed_mid_wait(airflow_home, tmp_path):
    with KfpApiStandIn(profile="iap") as server:
        server.set_schedule(pending=3, running=3)
        server.configure_iap(token_seconds=60)  # stale for google-auth at once: minted again
        credentials = write_google_credentials(server.url, tmp_path / "sa.json")
        connection = {
            "conn_type": "kfp",
            "host": server.url,
            "extra": {"backend": "kfp", "auth": "iap", "iap_client_id": iap.CLIENT_ID},
        }
        output = _dags_test(
            airflow_home,
            connection,
            "2026-11-27T21:00:00+00:00",
            GOOGLE_APPLICATION_CREDENTIALS=str(credentials),
        )
        [run] = server.runs()
        assert run["state"] == "SUCCEEDED"
        assert "new_state=deferred" in output
        stats = server.iap_stats()
        assert stats["minted"] >= 3 and stats["refused"] == []
        tokens = {r["authorization"].split(" ", 1)[1] for r in server.requests()}
    everything = output + _home_text(airflow_home)
    assert not [t for t in tokens if t in everything]
