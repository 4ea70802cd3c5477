"""The local run page (kfp_bridge.ui) on real local-backend runs, through FastAPI's TestClient.

The page app is mounted the way Airflow's ``init_plugins`` mounts a plugin's
``fastapi_apps`` entry. Identity comes from Airflow's own ``get_user`` dependency:
without a token it refuses (401); tests that need a user override that dependency
and install an auth manager that allows one DAG and not another, the way a
per-DAG auth manager (FAB, Keycloak) answers ``is_authorized_dag``. The real
simple auth manager with a real login is exercised in tests/browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kfp_bridge.backends import _procfs as procfs
from kfp_bridge.backends.base import RunState
from kfp_bridge.backends.local import LocalBackend
from kfp_bridge.hooks.kfp import KubeflowPipelineHook
from kfp_bridge.links.local_run import FALLBACK_BASE_URL, local_run_url
from kfp_bridge.ui import local_runs
from tests.bridge._helpers import PIPELINE_PYTHON, local_connection_env, tiny_request, wait_terminal

CONN_ID = "kfp_page"
ALLOWED_DAG, DENIED_DAG = "daily_prediction", "other_team_dag"


class PerDagAuthManager:
    """Answers like a per-DAG auth manager: reads of ``dags`` (ALLOWED_DAG), logs if asked."""

    def __init__(self, *, logs: bool = True) -> None:
        self.logs = logs
        self.dags = {ALLOWED_DAG}
        self.calls: list[tuple[str, str | None, str]] = []

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        dag_id = details.id if details else None
        self.calls.append((method, dag_id, access_entity.name))
        if access_entity.name == "TASK_LOGS" and not self.logs:
            return False
        return method == "GET" and dag_id in self.dags

    def get_url_login(self, **kwargs) -> str:
        return f"/auth/login?next={kwargs.get('next_url', '')}"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("page-runs")


@pytest.fixture(scope="module")
def backend(state_dir) -> LocalBackend:
    return LocalBackend(state_dir, python=str(PIPELINE_PYTHON))


def _labelled(name: str, dag_id: str, **parameters):
    import dataclasses

    request = tiny_request(name, **parameters)
    return dataclasses.replace(
        request, labels={"airflow-dag-id": dag_id, "airflow-task-id": "predict"}
    )


@pytest.fixture(scope="module")
def runs(backend):
    """One succeeded and one failed run of ALLOWED_DAG, one succeeded run of DENIED_DAG."""
    submitted = {
        "ok": backend.submit(_labelled("page-ok", ALLOWED_DAG, message="hi", repeat="2")),
        "failed": backend.submit(_labelled("page-failed", ALLOWED_DAG, fail=True)),
        "denied": backend.submit(_labelled("page-denied", DENIED_DAG)),
    }
    return {key: wait_terminal(backend, s.run_id) for key, s in submitted.items()}


@pytest.fixture
def auth(monkeypatch):
    from airflow.api_fastapi import app as airflow_app

    manager = PerDagAuthManager()
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", manager)
    return manager


@contextlib.contextmanager
def _page_client(root_path: str = "") -> Iterator[TestClient]:
    """The page mounted as the api-server mounts it: ``airflow.api_fastapi.app.create_app``
    builds its app with ``root_path`` from ``[api] base_url`` (``/airflow`` for
    ``https://h/airflow/``) and ``init_plugins`` mounts the plugin's app at its url_prefix."""
    from airflow.api_fastapi.core_api.security import get_user

    from kfp_bridge.ui.run_page import create_app

    page = create_app()
    page.dependency_overrides[get_user] = lambda: object()
    root = FastAPI(root_path=root_path)
    root.mount("/kfp-bridge", page)
    with TestClient(root) as test_client:
        test_client.page = page
        yield test_client


@pytest.fixture
def client(state_dir, monkeypatch, auth):
    for key, value in local_connection_env(state_dir, CONN_ID).items():
        monkeypatch.setenv(key, value)
    with _page_client() as test_client:
        yield test_client


def _get(client, path: str, **params):
    return client.get(f"/kfp-bridge/local-runs/{path}", params={"conn_id": CONN_ID, **params})


def test_succeeded_run_page_shows_state_steps_parameters_and_log(client, runs):
    run = runs["ok"]
    assert run.state is RunState.SUCCEEDED
    response = _get(client, run.run_id)
    assert response.status_code == 200, response.text
    html = response.text
    assert 'id="run-name">page-ok<' in html
    assert 'id="run-state" class="state SUCCEEDED"' in html
    assert "DAG <code>daily_prediction</code>, task <code>predict</code>" in html
    assert "<th>message</th><td><code>hi</code>" in html  # parameters as submitted
    # the tiny pipeline's two steps, both finished (kfp.local's own progress lines)
    for step in ("greet", "shout"):
        assert f'<td><code>{step}</code></td>\n  <td><span class="state SUCCEEDED">' in html
    assert "SHOUT: HI HI" in html  # the log tail, from runner.log
    assert "UTC" in html  # times in Airflow's [core] default_timezone (UTC unset)


def test_failed_run_page_shows_the_component_error_and_the_failed_step(client, runs):
    response = _get(client, runs["failed"].run_id)
    assert response.status_code == 200
    assert 'id="run-state" class="state FAILED"' in response.text
    assert "greet was asked to fail" in response.text
    assert '<td><code>greet</code></td>\n  <td><span class="state FAILED">' in response.text


def test_list_shows_recent_runs_the_user_may_read(client, runs):
    response = _get(client, "")
    assert response.status_code == 200
    assert runs["ok"].run_id in response.text and runs["failed"].run_id in response.text
    assert runs["denied"].run_id not in response.text  # another DAG: not for this user


def test_run_of_a_dag_the_user_may_not_read_answers_like_a_missing_run(
    client, backend, runs, auth, monkeypatch
):
    # A copy of the run of DENIED_DAG under a fresh id: asked while it exists (of a DAG
    # the user may not read), then once it is gone; the answers must not tell which.
    run_id = str(uuid.uuid4())
    copy = backend.state_dir / run_id
    shutil.copytree(backend.state_dir / runs["denied"].run_id, copy)
    read = []
    real_read_run = local_runs.read_run
    monkeypatch.setattr(
        local_runs, "read_run", lambda b, rid: read.append(rid) or real_read_run(b, rid)
    )
    try:
        denied = _get(client, run_id)
    finally:
        shutil.rmtree(copy)
    missing = _get(client, run_id)
    assert ("GET", DENIED_DAG, "RUN") in auth.calls
    assert read == []  # refused before its state, log and outputs were read
    assert denied.status_code == missing.status_code == 404
    assert denied.content == missing.content
    assert denied.headers == missing.headers
    for hidden in (DENIED_DAG, "page-denied", str(backend.state_dir)):
        assert hidden not in denied.text
    # another valid run id that never existed reads the same, but for the id itself
    never = str(uuid.uuid4())
    assert _get(client, never).content == missing.content.replace(run_id.encode(), never.encode())


def test_log_tail_needs_the_task_logs_permission(client, runs, auth):
    auth.logs = False
    response = _get(client, runs["ok"].run_id)
    assert response.status_code == 200
    assert "SHOUT: HI HI" not in response.text
    assert "may not read this DAG's task logs" in response.text


def test_anonymous_request_is_refused_with_a_login_link(client, runs):
    from airflow.api_fastapi.core_api.security import get_user

    client.page.dependency_overrides.pop(get_user)  # Airflow's real dependency: no token
    for path in (runs["ok"].run_id, ""):
        response = _get(client, path)
        assert response.status_code == 401
        assert "page-ok" not in response.text and "SHOUT" not in response.text  # no run data
        assert 'id="login" href="/auth/login?next=' in response.text


def _hrefs(html: str) -> list[str]:
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name == "href")

    Links().feed(html)
    return found


