"""A stand-in KFP API server (REST API v2beta1) on 127.0.0.1 for tests and benchmarks.

It speaks the JSON the real ``ml-pipeline`` API server sends through its
grpc-gateway: snake_case field names, every field present, run states as plain
strings, errors as ``{"error", "code", "message", "details"}`` with the gRPC
code. Only what the bridge uses is implemented: healthz, experiments
(create/get/list), runs (create/get/list/terminate), and pipeline versions
registered through the control API.

Runs move PENDING -> RUNNING -> outcome on a :class:`Schedule` counted in polls
(``GET /runs/{id}``) or in seconds since creation. Faults are injected per
request: HTTP status bursts (500/503/401/...), slow responses, dropped
connections; runs can be deleted (404 afterwards) or forced into any state.

Two ways to use it:

* in-process: ``with KfpApiStandIn() as server: ... server.url ...``;
* separate process: ``python -m tests.standin.kfp_api_server --port 0`` prints
  ``KFP_STANDIN_URL=http://127.0.0.1:PORT`` on its first stdout line; control it
  with :class:`StandInControl` (HTTP calls to ``/_standin/...`` on the same port).

Both expose the same control methods (``set_schedule``, ``inject``,
``set_run_state``, ``delete_run``, ``require_token``, ``runs``, ``requests``,
``reset``), so a test can be written once against either.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
CONTROL = "/_standin"
EPOCH = "1970-01-01T00:00:00Z"  # what the real server sends for an unset timestamp

# gRPC status codes as the grpc-gateway puts them in error bodies.
GRPC_CODE = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    409: 6,  # ALREADY_EXISTS
    500: 13,  # INTERNAL
    502: 14,
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
ACTIVE_STATES = {"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED"}
TERMINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
ALL_STATES = ACTIVE_STATES | TERMINAL_STATES | {"CANCELING"}
FILTER_OPERATIONS = {
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Schedule:
    """How a new run progresses.

    ``unit="polls"``: the run is PENDING for the first ``pending`` GETs of it,
    RUNNING for the next ``running`` GETs, then ``outcome``. ``unit="seconds"``:
    the same thresholds in seconds since creation (for many concurrent runs).
    ``error`` is the run's error message when the outcome is FAILED.
    A terminated run is CANCELING for ``canceling`` more polls/seconds, then CANCELED.
    """

    pending: float = 1
    running: float = 1
    outcome: str = "SUCCEEDED"
    error: str | None = None
    unit: str = "polls"
    canceling: float = 1

    def __post_init__(self) -> None:
        if self.unit not in ("polls", "seconds"):
            raise ValueError(f"unit must be 'polls' or 'seconds', not {self.unit!r}")
        if self.outcome not in ALL_STATES:
            raise ValueError(f"unknown outcome state {self.outcome!r}")
        if self.outcome == "FAILED" and self.error is None:
            self.error = "The pipeline run failed."


@dataclasses.dataclass
class Fault:
    """One injected fault, consumed by the next ``times`` matching API requests.

    kind: ``status`` (answer ``status`` with a gRPC-style error body), ``slow``
    (sleep ``delay`` seconds, then answer normally), ``drop`` (close the
    connection without answering). ``method`` / ``path`` (a regex searched in the
    request path) restrict which requests match; ``times=-1`` never runs out.
    """

    kind: str
    times: int = 1
    status: int = 503
    delay: float = 1.0
    method: str | None = None
    path: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("status", "slow", "drop"):
            raise ValueError(f"fault kind must be status, slow or drop, not {self.kind!r}")

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class _Run:
    data: dict[str, Any]
    schedule: Schedule
    namespace: str
    seq: int
    created: float
    polls: int = 0
    forced: str | None = None
    terminated_at: float | None = None  # poll count or time when terminate was called

    @property
    def run_id(self) -> str:
        return self.data["run_id"]


class _State:
    """The server's data and controls; every access holds ``lock``."""

    def __init__(self, *, multi_user: bool, schedule: Schedule | None) -> None:
        self.lock = threading.RLock()
        self.multi_user = multi_user
        self.initial_schedule = schedule or Schedule()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.runs: dict[str, _Run] = {}
            self.experiments: dict[str, dict[str, Any]] = {}
            self.pipeline_versions: dict[tuple[str, str], dict[str, Any]] = {}
            self.faults: list[Fault] = []
            self.name_schedules: dict[str, Schedule] = {}
            self.request_log: list[dict[str, Any]] = []
            self.tokens: set[str] | None = None
            self.oauth_refreshes = 0
            self.oauth_expires_in = 3600
            self.seq = 0
            self.default_schedule = self.initial_schedule

    # -- run progression -------------------------------------------------
    def _progress(self, run: _Run, *, poll: bool) -> None:
        """Bring the run's state up to date; a poll is counted after it is answered."""
        data = run.data
        old = data["state"]
        if run.forced is not None:
            new = run.forced
        else:
            sched = run.schedule
            clock = run.polls if sched.unit == "polls" else time.time() - run.created
            if run.terminated_at is not None:
                now = run.polls if sched.unit == "polls" else time.time()
                new = "CANCELED" if now - run.terminated_at >= sched.canceling else "CANCELING"
            elif clock < sched.pending:
                new = "PENDING"
            elif clock < sched.pending + sched.running:
                new = "RUNNING"
            else:
                new = sched.outcome
        if new != old:
            self._set_state(run, new)
        if poll:
            run.polls += 1

    def _set_state(self, run: _Run, state: str, error: str | None = None) -> None:
        data = run.data
        data["state"] = state
        data["state_history"].append({"update_time": _now_iso(time.time()), "state": state})
        if state in TERMINAL_STATES and data["finished_at"] == EPOCH:
            data["finished_at"] = _now_iso(time.time())
        if state == "FAILED":
            message = error or run.schedule.error or "The pipeline run failed."
            data["error"] = {"code": 2, "message": message, "details": []}
            data["run_details"]["task_details"].append(
                {
                    "run_id": run.run_id,
                    "task_id": uuid.uuid4().hex,
                    "display_name": "failing-task",
                    "state": "FAILED",
                    "error": {"code": 2, "message": message, "details": []},
                }
            )

    # -- API handlers ----------------------------------------------------
    def healthz(self) -> dict[str, Any]:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("display_name") or ""
        if not name:
            raise ApiError(400, "Invalid input error: Experiment display name cannot be empty")
        namespace = body.get("namespace") or ""
        if self.multi_user and not namespace:
            raise ApiError(
                400,
                "Invalid input error: Failed to create an experiment: namespace is required "
                "in multi-user mode",
            )
        if not self.multi_user:
            namespace = ""
        for exp in self.experiments.values():
            if exp["display_name"] == name and exp["namespace"] == namespace:
                raise ApiError(
                    409,
                    f"Already exist error: Failed to create a new experiment. "
                    f"The name {name} already exists. Please specify a new name",
                )
        exp = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": name,
            "description": body.get("description") or "",
            "created_at": _now_iso(time.time()),
            "namespace": namespace,
            "storage_state": "AVAILABLE",
            "last_run_created_at": EPOCH,
        }
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _default_experiment(self, namespace: str) -> dict[str, Any]:
        for exp in self.experiments.values():
            if exp["display_name"] == "Default" and exp["namespace"] == namespace:
                return exp
        return self.create_experiment({"display_name": "Default", "namespace": namespace})

    def list_experiments(self, query: dict[str, str]) -> dict[str, Any]:
        namespace = query.get("namespace", "")
        if self.multi_user and not namespace:
            raise ApiError(
                400,
                "Invalid input error: ListExperiments must filter by namespace in multi-user mode",
            )
        items = [
            e
            for e in self.experiments.values()
            if not self.multi_user or e["namespace"] == namespace
        ]
        return _page(items, query, "experiments", key_fields={"display_name", "namespace"})

    def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        exp = self.experiments.get(experiment_id)
        if exp is None:
            raise ApiError(
                404,
                f"Failed to get experiment: ResourceNotFoundError: "
                f"Experiment {experiment_id} not found",
            )
        return exp

    def create_run(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        name = body.get("display_name") or ""
        if not name:
            raise ApiError(
                400, "Invalid input error: The run name is empty. Please specify a valid name"
            )
        spec = body.get("pipeline_spec")
        ref = body.get("pipeline_version_reference") or {}
        if bool(spec) == bool(ref.get("pipeline_version_id") or ref.get("pipeline_id")):
            raise ApiError(
                400,
                "Invalid input error: Failed to create a run due to invalid pipeline spec. "
                "Either pipeline ID or pipeline spec must be specified",
            )
        if spec:
            root = spec.get("pipeline_spec", spec) if "platform_spec" in spec else spec
            if not isinstance(root, dict) or "pipelineInfo" not in root or "root" not in root:
                raise ApiError(
                    400, "Invalid input error: Failed to create a run: invalid pipeline spec"
                )
        else:
            key = (ref.get("pipeline_id", ""), ref.get("pipeline_version_id", ""))
            if key not in self.pipeline_versions:
                raise ApiError(
                    404,
                    f"Failed to create a run: ResourceNotFoundError: PipelineVersion "
                    f"{key[1]} not found",
                )
        experiment_id = body.get("experiment_id") or query.get("experiment_id") or ""
        if experiment_id:
            exp = self.get_experiment(experiment_id)
        else:
            if self.multi_user:
                raise ApiError(
                    400,
                    "Invalid input error: Failed to create a run: experiment_id is required "
                    "in multi-user mode",
                )
            exp = self._default_experiment("")
        now = time.time()
        self.seq += 1
        run_id = str(uuid.uuid4())
        data = {
            "experiment_id": exp["experiment_id"],
            "run_id": run_id,
            "display_name": name,
            "storage_state": "AVAILABLE",
            "description": body.get("description") or "",
            "pipeline_version_id": "",
            "pipeline_spec": spec or None,
            "pipeline_version_reference": ref or None,
            "runtime_config": {
                "parameters": (body.get("runtime_config") or {}).get("parameters") or {},
                "pipeline_root": (body.get("runtime_config") or {}).get("pipeline_root") or "",
            },
            "service_account": body.get("service_account") or "",
            "created_at": _now_iso(now),
            "scheduled_at": _now_iso(now),
            "finished_at": EPOCH,
            "state": "PENDING",
            "error": None,
            "run_details": {
                "pipeline_context_id": "0",
                "pipeline_run_context_id": "0",
                "task_details": [],
            },
            "recurring_run_id": "",
            "state_history": [{"update_time": _now_iso(now), "state": "PENDING"}],
        }
        schedule = self.name_schedules.get(name, self.default_schedule)
        run = _Run(
            data=data, schedule=schedule, namespace=exp["namespace"], seq=self.seq, created=now
        )
        self.runs[run_id] = run
        exp["last_run_created_at"] = data["created_at"]
        self._progress(run, poll=False)
        return data

    def _run(self, run_id: str) -> _Run:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(
                404,
                f"Failed to get run {run_id}: Failed to get a run {run_id}: "
                f"ResourceNotFoundError: Run {run_id} not found",
            )
        return run

    def get_run(self, run_id: str) -> dict[str, Any]:
        run = self._run(run_id)
        self._progress(run, poll=True)
        return run.data

    def list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        namespace = query.get("namespace", "")
        experiment_id = query.get("experiment_id", "")
        if self.multi_user and not namespace and not experiment_id:
            raise ApiError(
                400,
                "Invalid input error: ListRuns must filter by namespace or experiment "
                "in multi-user mode",
            )
        runs = list(self.runs.values())
        if experiment_id:
            runs = [r for r in runs if r.data["experiment_id"] == experiment_id]
        elif self.multi_user:
            runs = [r for r in runs if r.namespace == namespace]
        for run in runs:
            self._progress(run, poll=False)
        runs.sort(key=lambda r: r.seq)
        return _page(
            [r.data for r in runs],
            query,
            "runs",
            key_fields={"display_name", "state", "experiment_id", "run_id", "created_at"},
        )

    def terminate_run(self, run_id: str) -> dict[str, Any]:
        run = self._run(run_id)
        self._progress(run, poll=False)
        if run.data["state"] not in ACTIVE_STATES:
            raise ApiError(
                400,
                f"Failed to terminate run {run_id}: Failed to terminate a run {run_id}. "
                f"Row not found: InvalidInputError",
            )
        run.forced = None
        run.terminated_at = run.polls if run.schedule.unit == "polls" else time.time()
        self._set_state(run, "CANCELING")
        return {}

    def get_pipeline_version(self, pipeline_id: str, version_id: str) -> dict[str, Any]:
        version = self.pipeline_versions.get((pipeline_id, version_id))
        if version is None:
            raise ApiError(404, f"ResourceNotFoundError: PipelineVersion {version_id} not found")
        return version


def _predicate_value(pred: dict[str, Any]) -> Any:
    for key in (
        "stringValue",
        "string_value",
        "intValue",
        "int_value",
        "longValue",
        "long_value",
        "timestampValue",
        "timestamp_value",
        "boolValue",
        "bool_value",
    ):
        if key in pred:
            return pred[key]
    for key in ("stringValues", "string_values"):
        if key in pred:
            return (pred[key] or {}).get("values", [])
    raise ApiError(400, f"Invalid input error: predicate has no value: {pred}")


def _apply_filter(
    items: list[dict[str, Any]], raw: str, key_fields: set[str]
) -> list[dict[str, Any]]:
    try:
        spec = json.loads(raw)
    except ValueError as err:
        raise ApiError(
            400, f"Invalid input error: Failed to parse valid filter from {raw!r}"
        ) from err
    for pred in spec.get("predicates", []):
        op = pred.get("operation", "EQUALS")
        op = FILTER_OPERATIONS.get(op, op) if isinstance(op, int) else str(op)
        key = pred.get("key", "")
        if key not in key_fields:
            raise ApiError(400, f"Invalid input error: no support for filtering on key {key!r}")
        value = _predicate_value(pred)
        if op == "EQUALS":
            items = [i for i in items if str(i.get(key)) == str(value)]
        elif op == "NOT_EQUALS":
            items = [i for i in items if str(i.get(key)) != str(value)]
        elif op == "IS_SUBSTRING":
            items = [i for i in items if str(value) in str(i.get(key))]
        elif op == "IN":
            items = [i for i in items if i.get(key) in value]
        else:
            raise ApiError(400, f"Invalid input error: unsupported filter operation {op!r}")
    return items


def _page(
    items: list[dict[str, Any]], query: dict[str, str], field: str, key_fields: set[str]
) -> dict[str, Any]:
    """Filter, sort and page like the real list endpoints (opaque next_page_token)."""
    token = query.get("page_token") or ""
    if token:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
        except ValueError as err:
            raise ApiError(400, "Invalid input error: Invalid page token") from err
        for name in ("filter", "sort_by"):
            query.setdefault(name, state.get(name, ""))
        offset = int(state["offset"])
    else:
        offset = 0
    if query.get("filter"):
        items = _apply_filter(items, query["filter"], key_fields)
    sort_by = (query.get("sort_by") or "").strip()
    if sort_by:
        parts = sort_by.split()
        key = {"name": "display_name", "id": "run_id" if field == "runs" else "experiment_id"}.get(
            parts[0], parts[0]
        )
        if key not in key_fields and key != "created_at":
            raise ApiError(400, f"Invalid input error: Invalid sorting field: {parts[0]!r}")
        desc = len(parts) > 1 and parts[1].lower() == "desc"
        # The list arrives in creation order: a stable sort keeps it for ties.
        items = sorted(items, key=lambda i: str(i.get(key, "")))
        if desc:
            items = items[::-1]  # ties newest first
    size = int(query.get("page_size") or DEFAULT_PAGE_SIZE)
    if size <= 0:
        size = DEFAULT_PAGE_SIZE
    size = min(size, MAX_PAGE_SIZE)
    page = items[offset : offset + size]
    next_token = ""
    if offset + size < len(items):
        next_token = base64.urlsafe_b64encode(
            json.dumps(
                {"offset": offset + size, "filter": query.get("filter", ""), "sort_by": sort_by}
            ).encode()
        ).decode()
    return {field: page, "total_size": len(items), "next_page_token": next_token}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing --------------------------------------------------------
    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: int, message: str) -> None:
        code = GRPC_CODE.get(status, 2)
        self._send(
            status,
            {
                "error": message,
                "code": code,
                "message": message,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.Status",
                        "code": code,
                        "message": message,
                    }
                ],
            },
        )

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise ApiError(400, "Invalid input error: request body is not valid JSON") from err

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        state = self.server.state
        try:
            if path == f"{CONTROL}/oauth2/token":
                self._oauth_token(state)
                return
            body = self._body() if method == "POST" else {}
            if path.startswith(CONTROL):
                with state.lock:
                    self._send(200, _control(state, method, path[len(CONTROL) :], body))
                return
            fault = self._take_fault(method, path, query)
            if fault is not None:
                if fault.kind == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault.kind == "slow":
                    time.sleep(fault.delay)
                else:
                    self._send_error(
                        fault.status,
                        fault.message
                        or f"stand-in fault: HTTP {fault.status} {HTTPStatus(fault.status).phrase}",
                    )
                    return
            with state.lock:
                self._check_auth(state)
                status, payload = 200, _route(state, method, path, query, body)
            self._send(status, payload)
        except ApiError as err:
            self._send_error(err.status, err.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _oauth_token(self, state: _State) -> None:
        """A Google-style OAuth2 token endpoint (``token_uri`` of a credentials file).

        Each refresh returns a new token, ``standin-google-token-<n>``, and the
        API accepts it from then on (if tokens are required at all).
        """
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with state.lock:
            state.oauth_refreshes += 1
            token = f"standin-google-token-{state.oauth_refreshes}"
            if state.tokens is not None:
                state.tokens.add(token)
        self._send(
            200,
            {"access_token": token, "expires_in": state.oauth_expires_in, "token_type": "Bearer"},
        )

    def _take_fault(self, method: str, path: str, query: dict[str, str]) -> Fault | None:
        state = self.server.state
        with state.lock:
            auth = self.headers.get("Authorization")
            state.request_log.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "authorization": auth,
                    "time": time.time(),
                }
            )
            for fault in state.faults:
                if fault.matches(method, path):
                    if fault.times > 0:
                        fault.times -= 1
                    if fault.times == 0:
                        state.faults.remove(fault)
                    return fault
        return None

    def _check_auth(self, state: _State) -> None:
        if state.tokens is None:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "Unauthenticated: Jwt is missing")
        if scheme.lower() != "bearer" or token not in state.tokens:
            raise ApiError(401, "Unauthenticated: Jwt verification fails")


