"""No connection secret in any log, the metadata DB, XCom or Slack, on a real Airflow stack.

A KFP API stand-in that requires the connection's bearer token echoes it back in
its error bodies (HTTP 500, "Authorization: Bearer <token>") and in the error of
a FAILED run, the way a misconfigured proxy or an over-helpful service does. Three
tasks meet that text on every path the bridge has:

- ``deferred_failed`` (2 tries): a transient 500 while the trigger polls, then a
  FAILED run; the worker that resumes after deferral logs and raises the error;
- ``gave_up``: 500s until the trigger's error budget is spent ("gave up ... last: ...");
- ``worker_failed``: the same, waited for in the worker (not deferrable).

Real scheduler, dag-processor, triggerer, api-server and LocalExecutor workers;
the Slack notifier posts to a loopback webhook. Afterwards every file under the
Airflow home (component logs, task and trigger logs, the SQLite database with its
next_kwargs and XCom) and every Slack message is searched for the token.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json
from tests.dag.helpers import slack_stand_in
from tests.e2e.airflow_stack import REPO, AirflowStack, dags_folder

TOKEN = "kfp-s3cr3t-7d1f0c9a2b"
# Secrets of other connections, which the triggerer never reads (issue 21): the Slack
# webhook's token (this stack's slack_default), a Google access token, a Dex session cookie.
SLACK_SECRET = "e2eS1ackW3bhookS3cret"
GOOGLE_TOKEN = "ya29.a0AfB_e2e-standin-google-token"
DEX_COOKIE = "dexS3ssionC00kie9f8e"
OTHER_SECRETS = (SLACK_SECRET, GOOGLE_TOKEN, DEX_COOKIE)
ECHO = (
    f"upstream rejected the request: Authorization: Bearer {TOKEN} "
    f"(forwarded to https://hooks.slack.com/services/T000/B000/{SLACK_SECRET}, "
    f"google {GOOGLE_TOKEN}; Cookie: oauth2_proxy_kubeflow={DEX_COOKIE})"
)
TINY = REPO / "tests" / "bridge" / "fixtures" / "tiny_pipeline.yaml"
RUN_PATH = r"/runs/[0-9a-f-]+$"  # GET one run (not the list, not terminate)

DAG = """
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from prediction_app.notifications import TaskFailureNotifier
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