@pytest.mark.parametrize("root_path", ["", "/airflow", "/team-a/airflow"])
def test_every_link_keeps_the_api_servers_path_prefix(
    state_dir, monkeypatch, auth, runs, root_path
):
    """Airflow under ``[api] base_url = https://h/airflow/``: every link of the list and of
    a run page starts with ``/airflow/kfp-bridge/local-runs/`` and opens a page."""
    for key, value in local_connection_env(state_dir, CONN_ID).items():
        monkeypatch.setenv(key, value)
    prefix = f"{root_path}/kfp-bridge/local-runs/"
    with _page_client(root_path) as client:
        listing = client.get(prefix, params={"conn_id": CONN_ID})
        assert listing.status_code == 200, listing.text
        run_page = client.get(prefix + runs["ok"].run_id, params={"conn_id": CONN_ID})
        assert run_page.status_code == 200, run_page.text
        list_links, run_links = _hrefs(listing.text), _hrefs(run_page.text)
        assert f"{prefix}{runs['ok'].run_id}?conn_id={CONN_ID}" in list_links
        assert run_links == [f"{prefix}?conn_id={CONN_ID}"]  # "All local runs"
        for href in list_links + run_links:
            assert href.startswith(prefix), href
            assert client.get(href).status_code == 200, href


