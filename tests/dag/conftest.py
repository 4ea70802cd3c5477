"""Fixtures for the DAG, plugin and Slack tests.

Airflow reads AIRFLOW_HOME and the metadata database once per process, and the
bridge tests share this pytest process. So everything that needs Airflow's
configuration or database runs in a subprocess with its own environment (see
helpers.py). The Slack stand-in is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.dag.helpers import AirflowEnv, SlackStandIn, airflow_env_vars


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("airflow_home")
    env = AirflowEnv(home=home, env=airflow_env_vars(home))
    env.run("db", "migrate")
    env.run("dags", "reserialize")  # the scheduler's copy of dags/ (backfills, task instances)
    return env


@pytest.fixture
def slack_server() -> Iterator[SlackStandIn]:
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["s"]
    finally:
        state["s"].release.set()
        server.shutdown()
        server.server_close()