notify = TaskFailureNotifier()
common = dict(
    pipeline_file="{tiny}", parameters={{"message": "hi"}},
    on_retry_callback=notify, on_failure_callback=notify,
)
with DAG("e2e_secrets", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    # >= 15 s: a trigger firing seconds after deferral races the scheduler (README)
    KubeflowPipelineRunOperator(task_id="deferred_failed", kfp_conn_id="kfp_echo_a",
                                poll_interval=15, retries=1,
                                retry_delay=timedelta(seconds=1), **common)
    KubeflowPipelineRunOperator(task_id="gave_up", kfp_conn_id="kfp_echo_b",
                                poll_interval=15, max_transient_errors=1, **common)
    KubeflowPipelineRunOperator(task_id="worker_failed", kfp_conn_id="kfp_echo_c",
                                poll_interval=1, deferrable=False, **common)
"""


def _echoing_server() -> KfpApiStandIn:
    server = KfpApiStandIn().__enter__()
    server.require_token(TOKEN)
    # A resumed run (try 2 asks the service to retry try 1's FAILED run) fails again the
    # same way, so the second try waits in the triggerer and meets the echo too.
    server.set_schedule(
        pending=0,
        running=4,
        unit="seconds",
        outcome="FAILED",
        retry_outcome="FAILED",
        error=f"predict: {ECHO}",
    )
    return server


def _deferred_tries(stack: AirflowStack, task_id: str) -> set[int]:
    rows = stack.query(
        "SELECT try_number FROM task_instance WHERE dag_id = 'e2e_secrets' AND task_id = ? "
        "AND state = 'deferred'",
        (task_id,),
    )
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_secrets")
    dags = dags_folder(root, "e2e_secrets", DAG.format(tiny=TINY))
    servers = {name: _echoing_server() for name in ("a", "b", "c")}
    servers["c"].inject("status", times=1, status=500, message=ECHO, method="GET", path=RUN_PATH)
    try:
        with slack_stand_in() as slack:
            env = {
                f"AIRFLOW_CONN_KFP_ECHO_{name.upper()}": airflow_connection_json(
                    server.url, password=TOKEN, auth="token", request_timeout=5
                )
                for name, server in servers.items()
            }
            env["AIRFLOW_CONN_SLACK_DEFAULT"] = slack.connection_uri(f"T000/B000/{SLACK_SECRET}")
            stack = AirflowStack(root / "home", dags_folder=dags, extra_env=env)
            with stack:
                _run(stack, servers)
            texts = slack.texts()
        yield {"stack": stack, "servers": servers, "slack": texts}
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


def _run(stack: AirflowStack, servers: dict[str, KfpApiStandIn]) -> None:
    stack.wait_for_dag("e2e_secrets")
    stack.airflow("dags", "trigger", "e2e_secrets", "--run-id", "leak_1")
    echoed: dict[str, set[int]] = {"deferred_failed": set(), "gave_up": set()}
    deadline = time.monotonic() + 600
    while True:
        state = stack.query("SELECT state FROM dag_run WHERE run_id = 'leak_1'")[0][0]
        if state in ("success", "failed"):
            break
        assert time.monotonic() < deadline, stack.tail()
        # Once a try waits in the triggerer, the service starts echoing the token.
        for task_id, server, times in (
            ("deferred_failed", servers["a"], 1),
            ("gave_up", servers["b"], -1),
        ):
            for try_number in _deferred_tries(stack, task_id) - echoed[task_id]:
                server.inject(
                    "status", times=times, status=500, message=ECHO, method="GET", path=RUN_PATH
                )
                echoed[task_id].add(try_number)
        time.sleep(1)
    assert echoed == {"deferred_failed": {1, 2}, "gave_up": {1}}, stack.tail()
    stack.wait_settled()  # failure callbacks and log files settle


def _files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


def test_the_service_text_really_reached_the_logs(outcome):
    """Guard against a vacuous pass: the echoed errors were logged, masked."""
    stack = outcome["stack"]
    for server in outcome["servers"].values():
        assert {r["authorization"] for r in server.requests()} == {f"Bearer {TOKEN}"}
    logs = "\n".join(p.read_text(errors="replace") for p in _files(stack.logs))
    assert "Authorization: Bearer ***" in logs
    assert "hooks.slack.com/services/***" in logs and "oauth2_proxy_kubeflow" not in logs
    assert "gave up on run" in logs
    states = dict(
        stack.query("SELECT task_id, state FROM task_instance WHERE dag_id = 'e2e_secrets'")
    )
    assert states == {"deferred_failed": "failed", "gave_up": "failed", "worker_failed": "failed"}


def test_no_log_file_and_no_database_byte_holds_the_token(outcome):
    stack = outcome["stack"]
    leaks = [
        f"{p}: {secret}"
        for p in _files(stack.home)
        for secret in (TOKEN, *OTHER_SECRETS)
        if secret.encode() in p.read_bytes()
    ]
    assert leaks == []


def test_next_kwargs_and_xcom_hold_the_masked_text(outcome):
    stack = outcome["stack"]
    con = sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True)
    try:
        events = [
            json.dumps(json.loads(row[0]))
            for table in ("task_instance", "task_instance_history")
            for row in con.execute(f"SELECT next_kwargs FROM {table} WHERE next_kwargs IS NOT NULL")
        ]
        xcoms = [row[0] for row in con.execute("SELECT value FROM xcom")]
    finally:
        con.close()
    assert any("Bearer ***" in event for event in events), events
    for secret in (TOKEN, *OTHER_SECRETS):
        assert not any(secret in text for text in events + [str(x) for x in xcoms]), secret


def test_slack_messages_are_masked(outcome):
    texts = outcome["slack"]
    assert len(texts) >= 4, texts  # 2 tries + 1 + 1 failed tries, plus none for success
    for secret in (TOKEN, *OTHER_SECRETS):
        assert not any(secret in text for text in texts), secret