def _no_dag_user_answer(client, conn_id: str):
    response = client.get("/kfp-bridge/local-runs/", params={"conn_id": conn_id})
    return response.status_code, response.headers, response.content


@pytest.mark.parametrize(
    "connection",
    [
        {"conn_type": "kfp", "host": "ml-pipeline.kubeflow", "extra": {"backend": "kfp"}},
        {"conn_type": "kfp", "extra": {"backend": "s3cr3t-extra-value"}},  # invalid: hook echoes it
        {"conn_type": "kfp", "extra": "not-a-json-object"},
        {"conn_type": "postgres", "host": "db.internal", "extra": {"sslmode": "require"}},
    ],
)
def test_unknown_and_non_local_connections_answer_alike(
    client, auth, monkeypatch, caplog, connection
):
    """A signed-in user allowed no DAG learns nothing about connections: the page answers
    for a connection that exists but is no local-backend kfp connection exactly as for one
    that does not exist (the reason goes to the api-server's log)."""
    auth.dags = set()
    conn_id = "kfp_probe"
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    unknown = _no_dag_user_answer(client, conn_id)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    caplog.clear()
    with caplog.at_level("INFO", logger="kfp_bridge.ui.run_page"):
        existing = _no_dag_user_answer(client, conn_id)
    assert existing == unknown
    assert unknown[0] == 404
    body = unknown[2].decode()
    assert f"no local runs for connection &#39;{conn_id}&#39;" in body
    for hidden in ("backend", "defined", "s3cr3t", "ml-pipeline", "db.internal", "extra"):
        assert hidden not in body
    assert conn_id in caplog.text  # the detail is in the server's log, not the answer


@pytest.mark.parametrize(
    "crafted",
    [
        "..",
        "%2e%2e",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "%2Fetc",
        "00000000-0000-0000-0000-000000000000%2F..%2F..",
        "not-a-run",
    ],
)
def test_crafted_run_ids_are_refused(client, crafted):
    response = client.get(f"/kfp-bridge/local-runs/{crafted}?conn_id={CONN_ID}")
    assert response.status_code == 404, response.text
    assert "root:" not in response.text