_RUN_PATH = re.compile(rf"^{API}/runs/([^/:]+)$")
_TERMINATE_PATH = re.compile(rf"^{API}/runs/([^/:]+):terminate$")
_EXPERIMENT_PATH = re.compile(rf"^{API}/experiments/([^/:]+)$")
_VERSION_PATH = re.compile(rf"^{API}/pipelines/([^/:]+)/versions/([^/:]+)$")


def _route(
    state: _State, method: str, path: str, query: dict[str, str], body: dict[str, Any]
) -> Any:
    if method == "GET" and path == f"{API}/healthz":
        return state.healthz()
    if path == f"{API}/runs":
        if method == "POST":
            return state.create_run(body, query)
        if method == "GET":
            return state.list_runs(query)
    if path == f"{API}/experiments":
        if method == "POST":
            return state.create_experiment(body)
        if method == "GET":
            return state.list_experiments(query)
    if method == "GET" and (m := _RUN_PATH.match(path)):
        return state.get_run(m.group(1))
    if method == "POST" and (m := _TERMINATE_PATH.match(path)):
        return state.terminate_run(m.group(1))
    if method == "GET" and (m := _EXPERIMENT_PATH.match(path)):
        return state.get_experiment(m.group(1))
    if method == "GET" and (m := _VERSION_PATH.match(path)):
        return state.get_pipeline_version(m.group(1), m.group(2))
    raise ApiError(404, f"Not Found: {method} {path}")


