"""Helpers for the DAG, plugin and Slack tests (the fixtures are in conftest.py).

Airflow reads AIRFLOW_HOME and the metadata database once per process, and the
bridge tests share this pytest process. So everything that needs Airflow's
configuration or database runs in a subprocess with its own environment: an
isolated AIRFLOW_HOME with SQLite, migrated once per session, this repository's
dags/ and plugins/. The Slack stand-in is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")
PIPELINE_PY = REPO / ".venv-pipeline" / "bin" / "python"


def pipeline_module(*args: str) -> str:
    """``python -m <args>`` in the pipeline environment; its stdout."""
    return subprocess.run(
        [str(PIPELINE_PY), "-m", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def small_warehouse(warehouse: Path, end_date: str) -> Path:
    """Demo source tables of 400 users over the 60 JST days ending on ``end_date``."""
    pipeline_module("kfp_prediction.demo_data", "--warehouse", str(warehouse), "--users", "400",
                    "--page-views", "4000", "--end-date", end_date)  # fmt: skip
    return warehouse


def train_model(warehouse: Path, model: Path, *options: str) -> str:
    """The demo model trained on ``warehouse`` into ``model`` (``--kind``, ...); its SHA-256."""
    pipeline_module("kfp_prediction.demo_model", "--warehouse", str(warehouse), "--out",
                    str(model), *options)  # fmt: skip
    return (model.parent / f"{model.name}.sha256").read_text().split()[0]


def asset_events(home: Path, where: str, value: str) -> list[tuple[str, str, str, dict]]:
    """Asset events in the SQLite metadata of ``home`` where ``where`` (a column of
    ``asset a`` or ``asset_event e``) equals ``value``: (uri, source DAG, partition, extra)."""
    con = sqlite3.connect(home / "airflow.db")
    try:
        rows = con.execute(
            "SELECT a.uri, e.source_dag_id, e.partition_key, e.extra FROM asset_event e "
            f"JOIN asset a ON a.id = e.asset_id WHERE {where} = ? ORDER BY e.id",
            (value,),
        ).fetchall()
    finally:
        con.close()
    return [(uri, dag, key, json.loads(extra)) for uri, dag, key, extra in rows]


@dataclass
class AirflowEnv:
    """An isolated Airflow installation: run CLI commands and scripts against it."""

    home: Path
    env: dict[str, str]

    def run(
        self, *args: str, extra_env: dict[str, str] | None = None, check: bool = True, timeout=300
    ) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(
            [AIRFLOW, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def python(
        self, code: str, *, extra_env: dict[str, str] | None = None, timeout=300
    ) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"script exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                f"stderr:\n{proc.stderr[-6000:]}"
            )
        return proc

    def python_json(self, code: str, **kwargs) -> object:
        """Run ``code``; its last stdout line is JSON."""
        out = self.python(code, **kwargs).stdout.strip().splitlines()
        return json.loads(out[-1])


def home_env(home: Path, dags_folder: Path, plugins_folder: Path = REPO / "plugins") -> dict:
    """This process's environment for an Airflow in ``home``: none of the caller's Airflow
    settings, connections or variables, this repo's plugins and package, no example DAGs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "KFP_BRIDGE_HOME": str(REPO),
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def airflow_env_vars(home: Path, dags_folder: Path = REPO / "dags") -> dict[str, str]:
    env = home_env(home, dags_folder)
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=60",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__BASE_URL": "http://airflow.test:8080",
        }
    )
    env.pop("DAILY_PREDICTION_DEADLINE_HOURS", None)
    env.pop("DAILY_PREDICTION_RETRY_DELAY_SECONDS", None)
    env.pop("PREDICTION_WORKFLOWS_DIR", None)  # the repository's workflows/ unless a test says
    env.pop("PREDICTION_PROJECT_ROOT", None)
    return env


@dataclass
class SlackStandIn:
    """A loopback HTTP server that answers like a Slack incoming webhook."""

    url: str
    port: int
    mode: str = "ok"  # ok | error | hang
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def connection_uri(self, token: str = "T000/B000/secretwebhooktoken") -> str:
        """A ``slackwebhook`` connection whose host points here (http, not the default https)."""
        conn = {
            "conn_type": "slackwebhook",
            "host": f"http://127.0.0.1:{self.port}/services",
            "password": token,
        }
        return json.dumps(conn)

    def texts(self) -> list[str]:
        return [r["body"].get("text", "") for r in self.requests]


@contextmanager
def slack_stand_in() -> Iterator[SlackStandIn]:
    """Serve a :class:`SlackStandIn` on 127.0.0.1 until the block ends."""
    state: dict[str, SlackStandIn] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            stand_in = state["s"]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            stand_in.requests.append({"path": self.path, "body": json.loads(raw or "{}")})
            if stand_in.mode == "hang":
                stand_in.release.wait(30)
                return
            status, body = (200, b"ok") if stand_in.mode == "ok" else (500, b"internal_error")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    state["s"] = SlackStandIn(url=f"http://127.0.0.1:{port}", port=port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state["s"]
    finally:
        state["s"].release.set()
        server.shutdown()
        server.server_close()