def test_symlinked_run_folder_outside_the_runs_folder_is_refused(client, state_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = "top-secret-outside-the-runs-folder"
    (outside / "request.json").write_text(json.dumps({"display_name": secret}))
    (outside / "state.json").write_text(json.dumps({"state": "SUCCEEDED"}))
    (outside / "runner.log").write_text(secret)
    run_id = str(uuid.uuid4())
    (state_dir / run_id).symlink_to(outside, target_is_directory=True)
    try:
        response = _get(client, run_id)
        assert response.status_code == 404
        assert secret not in response.text
        assert secret not in _get(client, "").text
    finally:
        (state_dir / run_id).unlink()


def test_symlinked_files_inside_a_run_are_not_read(client, backend, runs, tmp_path):
    # A copy of a real run whose log, state and outputs are symlinks to files elsewhere.
    source = backend.state_dir / runs["ok"].run_id
    run_id = str(uuid.uuid4())
    copy = backend.state_dir / run_id
    shutil.copytree(source, copy, symlinks=True)
    request = json.loads((copy / "request.json").read_text())
    (copy / "request.json").write_text(json.dumps({**request, "run_id": run_id}))
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("top-secret-log-line")
    (copy / "runner.log").unlink()
    (copy / "runner.log").symlink_to(secret_file)
    outputs_elsewhere = tmp_path / "outputs"
    shutil.move(copy / "outputs", outputs_elsewhere)
    (copy / "outputs").symlink_to(outputs_elsewhere, target_is_directory=True)
    try:
        response = _get(client, run_id)
        assert response.status_code == 200
        assert "top-secret-log-line" not in response.text
        view = local_runs.read_run(backend, run_id)
        assert view.log_tail == "" and all(not s.outputs for s in view.steps)
    finally:
        shutil.rmtree(copy)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry below ``folder``: a file's bytes, a folder as None."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def test_viewing_a_run_whose_runner_died_writes_nothing_and_kills_nothing(client, state_dir):
    """A page view only reads: the run shows FAILED, yet its state stays on disk as the
    runner left it, no lock file appears, and what is left of its process group lives on
    (settling a dead runner is the waiting task's poll, ``LocalBackend.get_run``)."""
    # A process group whose leader (the "runner") is gone and whose member lives on.
    group = subprocess.Popen(["sh", "-c", "sleep 300 & exit 0"], start_new_session=True)
    group.wait()
    run_id = str(uuid.uuid4())
    run = state_dir / run_id
    run.mkdir()
    labels = {"airflow-dag-id": ALLOWED_DAG, "airflow-task-id": "predict"}
    request = {"run_id": run_id, "display_name": "runner-died", "labels": labels}
    (run / "request.json").write_text(json.dumps(request))
    (run / "state.json").write_text(json.dumps({"state": "RUNNING"}))
    (run / "pid").write_text(json.dumps({"pid": group.pid, "start_time": "1"}))
    (run / "runner.log").write_text("Executing task 'greet'\n")
    try:
        members = procfs.group_members(group.pid)
        assert members, "the group's member did not start"
        before = _snapshot(state_dir)
        page = _get(client, run_id)
        assert page.status_code == 200, page.text
        assert "FAILED" in page.text and "exited without recording a final state" in page.text
        assert _get(client, "").status_code == 200
        assert _snapshot(state_dir) == before
        assert procfs.group_members(group.pid) == members
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)
        shutil.rmtree(run)


@contextlib.contextmanager
def _run_with_outputs(
    backend, runs, pipeline_output: str, steps: dict[str, tuple[dict, dict]]
) -> Iterator[str]:
    """A copy of a real run whose pipeline output and steps' executor outputs are given:
    ``steps``: step name -> (output parameters, Metrics metadata)."""
    run_id = str(uuid.uuid4())
    copy = backend.state_dir / run_id
    shutil.copytree(backend.state_dir / runs["ok"].run_id, copy)
    try:
        (copy / "outputs.json").write_text(json.dumps({"Output": pipeline_output}))
        pipeline_run = next((copy / "outputs").iterdir())
        for step, (parameters, metadata) in steps.items():
            (pipeline_run / step).mkdir(parents=True, exist_ok=True)
            (pipeline_run / step / "executor_output.json").write_text(
                json.dumps(
                    {
                        "parameterValues": parameters,
                        "artifacts": {"metrics": {"artifacts": [{"metadata": metadata}]}},
                    }
                )
            )
        yield run_id
    finally:
        shutil.rmtree(copy)