def _run_view(run: _Run) -> dict[str, Any]:
    return {**run.data, "polls": run.polls, "namespace": run.namespace}


def _control(state: _State, method: str, path: str, body: dict[str, Any]) -> Any:
    """The admin API behind :class:`StandInControl` (JSON in, JSON out)."""
    if method == "POST" and path == "/reset":
        state.reset()
        return {}
    if method == "POST" and path == "/schedule":
        name = body.pop("display_name", None)
        schedule = Schedule(**body)
        if name:
            state.name_schedules[name] = schedule
        else:
            state.default_schedule = schedule
        return {}
    if method == "POST" and path == "/faults":
        state.faults.append(Fault(**body))
        return {}
    if method == "POST" and path == "/auth":
        tokens = body.get("tokens")
        state.tokens = None if tokens is None else set(tokens)
        return {}
    if method == "POST" and path == "/oauth2":
        state.oauth_expires_in = int(body["expires_in"])
        return {}
    if method == "POST" and path == "/pipeline_versions":
        key = (body["pipeline_id"], body["pipeline_version_id"])
        state.pipeline_versions[key] = {
            "pipeline_id": key[0],
            "pipeline_version_id": key[1],
            "display_name": body.get("display_name") or key[1],
            "pipeline_spec": body.get("pipeline_spec") or {},
        }
        return {}
    if method == "GET" and path == "/runs":
        for run in state.runs.values():
            state._progress(run, poll=False)
        return [_run_view(r) for r in sorted(state.runs.values(), key=lambda r: r.seq)]
    if method == "GET" and path == "/experiments":
        return list(state.experiments.values())
    if method == "GET" and path == "/requests":
        return state.request_log
    if m := re.fullmatch(r"/runs/([^/]+)/state", path):
        run = state._run(m.group(1))
        if body["state"] not in ALL_STATES:
            raise ApiError(400, f"unknown state {body['state']!r}")
        run.forced = body["state"]
        state._set_state(run, body["state"], body.get("error"))
        return _run_view(run)
    if method == "DELETE" and (m := re.fullmatch(r"/runs/([^/]+)", path)):
        state._run(m.group(1))
        del state.runs[m.group(1)]
        return {}
    raise ApiError(404, f"unknown control endpoint {method} {path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Dropped and timed-out connections are expected here; keep stderr quiet."""


class _Controls:
    """Control methods shared by the in-process server and the HTTP client."""

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget runs, experiments, faults, schedules and the token requirement."""
        self._call("POST", "/reset", {})

    def set_schedule(self, display_name: str | None = None, **schedule: Any) -> None:
        """Schedule for new runs (or only for runs with ``display_name``); see :class:`Schedule`."""
        self._call("POST", "/schedule", {**schedule, "display_name": display_name})

    def inject(self, kind: str, times: int = 1, **options: Any) -> None:
        """Add a :class:`Fault` for the next ``times`` matching API requests."""
        self._call("POST", "/faults", {"kind": kind, "times": times, **options})

    def require_token(self, *tokens: str) -> None:
        """Answer 401 unless ``Authorization: Bearer <one of tokens>``; no tokens: no auth."""
        self._call("POST", "/auth", {"tokens": list(tokens) if tokens else None})

    def set_token_lifetime(self, seconds: int) -> None:
        """``expires_in`` of tokens from the OAuth2 endpoint (short: clients refresh each call)."""
        self._call("POST", "/oauth2", {"expires_in": seconds})

    def add_pipeline_version(
        self,
        pipeline_id: str,
        pipeline_version_id: str,
        pipeline_spec: dict[str, Any] | None = None,
    ) -> None:
        self._call(
            "POST",
            "/pipeline_versions",
            {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": pipeline_version_id,
                "pipeline_spec": pipeline_spec,
            },
        )

    def set_run_state(self, run_id: str, state: str, error: str | None = None) -> dict[str, Any]:
        """Force a run into ``state`` (sticks until terminated); ``error`` for FAILED."""
        return self._call("POST", f"/runs/{run_id}/state", {"state": state, "error": error})

    def delete_run(self, run_id: str) -> None:
        """Make the run disappear: later GETs answer 404."""
        self._call("DELETE", f"/runs/{run_id}")

    def runs(self) -> list[dict[str, Any]]:
        """Every run as the API shows it, plus ``polls`` and ``namespace``, oldest first."""
        return self._call("GET", "/runs")

    def experiments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/experiments")

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received: method, path, query, authorization header, time."""
        return self._call("GET", "/requests")


class KfpApiStandIn(_Controls):
    """The stand-in server in a background thread of this process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        multi_user: bool = False,
        schedule: Schedule | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the stand-in only listens on the loopback interface")
        self._address = (host, port)
        self.state = _State(multi_user=multi_user, schedule=schedule)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KfpApiStandIn:
        self._server = _Server(self._address, self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="kfp-api-standin",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KfpApiStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        with self.state.lock:
            return json.loads(json.dumps(_control(self.state, method, path, dict(body or {}))))


class StandInControl(_Controls):
    """Controls a stand-in running in another process, over its ``/_standin`` endpoint."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{CONTROL}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"stand-in control {method} {path} failed: {err.read()!r}") from err


@contextlib.contextmanager
def standin_process(
    *, multi_user: bool = False, cwd: str | Path | None = None, python: str | None = None
) -> Iterator[StandInControl]:
    """Run the stand-in as a separate process (for tests that run a triggerer elsewhere)."""
    root = Path(cwd) if cwd else Path(__file__).resolve().parents[2]
    cmd = [python or sys.executable, "-m", "tests.standin.kfp_api_server", "--port", "0"]
    if multi_user:
        cmd.append("--multi-user")
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("KFP_STANDIN_URL="):
            raise RuntimeError(f"stand-in process did not start (first line {line!r})")
        yield StandInControl(line.strip().split("=", 1)[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def airflow_connection_json(url: str, *, password: str | None = None, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_<ID>`` value (JSON) for a ``kfp`` connection to the stand-in."""
    conn: dict[str, Any] = {"conn_type": "kfp", "host": url, "extra": {"backend": "kfp", **extra}}
    if password is not None:
        conn["password"] = password
    return json.dumps(conn)


def write_google_credentials(url: str, path: str | Path) -> Path:
    """A service-account credentials file whose ``token_uri`` is the stand-in.

    Point ``GOOGLE_APPLICATION_CREDENTIALS`` at it and ``google.auth.default()``
    loads it and refreshes tokens against the stand-in, without any network.
    (The key is generated on the spot and belongs to no Google account.)
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = Path(path)
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "standin-project",
                "private_key_id": "standin-key",
                "private_key": pem,
                "client_email": "standin@standin-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{url.rstrip('/')}{CONTROL}/oauth2/token",
            }
        )
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--multi-user", action="store_true", help="behave like multi-user Kubeflow")
    parser.add_argument("--pending", type=float, default=1)
    parser.add_argument("--running", type=float, default=1)
    parser.add_argument("--unit", choices=("polls", "seconds"), default="polls")
    args = parser.parse_args(argv)
    server = KfpApiStandIn(
        port=args.port,
        multi_user=args.multi_user,
        schedule=Schedule(pending=args.pending, running=args.running, unit=args.unit),
    ).start()
    print(f"KFP_STANDIN_URL={server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
