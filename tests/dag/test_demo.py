"""`make demo` as a user meets it: progress, the failing step's error, Ctrl-C, a tidy DB.

``scripts/demo.py`` (what ``make demo`` runs) drives a real ``airflow dags test`` of
a small DAG (the bridge operator on the local backend with the tiny fixture
pipeline, real ``kfp.local`` runs) in an isolated Airflow home; the test reads its
output, the processes it started and the metadata database afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.bridge._helpers import PIPELINE_PYTHON, process_group_alive
from tests.dag.helpers import REPO, AirflowEnv, airflow_env_vars

pytestmark = pytest.mark.e2e  # scripts/demo.py drives real `airflow dags test` runs

TINY = REPO / "tests" / "bridge" / "fixtures" / "tiny_pipeline.yaml"
DAG = """
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

with DAG("demo_tiny", schedule="0 6 * * *", catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo")):
    KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file="{tiny}",
        parameters={{
            "message": "{{{{ ds }}}}",
            "sleep_seconds": "{{{{ var.value.get('demo_sleep', '0') }}}}",
            "failure": "{{{{ var.value.get('demo_failure', '') }}}}",
        }},
        kfp_conn_id="kfp_default",
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(minutes=10),
    )
"""


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("demo_home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "demo_tiny.py").write_text(textwrap.dedent(DAG).format(tiny=TINY))
    env = AirflowEnv(home=home, env=airflow_env_vars(home, dags_folder=dags))
    env.env["AIRFLOW_CONN_KFP_DEFAULT"] = json.dumps(
        {
            "conn_type": "kfp",
            "extra": {
                "backend": "local",
                "local_state_dir": str(home / "runs"),
                "local_python": str(PIPELINE_PYTHON),
            },
        }
    )
    env.run("db", "migrate")
    return env


def _demo(env: AirflowEnv, date: str, **variables: str) -> subprocess.Popen:
    extra = {f"AIRFLOW_VAR_{k.upper()}": v for k, v in variables.items()}
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--date", date,
         "--dag-id", "demo_tiny", "--log", str(env.home / f"dags-test-{date}.log")],
        env={**env.env, **extra}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen, text: str, timeout: float = 240) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"never saw {text!r}:\n{seen}"
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{seen}"
        seen += line
    return seen


def _db(env: AirflowEnv, sql: str) -> list[tuple]:
    with sqlite3.connect(env.home / "airflow.db") as db:
        return db.execute(sql).fetchall()


def _run_dirs(env: AirflowEnv, date: str) -> list[Path]:
    """Local runs of the demo task for the 06:00 JST run of ``date``."""
    logical = f"{int(date[-2:]) - 1:02d}T210000Z"  # D 06:00 JST = D-1 21:00 UTC (mid-month)
    runs = []
    for request in (env.home / "runs").glob("*/request.json"):
        if json.loads(request.read_text())["display_name"].endswith(logical):
            runs.append(request.parent)
    return runs


def test_a_bad_date_names_DATE_before_anything_runs():
    proc = subprocess.run(
        ["make", "demo", "DATE=2026-13-45"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "make demo: DATE=2026-13-45 is not a date (YYYY-MM-DD)" in proc.stdout + proc.stderr
    assert "--end-date" not in proc.stdout + proc.stderr


def test_success_leaves_no_trigger_and_the_run_has_its_real_start(demo_env):
    proc = _demo(demo_env, "2026-11-12")
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert "pipeline run" in output and "SUCCEEDED" in output  # progress was shown
    assert _db(demo_env, "SELECT count(*) FROM trigger") == [(0,)]  # no live trigger left
    [(state, start, run_after, user)] = _db(
        demo_env,
        "SELECT state, start_date, run_after, triggering_user_name FROM dag_run "
        "WHERE logical_date LIKE '2026-11-11 21:00%'",
    )
    assert (state, start, user) == ("success", run_after, "make demo")
    assert _db(demo_env, "SELECT is_paused FROM dag WHERE dag_id = 'demo_tiny'") == [(1,)]


def test_a_failing_step_is_shown_at_once_and_bad_input_is_not_retried(demo_env):
    proc = _demo(demo_env, "2026-11-13", demo_failure="permanent")
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 1, output
    assert "the pipeline run failed:" in output
    assert "BadGreetingError" in output  # the component's own error, on screen
    assert "bad input (message): the task fails now, without retries" in output
    assert "retries it after its retry delay" not in output
    assert _db(demo_env, "SELECT count(*) FROM trigger") == [(0,)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_everything_it_started(demo_env, signum):
    date = "2026-11-14" if signum == signal.SIGINT else "2026-11-15"
    proc = _demo(demo_env, date, demo_sleep="300")
    _read_until(proc, "RUNNING")
    [run_dir] = _run_dirs(demo_env, date)
    runner = json.loads((run_dir / "pid").read_text())["pid"]
    os.kill(proc.pid, signum)  # what Ctrl-C (or `kill`) does to make demo's script
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, output
    assert "stopped; the DAG run is marked failed" in output
    assert not process_group_alive(proc.pid)  # airflow dags test (it ignores SIGTERM)
    assert not process_group_alive(runner)  # the detached pipeline run
    assert json.loads((run_dir / "state.json").read_text())["state"] == "CANCELED"
    day = f"{int(date[-2:]) - 1:02d}"
    assert _db(
        demo_env, f"SELECT state FROM dag_run WHERE logical_date LIKE '2026-11-{day} 21:00%'"
    ) == [("failed",)]
    assert _db(demo_env, "SELECT count(*) FROM trigger") == [(0,)]