PARTITION = "/warehouse/predictions/2026-12-01.parquet"


def test_outputs_and_metrics_are_shown_as_the_run_reports_them(client, backend, runs):
    # A copy of a real run with the outputs a predictions pipeline reports: the pipeline
    # output (a file) and each step's logged Metrics; the page names no field of its own.
    steps = {
        "greet": ({"Output": PARTITION}, {"rows_written": 9997.0}),
        "shout": ({"Output": "/warehouse/user_features/2026-12-01.parquet"}, {"rows_written": 1e4}),
    }
    with _run_with_outputs(backend, runs, PARTITION, steps) as run_id:
        view = local_runs.read_run(backend, run_id)
        assert view.outputs == {"Output": PARTITION}
        metrics = {s.name: s.metrics for s in view.steps}
        assert (metrics["greet"], metrics["shout"]) == (
            {"rows_written": 9997},
            {"rows_written": 10000},
        )
        html = _get(client, run_id).text
        assert f"<tr><th>Output</th><td><code>{PARTITION}</code></td></tr>" in html
        assert "<div>rows_written: 9,997</div>" in html


def test_counts_show_as_integers_with_thousands_separators(client, backend, runs):
    # KFP stores every number as a float: a step's Metrics and output parameters
    # arrive as 10000.0; the page shows 10,000 (and a real fraction as it is).
    metadata = {"users_rows": 10000.0, "rows_written": 1234567.0, "auc": 0.8125}
    steps = {"greet": ({"Output": PARTITION, "row_count": 10000.0}, metadata)}
    with _run_with_outputs(backend, runs, PARTITION, steps) as run_id:
        view = local_runs.read_run(backend, run_id)
        greet = next(s for s in view.steps if s.name == "greet")
        assert greet.metrics == {"users_rows": 10000, "rows_written": 1234567, "auc": 0.8125}
        assert all(type(v) is int for k, v in greet.metrics.items() if k != "auc")
        response = _get(client, run_id)
        assert response.status_code == 200, response.text
        html = response.text
        assert "<div>users_rows: 10,000</div>" in html
        assert "<div>rows_written: 1,234,567</div>" in html
        assert "<div>auc: 0.8125</div>" in html
        assert "<div>row_count: <code>10,000</code></div>" in html
        assert "10000.0" not in html and "1234567.0" not in html


def test_log_tail_is_bounded(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    lines = [f"line {i}" for i in range(50_000)]
    (folder / "runner.log").write_text("\n".join(lines))
    tail, truncated = local_runs.log_tail(folder)
    assert truncated
    assert tail.splitlines() == lines[-local_runs.LOG_TAIL_LINES :]


def test_secret_looking_parameters_are_hidden(backend, runs):
    run_id = str(uuid.uuid4())
    copy = backend.state_dir / run_id
    shutil.copytree(backend.state_dir / runs["ok"].run_id, copy)
    try:
        request = json.loads((copy / "request.json").read_text())
        request["parameters"].update(api_key="sk-live-123456", password="hunter2-long")
        (copy / "request.json").write_text(json.dumps(request))
        view = local_runs.read_run(backend, run_id)
        assert view.parameters["api_key"] == "***" and view.parameters["password"] == "***"
        assert view.parameters["message"] == "hi"
    finally:
        shutil.rmtree(copy)


def test_hook_gives_local_runs_the_page_url(state_dir, monkeypatch):
    for key, value in local_connection_env(state_dir, CONN_ID).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/team-a/")
    backend = KubeflowPipelineHook(kfp_conn_id=CONN_ID).get_conn()
    assert backend.run_url("r1") == (
        "https://airflow.example.com/team-a/kfp-bridge/local-runs/r1?conn_id=kfp_page"
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "")  # unset: Airflow's own fallback
    backend = KubeflowPipelineHook(kfp_conn_id=CONN_ID).get_conn()
    assert backend.run_url("r1") == f"{FALLBACK_BASE_URL}kfp-bridge/local-runs/r1?conn_id=kfp_page"
    assert local_run_url("r1", base_url="http://h:1/") == "http://h:1/kfp-bridge/local-runs/r1"


def test_backend_outside_airflow_keeps_the_file_url(state_dir):
    backend = LocalBackend(state_dir, python=str(PIPELINE_PYTHON))
    assert backend.run_url("r1") == (state_dir.resolve() / "r1" / "runner.log").as_uri()
    assert os.path.isabs(backend.run_url("r1").removeprefix("file://"))


def _history(run_id: str) -> list[dict]:
    return [
        {
            "try_number": 1,
            "run_id": "earlier-run",
            "state": "FAILED",
            "start": "2026-12-03T21:00:04Z",
            "end": "2026-12-03T21:05:00Z",
            "resumed": False,
            "url": None,
            "failed_tasks": ["shout"],
        },
        {
            "try_number": 2,
            "run_id": run_id,
            "state": "SUCCEEDED",
            "start": "2026-12-03T21:06:00Z",
            "end": None,
            "resumed": True,
            "url": f"http://airflow/kfp-bridge/local-runs/{run_id}",
            "failed_tasks": [],
        },
    ]


def test_try_history_is_read_from_the_task_state_store_table(runs):
    """The query the page makes, against the table Airflow's model defines."""
    import airflow.models.dagrun  # noqa: F401  (the table its foreign key names)
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from kfp_bridge.try_history import HISTORY_KEY
    from kfp_bridge.ui.run_page import stored_history

    run_id = runs["ok"].run_id
    engine = create_engine("sqlite://")
    TaskStateStoreModel.__table__.create(engine)  # SQLite: dag_run need not exist
    with Session(engine) as session:
        for i, (task_id, key, value) in enumerate(
            [
                ("predict", HISTORY_KEY, _history("another-run")),  # another DAG run
                ("predict", "kfp_run_id", run_id),  # another key naming the run
                ("predict", HISTORY_KEY, _history(run_id)),
            ]
        ):
            session.add(
                TaskStateStoreModel(
                    dag_run_id=i + 1, task_id=task_id, map_index=-1, key=key,
                    dag_id=ALLOWED_DAG, run_id=f"manual__{i}", value=json.dumps(value),
                )
            )  # fmt: skip
        session.commit()

        assert stored_history(session, ALLOWED_DAG, "predict", run_id) == _history(run_id)
        assert stored_history(session, ALLOWED_DAG, "other_task", run_id) == []
        assert stored_history(session, ALLOWED_DAG, "predict", "no-such-run") == []


def test_run_page_lists_the_tasks_tries(client, runs, monkeypatch):
    from kfp_bridge.ui import run_page

    run_id = runs["ok"].run_id
    asked = []
    monkeypatch.setattr(
        run_page,
        "stored_history",
        lambda session, dag_id, task_id, rid: asked.append((dag_id, task_id, rid)) or _history(rid),
    )
    monkeypatch.setattr("airflow.utils.session.create_session", _no_session)
    html = _get(client, run_id).text
    assert asked == [(ALLOWED_DAG, "predict", run_id)]
    assert '<table id="tries">' in html
    assert "FAILED</span> at step shout" in html
    assert '<tr class="this-run">\n  <td>2</td>\n  <td>resumed <a href=' in html
    assert "<td>running</td>" in html


def test_run_page_without_a_readable_history_has_no_tries(client, runs, monkeypatch):
    def broken():
        raise RuntimeError("no metadata database here")

    monkeypatch.setattr("airflow.utils.session.create_session", broken)
    response = _get(client, runs["ok"].run_id)
    assert response.status_code == 200 and 'id="tries"' not in response.text


class _no_session:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
