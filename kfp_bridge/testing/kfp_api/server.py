"""A stand-in KFP API server (``ml-pipeline``, REST API v2beta1) on 127.0.0.1.

It is a claim about kubeflow/pipelines ``backend/`` (read at HEAD of 2026-08 and
at tag 2.5.0): each behaviour below names the upstream file (and function) it
reproduces; paths are relative to ``backend/src/apiserver/`` unless they say
otherwise. The docs page "What was tested for real" (``docs/tested.md``) lists
them. Bodies go through the generated ``kfp_server_api`` models
(:mod:`.wire`), lists through :mod:`.listing`, cron specs through :mod:`.cron`.

Served: healthz; experiments (create/get/list/delete); runs (create/get/list/
terminate/delete) with task details and pod logs
(``/apis/v1alpha1/runs/{run_id}/nodes/{node_id}/log``); pipelines and pipeline
versions (multipart upload, JSON create, list/get/delete); recurring runs
(create/get/list/enable/disable/delete). Three server versions: ``head``
(default), ``2.5.0`` (error bodies also carry ``error``; healthz without
``pipeline_store``) and ``1.8.5`` (KFP 1.x: no ``/apis/v2beta1`` at all).
Single-user by default; ``multi_user=True`` authenticates like multi-user
Kubeflow (identity header or reviewed bearer token, namespaces required).

Deployment profiles (``profile=`` / ``--profile``): ``multi-user-istio`` (multi-user
Kubeflow with Istio in front, expiring service-account tokens: :mod:`.istio`),
``api-server`` (default:
the API server itself, ``ml-pipeline:8888``) and ``ui-proxy`` (the host users are
given: the UI server ``ml-pipeline-ui`` behind the AI Platform Pipelines inverse
proxy or Kubeflow's ``/pipeline`` ingress; kubeflow/pipelines
``frontend/server/app.ts``): ``/apis/v1beta1`` and ``/apis/v2beta1`` are served as
by the API server except healthz (the UI server's ``HealthzStats``), pod logs only
at ``/k8s/pod/logs`` by Argo v2 pod name, every other path Express's HTML 404
("Cannot GET ..."; no index.html fallback since KFP 0.2.4).

Three more profiles put a deployment's own layer around the API server:
``dex`` (Kubeflow's oauth2-proxy + Dex ingress login, :mod:`.dex`), ``iap``
(Google IAP and its ID tokens, :mod:`.iap`) and ``argo-gc`` (a finished run's
workflow and pods are deleted; its pod logs come from the log archive only,
``_State._collect``).

Node ids are Argo's (``<workflow>-<FNV-32a of the node name>``); with
``Schedule(retry_attempts=N)`` each task's executor is an Argo retry node whose attempts
``executor(0)``... are the pods (template ``retry-system-container-impl``), as the v2
compiler and Argo make them for a task with a retry policy.

Runs move PENDING -> RUNNING -> outcome on a :class:`Schedule` counted in polls
(``GET /runs/{id}``) or in seconds since creation. Faults are injected per
request (HTTP status bursts, slow responses, dropped connections); runs can be
deleted (404 afterwards) or forced into any state; task logs can be set or made
unavailable (pods gone).

Two ways to use it:

* in-process: ``with KfpApiStandIn() as server: ... server.url ...``;
* separate process: ``python -m kfp_bridge.testing.kfp_api --port 0`` prints
  ``KFP_STANDIN_URL=http://127.0.0.1:PORT`` on its first stdout line; control it
  with :class:`StandInControl` (HTTP calls to ``/_standin/...`` on the same port).

Both expose the same control methods, so a test can be written once against either.
Imports: the standard library, ``kfp_server_api`` and, for YAML pipeline uploads
only, PyYAML (a dependency of both Airflow and kfp, so present in both environments).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.parser
import email.policy
import html
import json
import re
import secrets
import signal
import socket
import string
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

from kfp_bridge.testing._threaded import ThreadedServer
from kfp_bridge.testing.kfp_api import cron, dex, iap, istio, listing, wire
from kfp_bridge.testing.processes import stop

API = "/apis/v2beta1"
LOG_PATH = re.compile(r"^/apis/v1alpha1/runs/([^/]+)/nodes/([^/]+)/log$")
CONTROL = "/_standin"
EPOCH = "1970-01-01T00:00:00Z"
SERVER_VERSIONS = ("head", "2.5.0", "1.8.5")
PROFILES = ("api-server", "ui-proxy", istio.PROFILE)
# Deployments in front of (or behind) the API server: the ingress login of Kubeflow
# (:mod:`.dex`), Google IAP (:mod:`.iap`), and workflows garbage-collected after they end.
FRONT_PROFILES = ("dex", "iap", "argo-gc")
PROFILES += FRONT_PROFILES
UI_LOG_PATH = "/k8s/pod/logs"
# frontend/server/configs.ts: the UI server's basePath (Kubeflow's ingress route /pipeline)
UI_BASE_PATH = "/pipeline"
HEALTHZ_PATHS = ("/apis/v1beta1/healthz", "/apis/v2beta1/healthz")  # main.go, and app.ts
# Argo templates of a v2 container task's pods (backend/src/v2/compiler/argocompiler/
# container.go: the driver pod and the executor pod "system-container-impl").
POD_TEMPLATES = {"driver": "system-container-driver", "executor": "system-container-impl"}
# With a task retry policy the executor template is "retry-system-container-impl" and carries
# Argo's retryStrategy (container.go addContainerExecutorTemplate, HEAD of 2026-08).
RETRY_POD_TEMPLATE = "retry-system-container-impl"
TOKEN_REVIEW_AUDIENCE = "pipelines.kubeflow.org"  # common/const.go DefaultTokenReviewAudience

# google.golang.org/grpc codes, and grpc-gateway's HTTPStatusFromCode.
GRPC_CODE = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    408: 4,
    409: 6,  # ALREADY_EXISTS
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    501: 12,
    502: 14,
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
# util.NewBadRequestError's code (common/util/error.go), which HTTPStatusFromCode maps to 409
GRPC_ABORTED = 10
# External messages of util.NewXxxError (common/util/error.go), sent in ``details``.
EXTERNAL_MESSAGE = {
    400: "Invalid input error",
    401: "Authentication failure",
    403: "Permission denied",
    404: "Not found",
    409: "Already exist error",
    500: "Internal Server Error",
}
ACTIVE_STATES = {"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED"}
TERMINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
ALL_STATES = ACTIVE_STATES | TERMINAL_STATES | {"CANCELING"}

# model/*.go APIToModelFieldMap: the keys a list may sort and filter on (v2beta1 and v1 names).
_RUN_FIELDS = {
    **{k: k for k in ("run_id", "display_name", "created_at", "finished_at", "description")},
    **{k: k for k in ("scheduled_at", "storage_state", "namespace", "experiment_id", "state")},
    "recurring_run_id": "recurring_run_id",
    "id": "run_id",
    "name": "display_name",
    "status": "state",
}
RUN_LISTING = listing.Listing(_RUN_FIELDS, "run_id", "Run")
EXPERIMENT_LISTING = listing.Listing(
    {
        **{k: k for k in ("experiment_id", "display_name", "created_at", "description")},
        **{k: k for k in ("last_run_created_at", "namespace", "storage_state")},
        "id": "experiment_id",
        "name": "display_name",
    },
    "experiment_id",
    "Experiment",
)
PIPELINE_LISTING = listing.Listing(
    {
        **{k: k for k in ("pipeline_id", "display_name", "created_at", "description")},
        "namespace": "namespace",
        "id": "pipeline_id",
        "name": "name",
    },
    "pipeline_id",
    "Pipeline",
)
VERSION_LISTING = listing.Listing(
    {
        **{k: k for k in ("pipeline_version_id", "display_name", "created_at", "description")},
        "id": "pipeline_version_id",
        "name": "name",
    },
    "pipeline_version_id",
    "PipelineVersion",
)
# backend/api/v2beta1/recurring_run.proto enum DeletePropagationPolicy, in number order.
DELETE_PROPAGATION_POLICIES = (
    "DELETE_PROPAGATION_POLICY_UNSPECIFIED",
    "FOREGROUND",
    "BACKGROUND",
    "ORPHAN",
)
RECURRING_RUN_LISTING = listing.Listing(
    {
        **{k: k for k in ("recurring_run_id", "display_name", "created_at", "updated_at")},
        "description": "description",
        "id": "recurring_run_id",
        "name": "display_name",
    },
    "recurring_run_id",
    "Job",
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Schedule:
    """How a new run progresses.

    ``unit="polls"``: the run is PENDING for the first ``pending`` GETs of it,
    RUNNING for the next ``running`` GETs, then ``outcome``. ``unit="seconds"``:
    the same thresholds in seconds since creation (for many concurrent runs).
    A FAILED outcome fails the task ``failed_task`` (default: the pipeline's first
    task); ``error`` is the last line of that task's pod log (the API itself
    carries no error text, see ``server/api_converter.go`` ``toApiRun``).
    A terminated run is CANCELING for ``canceling`` more polls/seconds, then
    FAILED, as Argo fails a workflow whose ``activeDeadlineSeconds`` was set to 0.
    """

    pending: float = 1
    running: float = 1
    outcome: str = "SUCCEEDED"
    error: str | None = None
    unit: str = "polls"
    canceling: float = 1
    failed_task: str | None = None
    # After ``POST /runs/{id}:retry`` the rerun ends in this state (a transient failure
    # fails once: Schedule(outcome="FAILED", failed_task="predict") then SUCCEEDED).
    retry_outcome: str = "SUCCEEDED"
    # Tasks set with ``set_retry``: their executor is an Argo retry node whose attempts
    # (``executor(0)``, ``executor(1)``, ...) are the pods; every attempt but the last
    # failed. 0: no retry strategy, the executor is the pod (see ``_State._update_tasks``).
    retry_attempts: int = 0

    def __post_init__(self) -> None:
        if self.unit not in ("polls", "seconds"):
            raise ValueError(f"unit must be 'polls' or 'seconds', not {self.unit!r}")
        if self.outcome not in ALL_STATES:
            raise ValueError(f"unknown outcome state {self.outcome!r}")


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


@dataclasses.dataclass
class MultiUser:
    """Multi-user settings (``auth/auth.go`` ``GetAuthenticators``, ``common/config.go``).

    The code's default identity header is ``x-goog-authenticated-user-email`` with
    prefix ``accounts.google.com:`` (``common/const.go``); Kubeflow's multi-user
    manifests set ``kubeflow-userid`` with an empty prefix
    (``manifests/kustomize/base/installs/generic/pipeline-install-config.yaml``),
    which is the stand-in's default. ``tokens`` maps a bearer token to the
    TokenReview answer ``(user, audiences)``; ``access`` maps a user to the
    namespaces a SubjectAccessReview allows (``None``: every namespace).
    """

    user_header: str = "kubeflow-userid"
    user_prefix: str = ""
    tokens: dict[str, tuple[str, list[str]]] = dataclasses.field(default_factory=dict)
    access: dict[str, list[str]] | None = None
    # token -> expiry (epoch seconds) of tokens issued with one (:mod:`.istio`)
    expires: dict[str, float] = dataclasses.field(default_factory=dict)

    def review(self, token: str) -> tuple[str, list[str]] | None:
        """The TokenReview answer; an expired token is not authenticated."""
        if self.expires.get(token, float("inf")) <= time.time():
            return None
        return self.tokens.get(token)


class ApiError(Exception):
    """An error the way the server reports it: HTTP status plus gRPC message."""

    def __init__(
        self, status: int, message: str, external: str | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.external = external or EXTERNAL_MESSAGE.get(status, HTTPStatus(status).phrase)
        self.code = code  # the gRPC code, when not the usual one of ``status`` (GRPC_CODE)


class PlainError(Exception):
    """An error body that is not the gateway's (multipart handlers, log endpoint, Go mux)."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(body.decode("utf-8", "replace"))
        self.status = status
        self.body = body
        self.content_type = content_type


def _upload_error(status: int, message: str, details: str | None = None) -> PlainError:
    """``server/pipeline_upload_server.go`` ``writeErrorToResponse``: v1beta1 ``api.Error`` JSON."""
    body = json.dumps({"error_message": message, "error_details": details or message})
    return PlainError(status, body.encode(), "application/json")


@dataclasses.dataclass
class _Run:
    data: dict[str, Any]
    schedule: Schedule
    namespace: str
    seq: int
    created: float
    workflow: str
    tasks: list[str]  # the pipeline's tasks in dependency order
    task_name: str  # the task that fails on a FAILED outcome
    node_ids: dict[str, str]  # "root" and "<task>/driver|dag|executor" -> Argo node id
    polls: int = 0
    forced: str | None = None
    terminated_at: float | None = None  # poll count or time when terminate was called
    reruns: list[str] = dataclasses.field(default_factory=list)  # tasks rerun by :retry
    # how many times each task's executor pod ran (a task kept by :retry is not rerun)
    executions: dict[str, int] = dataclasses.field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # key -> detail

    @property
    def run_id(self) -> str:
        return self.data["run_id"]


@dataclasses.dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: dict[str, Any]
    raw: bytes = b""


def _argo_pod_name_v2(workflow: str, template: str, node_id: str) -> str:
    """Argo 3.4+ ``POD_NAMES=v2``: ``<workflow>-<template>-<hash>``.

    argoproj/argo-workflows ``workflow/util/pod_name.go`` ``GeneratePodName``: the
    prefix is cut to 253 - 10 - 1 characters; the hash is FNV-32a of the node
    *name*, the same number that ends the node id (``<workflow>-<hash>``,
    ``workflow/controller`` ``NodeID``), so the stand-in takes it from the id.
    """
    prefix = f"{workflow}-{template}"[: 253 - 10 - 1]
    return f"{prefix}-{node_id.rsplit('-', 1)[-1]}"


def _fnv32a(data: bytes, h: int = 0x811C9DC5) -> int:
    """FNV-1a, 32 bits (Go's ``hash/fnv`` ``New32a``), continued from ``h``."""
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _node_id(workflow: str, node_name: str) -> str:
    """argoproj/argo-workflows ``pkg/apis/workflow/v1alpha1/workflow_types.go``
    ``Workflow.NodeID``: ``<workflow>-<FNV-32a of the node name>`` in decimal."""
    return f"{workflow}-{_fnv32a(node_name.encode())}"


def _attempt_keys(run: _Run, task: str) -> list[str]:
    """Node keys of the task's executor attempts (``<task>/executor(N)``), if it retries."""
    return [f"{task}/executor({n})" for n in range(run.schedule.retry_attempts)]


def _pod_templates(run: _Run) -> list[tuple[str, str]]:
    """(node key, Argo template) of every pod node of the run's tasks.

    A retrying executor is an Argo ``Retry`` node without a pod; its attempts are the pods
    (``workflow/controller/operator.go`` ``executeTemplate``).
    """
    out = []
    for t in run.tasks:
        out.append((f"{t}/driver", POD_TEMPLATES["driver"]))
        attempts = _attempt_keys(run, t)
        if attempts:
            out += [(key, RETRY_POD_TEMPLATE) for key in attempts]
        else:
            out.append((f"{t}/executor", POD_TEMPLATES["executor"]))
    return out


def _random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _sanitize(name: str) -> str:
    """A Kubernetes name from a pipeline name, like the v2 compiler's workflow generateName."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "pipeline"


def _spec_root(spec: Any) -> dict[str, Any] | None:
    if isinstance(spec, dict) and "pipeline_spec" in spec:
        spec = spec["pipeline_spec"]
    if isinstance(spec, dict) and "pipelineInfo" in spec and "root" in spec:
        return spec
    return None


def _pipeline_tasks(spec: Any) -> list[str]:
    """The root DAG's tasks in dependency order (``dependentTasks``), ties by name.

    Key order does not survive every client, so the order is computed, not read. The
    v2 compiler turns each root task into Argo DAG tasks with the same dependencies
    (``backend/src/v2/compiler/argocompiler/dag.go``), so Argo runs them in this order.
    """
    root = _spec_root(spec) or {}
    tasks = (root.get("root") or {}).get("dag", {}).get("tasks", {}) or {}
    after = {
        name: set((task or {}).get("dependentTasks") or []) & set(tasks)
        for name, task in tasks.items()
    }
    order: list[str] = []
    while len(order) < len(after):
        ready = sorted(n for n, deps in after.items() if n not in order and deps <= set(order))
        if not ready:  # a cycle (the compiler never makes one): keep the rest by name
            ready = sorted(n for n in after if n not in order)
        order.append(ready[0])
    return order or ["task"]


class _State:
    """The server's data and controls; every access holds ``lock``."""

    def __init__(
        self,
        *,
        multi_user: bool,
        schedule: Schedule | None,
        server_version: str,
        profile: str = "api-server",
    ) -> None:
        if server_version not in SERVER_VERSIONS:
            raise ValueError(f"server_version must be one of {SERVER_VERSIONS}")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}")
        self.profile = profile
        self.lock = threading.RLock()
        # multi-user-istio is multi-user Kubeflow (istio.py)
        self.initial = (multi_user or profile == istio.PROFILE, server_version)
        self.initial_schedule = schedule or Schedule()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.multi_user = self.initial[0]
            self.server_version = self.initial[1]
            self.auth = MultiUser()
            self.runs: dict[str, _Run] = {}
            self.experiments: dict[str, dict[str, Any]] = {}
            self.pipelines: dict[str, dict[str, Any]] = {}
            self.versions: dict[str, dict[str, Any]] = {}
            self.recurring_runs: dict[str, dict[str, Any]] = {}
            self.deleted_recurring_runs: list[dict[str, str]] = []
            self.logs: dict[tuple[str, str], str] = {}
            self.custom_logs: set[tuple[str, str]] = set()
            self.pods_gone: set[str] = set()
            self.faults: list[Fault] = []
            self.name_schedules: dict[str, Schedule] = {}
            self.request_log: list[dict[str, Any]] = []
            self.tokens: set[str] | None = None
            self.oauth_refreshes = 0
            self.oauth_expires_in = 3600
            self.seq = 0
            self.default_schedule = self.initial_schedule
            self.kubelet: dict[str, Any] | None = None  # istio.kubelet_tick
            self.revoker: dict[str, Any] | None = None  # istio.kubelet_tick
            self.dex = dex.DexGate()
            self.iap = iap.IapGate()
            self.log_archive = True  # argo-gc: ARCHIVE_CONFIG_LOG_* set, Argo archiveLogs on
            self.collected: set[str] = set()  # argo-gc: runs whose workflow was deleted
            # dex/iap: the ingress routes to the UI server (Kubeflow's /pipeline), not the API
            self.ui_routes = False
            # ui-proxy: whether the UI server's healthz fetch of the API server works, and the
            # HealthzStats object each of its two healthz routes keeps between requests
            self.api_server_ready = True
            self.ui_healthz_stats: dict[str, dict[str, Any]] = {}

    # -- multi-user ------------------------------------------------------
    def _identity(self, req: _Request) -> str:
        """``resource/resource_manager.go`` ``IsAuthorized``: first authenticator that works."""
        errors = []
        values = req.headers.get_all(self.auth.user_header) or []
        if len(values) == 1 and values[0].startswith(self.auth.user_prefix):
            return values[0][len(self.auth.user_prefix) :]
        # auth/util.go singlePrefixedHeaderFromMetadata
        if not values:
            errors.append("Request header error: there is no user identity header.")
        elif len(values) != 1:
            errors.append(
                f"Request header error: unexpected number of '{self.auth.user_header}' "
                f"headers. Expect 1 got {len(values)}"
            )
        else:
            errors.append(
                f"Header '{self.auth.user_header}' is incorrectly formatted. "
                f"Expected prefix '{self.auth.user_prefix}'"
            )
        # auth/authenticator_token_review.go: Authorization "Bearer <token>", TokenReview.
        bearer = req.headers.get_all("Authorization") or []
        if len(bearer) == 1 and bearer[0].startswith("Bearer "):
            review = self.auth.review(bearer[0][len("Bearer ") :])
            if review is None:
                errors.append(
                    "Authentication failure: Review.Status.Authenticated is false. Error "
                )
            elif TOKEN_REVIEW_AUDIENCE not in review[1]:
                errors.append(
                    f"Authentication failure: Failed to find all of "
                    f"'[{TOKEN_REVIEW_AUDIENCE}]' in audience: {review[1]}"
                )
            else:
                return review[0]
        elif not bearer:
            errors.append("Request header error: there is no user identity header.")
        else:
            errors.append(
                "Header 'Authorization' is incorrectly formatted. Expected prefix 'Bearer '"
            )
        raise ApiError(
            401,
            "Failed to check authorization. User identity is empty in the request header: "
            f"[{', '.join(errors)}]",
            "Failed to check authorization. User identity is empty in the request header",
        )

    def authorize(self, req: _Request, namespace: str, verb: str, resource: str) -> None:
        """``IsAuthorized`` + SubjectAccessReview; a no-op in single-user mode."""
        if not self.multi_user:
            return
        user = self._identity(req)
        allowed = self.auth.access is None or namespace in self.auth.access.get(user, [])
        if not allowed:
            raise ApiError(
                403,
                f"User '{user}' is not authorized with reason:  (request: &ResourceAttributes"
                f"{{Namespace:{namespace},Verb:{verb},Group:pipelines.kubeflow.org,"
                f"Version:v1beta1,Resource:{resource}}})",
                f"User '{user}' is not authorized",
            )

    def namespace_of(self, namespace: str) -> str:
        """``resource_manager.go`` ``ReplaceNamespace``: single-user mode has no namespaces."""
        return namespace if self.multi_user else ""

    # -- run progression -------------------------------------------------
    def _namespace_required(self, namespace: str, message: str) -> None:
        """Multi-user mode refuses an empty namespace with 400 (``message``: the server's text)."""
        if self.multi_user and not namespace:
            raise ApiError(400, message)

    def _progress(self, run: _Run, *, poll: bool) -> None:
        """Bring the run's state up to date; a poll is counted after it is answered."""
        old = run.data["state"]
        if run.forced is not None:
            new = run.forced
        else:
            sched = run.schedule
            clock = run.polls if sched.unit == "polls" else time.time() - run.created
            if run.terminated_at is not None:
                now = run.polls if sched.unit == "polls" else time.time()
                # resource_manager.go ReportWorkflowResource: CANCELING while the workflow
                # is terminating; then Argo's phase Failed maps to FAILED (model/run.go ToV2).
                new = "FAILED" if now - run.terminated_at >= sched.canceling else "CANCELING"
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

    def _set_state(self, run: _Run, state: str) -> None:
        data = run.data
        now = _iso(time.time())
        data["state"] = state
        data["state_history"].append({"update_time": now, "state": state})
        if state in TERMINAL_STATES and data["finished_at"] == EPOCH:
            data["finished_at"] = now
        self._update_tasks(run, state, now)
        if self.profile == "argo-gc" and state in TERMINAL_STATES:
            self._collect(run)

    def _collect(self, run: _Run) -> None:
        """Profile ``argo-gc``: the finished workflow and its pods are deleted.

        The persistence agent reports the finished workflow and then lets it go
        (``backend/src/agent/persistence/main.go`` ``ttlSecondsAfterWorkflowFinish``,
        ``TTL_SECONDS_AFTER_WORKFLOW_FINISH`` in the manifests' persistence agent), and
        Argo's ``podGC`` (``OnWorkflowCompletion``/``OnPodCompletion``) deletes the pods.
        The run, its ``WorkflowRuntimeManifest`` and task details stay in the database,
        so the run API still answers; pod logs come from the log archive only
        (:meth:`read_log`), or from nowhere when no archive is configured.
        """
        self.collected.add(run.run_id)
        self.pods_gone.add(run.run_id)

    def _update_tasks(self, run: _Run, state: str, now: str) -> None:
        """Task details as the persistence agent reports Argo's nodes.

        ``server/report_server.go`` ``reportTasksFromExecution`` and
        ``server/api_converter.go`` ``toModelTasks``: one task per Argo node,
        display name = node display name, children = child node ids, shown as
        ``child_tasks[].pod_name`` by ``toApiPipelineTaskDetail`` (which sets no
        ``error`` and no top-level ``pod_name``). The node tree is the one the v2
        compiler makes for each container task of the pipeline's root DAG
        (``backend/src/v2/compiler/argocompiler/container.go``, ``dag.go``):
        ``<task>-driver`` pod -> ``<task>`` DAG -> ``executor`` pod, the tasks in
        dependency order. Argo creates a DAG task's nodes only once its dependencies
        succeeded, so the tasks after a failed one have no entry. Pod names are the
        node ids (Argo's v1 names); Argo v2 pod names: :func:`_argo_pod_name_v2`.
        """
        if state == "PENDING" or state == "RUNTIME_STATE_UNSPECIFIED":
            return
        # The task running: the first that has not succeeded (a retried run goes on from
        # its failed task). A scheduled failure fails ``task_name``, after the ones before.
        done = [run.nodes.get(f"{t}/dag", {}).get("state") == "SUCCEEDED" for t in run.tasks]
        pivot = done.index(False) if False in done else len(run.tasks) - 1
        if state == "SUCCEEDED":
            pivot = len(run.tasks)
        elif (
            state in ("FAILED", "CANCELED")
            and run.terminated_at is None
            and run.schedule.outcome == state
            and run.task_name in run.tasks
        ):
            pivot = run.tasks.index(run.task_name)
        node_states: dict[str, str] = {"root": state if state in TERMINAL_STATES else "RUNNING"}
        for i, task in enumerate(run.tasks):
            if state == "SKIPPED":
                task_state = "SKIPPED"
            elif i < pivot:
                task_state = "SUCCEEDED"
            elif i > pivot:
                continue  # not started: its dependencies have not succeeded
            elif state in ("RUNNING", "CANCELING", "PAUSED"):
                task_state = "RUNNING"
            else:  # FAILED, CANCELED: this component task failed (or was killed)
                task_state = state
            driver = "SKIPPED" if task_state == "SKIPPED" else "SUCCEEDED"
            node_states |= {f"{task}/driver": driver, f"{task}/dag": task_state}
            node_states[f"{task}/executor"] = task_state
            attempts = _attempt_keys(run, task)
            for n, key in enumerate(attempts):  # the earlier attempts failed, Argo retried
                last = n == len(attempts) - 1
                node_states[key] = task_state if last or task_state == "SKIPPED" else "FAILED"
        names = {"root": run.workflow}
        children = {"root": [f"{t}/driver" for t in run.tasks]}
        for task in run.tasks:
            names |= {f"{task}/driver": f"{task}-driver", f"{task}/dag": task}
            names[f"{task}/executor"] = "executor"
            children |= {f"{task}/driver": [f"{task}/dag"], f"{task}/dag": [f"{task}/executor"]}
            # the retry node lists its attempts (node.Children); each attempt is a task too,
            # displayed as "executor(N)" (the last part of its node name)
            children[f"{task}/executor"] = _attempt_keys(run, task)
            names |= {key: key.rsplit("/", 1)[1] for key in _attempt_keys(run, task)}
        out = []
        for key in run.node_ids:
            if key not in node_states:
                continue
            detail = run.nodes.get(key) or {
                "run_id": run.run_id,
                "task_id": str(uuid.uuid4()),
                "display_name": names[key],
                "create_time": now,
                "start_time": now,
                "end_time": EPOCH,
                "state_history": [],
                "child_tasks": [{"pod_name": run.node_ids[c]} for c in children.get(key, [])],
            }
            run.nodes[key] = detail
            new = node_states[key]
            if detail.get("state") != new:
                # a pod that starts, or ends without having been seen running, ran once more
                ran = new == "RUNNING" or detail.get("state") != "RUNNING"
                if key.endswith("/executor") and ran:  # (a retry node counts once, as before)
                    task = key.rsplit("/", 1)[0]
                    run.executions[task] = run.executions.get(task, 0) + 1
                detail["state"] = new
                detail["state_history"].append({"update_time": now, "state": new})
                if new in TERMINAL_STATES:
                    detail["end_time"] = now
            out.append(detail)
        run.data["run_details"]["task_details"] = out
        self._default_logs(run, state, node_states)

    def _default_logs(self, run: _Run, state: str, node_states: dict[str, str]) -> None:
        """Pod logs the way a KFP v2 launcher writes them (``main`` container)."""
        for key, node_state in node_states.items():
            if key == "root":
                continue
            task, kind = key.rsplit("/", 1)
            if kind == "dag" or (kind == "executor" and _attempt_keys(run, task)):
                continue  # no pod: a DAG node, or a retry node (its attempts are the pods)
            attempt = kind.startswith("executor(")
            if attempt and key != _attempt_keys(run, task)[-1]:
                kind = "earlier attempt"
            elif attempt:
                kind = "executor"
            node = run.node_ids[key]
            if (run.run_id, node) in self.custom_logs:
                continue
            lines = [
                f"I1127 06:00:01.000000      20 launcher_v2.go:96] pod name: {node}",
                f"I1127 06:00:01.000001      20 launcher_v2.go:97] task: {task}",
            ]
            failed = node_state in ("FAILED", "CANCELED")
            if kind == "executor" and failed and run.terminated_at is None:
                error = run.schedule.error or "The pipeline run failed."
                lines += [
                    "Traceback (most recent call last):",
                    '  File "/usr/local/lib/python3.11/site-packages/kfp/dsl/executor_main.py",'
                    " line 109, in <module>",
                    "    executor_main()",
                    error,
                    "F1127 06:00:09.000000      20 main.go:49] failed to execute component: "
                    "exit status 1",
                ]
            elif kind == "executor" and run.terminated_at is not None:
                lines.append("I1127 06:00:05.000000      20 launcher_v2.go:151] running ...")
            elif kind == "executor" and node_state == "SUCCEEDED":
                lines.append("I1127 06:00:09.000000      20 launcher_v2.go:178] succeeded")
            elif kind == "earlier attempt" and failed:
                lines += [
                    f"ConnectionError: attempt {key.rsplit('(', 1)[1].rstrip(')')} "
                    "lost its connection (retried by Argo)",
                    "F1127 06:00:04.000000      20 main.go:49] failed to execute component: "
                    "exit status 1",
                ]
            self.logs[(run.run_id, node)] = "\n".join(lines) + "\n"

    # -- experiments -----------------------------------------------------
    def create_experiment(self, req: _Request, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("display_name") or ""
        namespace = self.namespace_of(body.get("namespace") or "")
        # server/experiment_server.go canAccessExperiment
        self._namespace_required(
            namespace,
            "Failed to create a experiment: Failed to authorize the request: Invalid input "
            "error: An experiment cannot have an empty namespace in multi-user mode",
        )
        self.authorize(req, namespace, "create", "experiments")
        if not name:
            raise ApiError(
                400, "Failed to create a experiment: Invalid input error: Experiment name is empty"
            )
        # storage/experiment_store.go CreateExperiment: AlreadyExists
        _unique(
            self.experiments,
            {"display_name": name, "namespace": namespace},
            f"Failed to create a experiment: Already exist error: Failed to create a new "
            f"experiment. The name {name} already exist. Please specify a new name",
        )
        return self._insert_experiment(name, namespace, body.get("description") or "")

    def _insert_experiment(self, name: str, namespace: str, description: str) -> dict[str, Any]:
        exp = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": name,
            "description": description,
            "created_at": _iso(time.time()),
            "namespace": namespace,
            "storage_state": "AVAILABLE",
            "last_run_created_at": EPOCH,
        }
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _default_experiment(self, namespace: str) -> dict[str, Any]:
        """``GetValidExperimentNamespacePair``: the default experiment, created when missing."""
        for exp in self.experiments.values():
            if exp["display_name"] == "Default" and exp["namespace"] == namespace:
                return exp
        return self._insert_experiment(
            "Default", namespace, "All runs created without an experiment"
        )

    def list_experiments(self, req: _Request) -> dict[str, Any]:
        page_query = dict(req.query)
        namespace = self.namespace_of(req.query.get("namespace", ""))
        result = EXPERIMENT_LISTING.page(
            [e for e in self.experiments.values() if e["namespace"] == namespace],
            page_query,
            "experiments",
        )
        self._namespace_required(
            namespace,
            "List experiments failed: Failed to authorize with API: Invalid input error: "
            "An experiment cannot have an empty namespace in multi-user mode",
        )
        self.authorize(req, namespace, "list", "experiments")
        return result

    def experiment(self, experiment_id: str, what: str = "Failed to fetch experiment") -> dict:
        return _found(self.experiments, experiment_id, "Experiment", what)

    def get_experiment(self, req: _Request, experiment_id: str) -> dict[str, Any]:
        exp = self.experiment(experiment_id)
        self.authorize(req, exp["namespace"], "get", "experiments")
        return exp

    def delete_experiment(self, req: _Request, experiment_id: str) -> dict[str, Any]:
        exp = self.experiment(experiment_id, "Failed to delete experiment")
        self.authorize(req, exp["namespace"], "delete", "experiments")
        del self.experiments[experiment_id]
        return {}

    # -- pipelines ---------------------------------------------------------
    def _pipeline(self, pipeline_id: str, what: str) -> dict[str, Any]:
        return _found(self.pipelines, pipeline_id, "Pipeline", what)

    def _version(self, version_id: str, what: str) -> dict[str, Any]:
        return _found(self.versions, version_id, "PipelineVersion", what)

    def _pipeline_for(
        self, req: _Request, pipeline_id: str, what: str, verb: str
    ) -> dict[str, Any]:
        """The pipeline, once ``req`` may ``verb`` pipelines in its namespace (shared ones: all)."""
        pipeline = self._pipeline(pipeline_id, what)
        if pipeline["namespace"]:
            self.authorize(req, pipeline["namespace"], verb, "pipelines")
        return pipeline

    def _version_for(self, req: _Request, version_id: str, what: str, verb: str) -> dict[str, Any]:
        """The version, once ``req`` may ``verb`` its pipeline's namespace (as above)."""
        version = self._version(version_id, what)
        pipeline = self.pipelines.get(version["pipeline_id"]) or {}
        if pipeline.get("namespace"):
            self.authorize(req, pipeline["namespace"], verb, "pipelines")
        return version

    def _latest_version(self, pipeline_id: str) -> dict[str, Any] | None:
        """``storage/pipeline_store.go`` ``GetLatestPipelineVersion``: newest created, then id."""
        mine = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return max(mine, key=lambda v: (v["created_at"], v["pipeline_version_id"]), default=None)

    def insert_pipeline(
        self, name: str, display_name: str, description: str, namespace: str
    ) -> dict[str, Any]:
        # storage/pipeline_store.go: the name is unique within a namespace ("exists" here)
        return _insert_named(
            self.pipelines,
            "pipeline",
            {"name": name, "display_name": display_name, "description": description},
            unique_in={"namespace": namespace},
            exists="exists",
            namespace=namespace,
        )

    def insert_version(
        self,
        pipeline_id: str,
        name: str,
        display_name: str,
        description: str,
        spec: Any,
        code_source_url: str = "",
        version_id: str | None = None,
    ) -> dict[str, Any]:
        # storage/pipeline_store.go: the name is unique within its pipeline
        version = _insert_named(
            self.versions,
            "pipeline version",
            {"name": name, "display_name": display_name, "description": description},
            unique_in={"pipeline_id": pipeline_id},
            object_id=version_id,
            pipeline_id=pipeline_id,
            code_source_url=code_source_url,
            pipeline_spec=spec,
            _seq=self.seq + 1,
        )
        self.seq = version["_seq"]  # a refused duplicate takes no number
        return version

    def create_pipeline(self, req: _Request, body: dict[str, Any]) -> dict[str, Any]:
        """``server/pipeline_server.go`` ``CreatePipeline`` (``POST /pipelines``, JSON)."""
        name = body.get("name") or body.get("display_name") or ""
        namespace = self.namespace_of(body.get("namespace") or "")
        if not name:
            raise ApiError(
                400,
                "Failed to create a pipeline due to server error: Invalid input error: "
                "name is required",
            )
        if namespace:
            self.authorize(req, namespace, "create", "pipelines")
        return self.insert_pipeline(
            name, body.get("display_name") or "", body.get("description") or "", namespace
        )

    def create_pipeline_and_version(self, req: _Request, body: dict[str, Any]) -> dict[str, Any]:
        """``CreatePipelineAndVersion`` (``POST /pipelines/create``)."""
        pipeline = body.get("pipeline") or {}
        version = body.get("pipeline_version") or {}
        _check_version_source(version)
        created = self.create_pipeline(req, pipeline)
        self.insert_version(
            created["pipeline_id"],
            version.get("name") or version.get("display_name") or created["name"],
            version.get("display_name") or "",
            version.get("description") or "",
            _version_spec(version),
        )
        return created

    def create_pipeline_version(
        self, req: _Request, pipeline_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``CreatePipelineVersion`` (``POST /pipelines/{id}/versions``)."""
        self._pipeline_for(req, pipeline_id, "Failed to create a pipeline version", "create")
        _check_version_source(body)
        name = body.get("name") or body.get("display_name") or ""
        if not name:
            raise ApiError(
                400, "Failed to create a pipeline version: Invalid input error: name is required"
            )
        return self.insert_version(
            pipeline_id,
            name,
            body.get("display_name") or "",
            body.get("description") or "",
            _version_spec(body),
            body.get("code_source_url") or "",
        )

    def list_pipelines(self, req: _Request) -> dict[str, Any]:
        namespace = self.namespace_of(req.query.get("namespace", ""))
        result = PIPELINE_LISTING.page(
            [p for p in self.pipelines.values() if p["namespace"] == namespace],
            dict(req.query),
            "pipelines",
        )
        if namespace:  # shared pipelines (no namespace) are readable by everyone
            self.authorize(req, namespace, "list", "pipelines")
        return result

    def get_pipeline(self, req: _Request, pipeline_id: str) -> dict[str, Any]:
        return self._pipeline_for(req, pipeline_id, "Failed to get a pipeline", "get")

    def delete_pipeline(self, req: _Request, pipeline_id: str) -> dict[str, Any]:
        """``resource_manager.go`` ``DeletePipeline``: refused while versions exist (no cascade)."""
        self._pipeline_for(req, pipeline_id, "Failed to delete pipeline", "delete")
        latest = self._latest_version(pipeline_id)
        if latest is not None:
            if req.query.get("cascade", "").lower() != "true":
                raise ApiError(
                    400,
                    f"Failed to delete pipeline with id {pipeline_id} as it has existing pipeline "
                    f"versions (e.g. {latest['pipeline_version_id']}). Set cascade=true to "
                    "delete all versions",
                )
            for vid in [v for v, d in self.versions.items() if d["pipeline_id"] == pipeline_id]:
                del self.versions[vid]
        del self.pipelines[pipeline_id]
        return {}

    def list_pipeline_versions(self, req: _Request, pipeline_id: str) -> dict[str, Any]:
        self._pipeline_for(req, pipeline_id, "Failed to list pipeline versions", "list")
        return VERSION_LISTING.page(
            [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id],
            dict(req.query),
            "pipeline_versions",
        )

    def get_pipeline_version(
        self, req: _Request, pipeline_id: str, version_id: str
    ) -> dict[str, Any]:
        return self._version_for(req, version_id, "Failed to get a pipeline version", "get")

    def delete_pipeline_version(
        self, req: _Request, pipeline_id: str, version_id: str
    ) -> dict[str, Any]:
        self._version_for(req, version_id, "Failed to delete a pipeline version", "delete")
        del self.versions[version_id]
        return {}

    def resolve_version(self, ref: dict[str, Any], what: str) -> dict[str, Any]:
        """``resource_manager.go`` ``fetchPipelineVersionFromPipelineSpec`` as ``CreateRun``
        wraps it: every lookup failure becomes an **internal error (HTTP 500)**."""

        def failed(detail: str) -> ApiError:
            return ApiError(
                500,
                f"{what}: InternalServerError: Failed to create a run due to error fetching "
                f"manifest: Failed to fetch a template due to error retrieving pipeline version: "
                f"{detail}",
            )

        pipeline_id = ref.get("pipeline_id") or ""
        version_id = ref.get("pipeline_version_id") or ""
        if version_id:
            version = self.versions.get(version_id)
            if version is None:
                raise failed(
                    f"Failed to fetch a pipeline version and its manifest from pipeline "
                    f"version {version_id}: Failed to get a pipeline version with id "
                    f"{version_id}: ResourceNotFoundError: PipelineVersion {version_id} not found"
                )
            if pipeline_id and version["pipeline_id"] != pipeline_id:
                raise failed(
                    f"Invalid input error: Pipeline version {version_id} belongs to "
                    f"pipeline {version['pipeline_id']} (not {pipeline_id})"
                )
            return version
        if pipeline_id not in self.pipelines:
            raise failed(
                f"Failed to fetch a pipeline version and its manifest from pipeline "
                f"{pipeline_id}: Failed to get the latest pipeline version as pipeline was not "
                f"found: ResourceNotFoundError: Pipeline {pipeline_id} not found"
            )
        latest = self._latest_version(pipeline_id)
        if latest is None:
            raise failed(
                f"Failed to fetch a pipeline version and its manifest from pipeline "
                f"{pipeline_id}: Failed to get the latest pipeline version for a pipeline: "
                f"ResourceNotFoundError: PipelineVersion {pipeline_id} not found"
            )
        return latest

    # -- runs --------------------------------------------------------------
    def _experiment_and_namespace(
        self, req: _Request, body: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """``resource_manager.go`` ``GetValidExperimentNamespacePair``."""
        experiment_id = body.get("experiment_id") or ""
        if experiment_id:
            exp = self.experiments.get(experiment_id)
            if exp is None:
                raise ApiError(
                    404,
                    f"{what}: Failed to fetch namespace for experiment {experiment_id}: "
                    f"ResourceNotFoundError: Experiment {experiment_id} not found",
                    f"Experiment {experiment_id} not found",
                )
            return exp
        if self.multi_user:
            raise ApiError(
                400,
                f"{what}: Invalid input error: Experiment id can not be empty in multi-user mode",
            )
        return self._default_experiment("")

    def create_run(self, req: _Request, body: dict[str, Any]) -> dict[str, Any]:
        """``server/run_server.go`` ``createRun`` then ``resource_manager.go`` ``CreateRun``."""
        what = "Failed to create a new run"
        name = _display_name(
            body,
            400,
            f"{what}: Failed to create a run due to invalid name: Invalid input error: "
            "The run name is empty. Please specify a valid name",
        )
        exp = self._experiment_and_namespace(req, body, what)
        self.authorize(req, exp["namespace"], "create", "runs")
        spec = body.get("pipeline_spec")
        ref = body.get("pipeline_version_reference") or {}
        reference = None
        if ref.get("pipeline_version_id") or ref.get("pipeline_id"):
            version = self.resolve_version(ref, what)
            spec_for_tasks = version.get("pipeline_spec")
            reference = {
                "pipeline_id": version["pipeline_id"],
                "pipeline_version_id": version["pipeline_version_id"],
            }
            spec = None
        else:
            if not spec:
                raise ApiError(
                    500,
                    f"{what}: InternalServerError: Failed to create a run due to error fetching "
                    "manifest: Invalid input error: Failed to fetch a template with an empty "
                    "pipeline spec manifest",
                )
            if _spec_root(spec) is None:
                # template/template.go: a manifest that is neither a v1 workflow nor a v2 spec
                raise ApiError(
                    500,
                    f"{what}: InternalServerError: Failed to create a run due to error fetching "
                    "manifest: Failed to fetch a template with an invalid pipeline spec "
                    "manifest: InvalidInputError: unknown template format: pipeline spec is "
                    "invalid",
                )
            spec_for_tasks = spec
        now = time.time()
        self.seq += 1
        run_id = str(uuid.uuid4())
        pipeline_name = (_spec_root(spec_for_tasks) or {}).get("pipelineInfo", {}).get("name", "")
        workflow = f"{_sanitize(pipeline_name)}-{_random_suffix()}"
        runtime = body.get("runtime_config") or {}
        data = {
            "experiment_id": exp["experiment_id"],
            "run_id": run_id,
            "display_name": name,
            "storage_state": "AVAILABLE",
            "description": body.get("description") or "",
            "pipeline_spec": spec,
            "pipeline_version_reference": reference,
            "runtime_config": {
                "parameters": runtime.get("parameters") or {},
                "pipeline_root": runtime.get("pipeline_root") or "",
            },
            "service_account": body.get("service_account") or "",
            "created_at": _iso(now),
            "scheduled_at": _iso(now),
            "finished_at": EPOCH,
            "state": "PENDING",
            "run_details": {"task_details": []},
            "recurring_run_id": body.get("recurring_run_id") or "",
            "state_history": [{"update_time": _iso(now), "state": "PENDING"}],
        }
        schedule = self.name_schedules.get(name, self.default_schedule)
        tasks = _pipeline_tasks(spec_for_tasks)
        if schedule.failed_task and schedule.failed_task not in tasks:
            tasks = [schedule.failed_task]  # a pipeline the schedule does not describe
        task = schedule.failed_task or tasks[0]
        # Argo node ids: <workflow>-<FNV-32a of the node name> (a uint32 in decimal). Node
        # names are the DAG task path (the v2 compiler's entrypoint -> "root" DAG -> task
        # DAG -> "executor", dag.go and container.go); a retry node's attempts are named
        # "<retry node name>(N)" (argo-workflows workflow/controller/operator.go
        # executeTemplate: fmt.Sprintf("%s(%d)", retryNodeName, len(node.Children))).
        node_ids = {"root": workflow}
        for t in tasks:
            names = {
                "driver": f"{workflow}.root.{t}-driver",
                "dag": f"{workflow}.root.{t}",
                "executor": f"{workflow}.root.{t}.executor",
            }
            for n in range(schedule.retry_attempts):
                names[f"executor({n})"] = f"{names['executor']}({n})"
            for kind, node_name in names.items():
                node_ids[f"{t}/{kind}"] = _node_id(workflow, node_name)
        run = _Run(
            data=data,
            schedule=schedule,
            namespace=exp["namespace"],
            seq=self.seq,
            created=now,
            workflow=workflow,
            tasks=tasks,
            task_name=task,
            node_ids=node_ids,
        )
        self.runs[run_id] = run
        exp["last_run_created_at"] = data["created_at"]
        self._progress(run, poll=False)
        return data

    def _run(self, run_id: str, what: str = "Failed to get a run") -> _Run:
        return _found(self.runs, run_id, "Run", f"{what}: Failed to get a run {run_id}")

    def get_run(self, req: _Request, run_id: str) -> dict[str, Any]:
        run = self._run(run_id)  # run_server.go canAccessRun looks the run up first
        self.authorize(req, run.namespace, "get", "runs")
        self._progress(run, poll=True)
        istio.kubelet_tick(self)  # a token file the kubelet rotates (istio.py)
        return run.data

    def list_runs(self, req: _Request) -> dict[str, Any]:
        """``run_server.go`` ``ListRuns``/``listRuns``: by experiment, else by namespace."""
        namespace = self.namespace_of(req.query.get("namespace", ""))
        experiment_id = req.query.get("experiment_id", "")
        runs = list(self.runs.values())
        for run in runs:
            self._progress(run, poll=False)
        if experiment_id:
            exp = self.experiment(
                experiment_id,
                f"Failed to list runs: Failed to list runs due to error fetching namespace for "
                f"experiment {experiment_id}. Try filtering based on namespace",
            )
            namespace = exp["namespace"]
            keep = [r.data for r in runs if r.data["experiment_id"] == experiment_id]
        else:
            keep = [r.data for r in runs if r.namespace == namespace]
        result = RUN_LISTING.page(keep, dict(req.query), "runs")  # list options first
        self._namespace_required(
            namespace,
            "Failed to list runs: Failed to list runs due to authorization error. Check if you "
            "have permission to access namespace : Invalid input error: A run cannot have an "
            "empty namespace in multi-user mode",
        )
        self.authorize(req, namespace, "list", "runs")
        return result

    def terminate_run(self, req: _Request, run_id: str) -> dict[str, Any]:
        """``resource_manager.go`` ``TerminateRun`` + ``storage/run_store.go`` ``TerminateRun``."""
        run = self._run(run_id, "Failed to terminate a run")
        self.authorize(req, run.namespace, "terminate", "runs")
        self._progress(run, poll=False)
        if run.data["state"] not in ACTIVE_STATES:
            # UPDATE ... WHERE State IN (PAUSED, PENDING, RUNNING, UNSPECIFIED): no row -> 400
            raise ApiError(
                400,
                f"Failed to terminate a run: Failed to terminate run {run_id}: Invalid input "
                f"error: Failed to terminate a run {run_id}. Row not found",
            )
        run.forced = None
        run.terminated_at = run.polls if run.schedule.unit == "polls" else time.time()
        # run_store.go TerminateRun sets CANCELING without a state_history entry (a TODO there).
        run.data["state"] = "CANCELING"
        return {}

    def retry_run(self, req: _Request, run_id: str) -> dict[str, Any]:
        """``RetryRun`` (``POST /apis/v2beta1/runs/{run_id}:retry``, ``run.proto``).

        ``server/run_server.go`` ``RetryRun`` authorizes verb ``retry`` on runs, then
        ``resource/resource_manager.go`` ``RetryRun`` (tags 2.5.0, 2.14.0 and HEAD of
        2026-08 alike here): no storage-state check, so an archived run is retried like
        any other. ``common/util/workflow.go`` ``CanRetry`` refuses only a workflow with
        offloaded node status (not modelled); ``GenerateRetryExecution`` refuses a
        workflow that is not Failed/Error with ``util.NewBadRequestError`` (gRPC
        ``Aborted``, ``common/util/error.go``; grpc-gateway's ``HTTPStatusFromCode``:
        HTTP 409), wrapped by ``RetryRun`` ("Failed to retry run <id>") and
        ``run_server.go`` ("Failed to retry a run"). It also keeps Succeeded/Skipped
        nodes as they are (their tasks do not run again), sets failed DAG nodes back to
        Running and drops failed pod nodes (their pods deleted, so they run again under
        the same node id), and the run row goes back to PENDING then the workflow's Running, with
        ``finished_at`` cleared. The tasks that had not started run after the rerun one.
        Recorded for tests: ``reruns`` (tasks rerun) and ``executions`` (pod runs per task).
        """
        run = self._run(run_id, f"Failed to retry run {run_id} due to error fetching the run")
        self.authorize(req, run.namespace, "retry", "runs")
        self._progress(run, poll=False)
        if run.data["state"] != "FAILED":  # a terminated run's workflow is Failed: FAILED here
            # the message is the wrapped internal error, details[] the external one (error.go)
            external = "Workflow must be Failed/Error to retry"
            raise ApiError(
                409,
                f"Failed to retry a run: Failed to retry run {run_id}: BadRequestError: "
                f"{external}: workflow cannot be retried",
                external,
                code=GRPC_ABORTED,
            )
        failed = [
            t
            for t in run.tasks
            if run.nodes.get(f"{t}/dag", {}).get("state") in ("FAILED", "CANCELED")
        ]
        run.reruns.extend(failed)
        if failed:
            run.task_name = failed[0]
        run.schedule = dataclasses.replace(
            run.schedule, pending=0, outcome=run.schedule.retry_outcome
        )
        run.created, run.polls, run.terminated_at, run.forced = time.time(), 0, None, None
        run.data["finished_at"] = EPOCH
        self._progress(run, poll=False)  # RUNNING: state_history grows
        return {}

    def delete_run(self, req: _Request, run_id: str) -> dict[str, Any]:
        run = self._run(run_id, "Failed to delete a run")
        self.authorize(req, run.namespace, "delete", "runs")
        del self.runs[run_id]
        return {}

    def read_log(self, run_id: str, node_id: str) -> bytes:
        """``server/run_log_server.go`` ``ReadRunLogV1`` + ``resource_manager.go`` ``ReadLog``.

        The handler writes HTTP 200 before reading the log, so a failure arrives as
        status 200 with a v1beta1 ``api.Error`` JSON body; there is no authorization
        check on this endpoint.
        """
        run = self.runs.get(run_id)
        if run is None:
            message = (
                f"Failed to read logs for run {run_id} due to run fetching error: Failed to get "
                f"a run {run_id}: ResourceNotFoundError: Run {run_id} not found"
            )
        elif (run_id, node_id) in self.logs and self._archived(run_id):
            # resource_manager.go ReadLog: the pod failed, readRunLogFromArchive reads the
            # node's "main-logs" artifact named in the stored WorkflowRuntimeManifest
            return self.logs[(run_id, node_id)].encode()
        elif run_id in self.pods_gone or (run_id, node_id) not in self.logs:
            message = (
                f"Failed to read logs for run {run_id}: InternalServerError: Failed to read logs "
                f'from pod {node_id} due to error opening log stream: pods "{node_id}" not found'
            )
        else:
            return self.logs[(run_id, node_id)].encode()
        raise PlainError(
            200,
            json.dumps({"error_message": message, "error_details": message}).encode(),
            "text/plain",
        )

    def _archived(self, run_id: str) -> bool:
        """``argo-gc`` with a log archive: a collected run's pod logs are still readable."""
        return self.profile == "argo-gc" and self.log_archive and run_id in self.collected

    def read_pod_log(self, query: dict[str, str]) -> bytes:
        """The UI server's ``GET /k8s/pod/logs?podname=&runid=&podnamespace=``.

        kubeflow/pipelines ``frontend/server/handlers/pod-logs.ts``
        ``getPodLogsHandler``: the log of the pod *named* ``podname`` in
        ``podnamespace`` (from Kubernetes, else the workflow's log archive); a
        missing ``podname`` is HTTP 400, a missing ``podnamespace`` in multi-user mode
        HTTP 422 (HEAD only), a log that cannot be read HTTP 500 with a plain-text
        reason. Pods are named as Argo 3.4+ names them (:func:`_argo_pod_name_v2`), not
        by node id.
        """
        pod = query.get("podname") or ""
        if not pod:
            raise PlainError(400, b"podname argument is required", "text/plain")
        namespace = query.get("podnamespace") or ""
        if not namespace and self.multi_user and self.server_version == "head":
            # HEAD of 2026-08 (not 2.5.0/2.14.0): with authorization on (ENABLE_AUTHZ 'true'
            # in manifests/kustomize/base/installs/multi-user/pipelines-ui/
            # deployment-patch.yaml) the handler wants the namespace it authorizes
            raise PlainError(422, b"podnamespace argument is required", "text/html; charset=utf-8")
        for run in self.runs.values():
            if query.get("runid") and run.run_id != query["runid"]:
                continue
            for key, template in _pod_templates(run):
                node = run.node_ids[key]
                if _argo_pod_name_v2(run.workflow, template, node) != pod:
                    continue
                if namespace and namespace != (run.namespace or "kubeflow"):
                    break
                gone = run.run_id in self.pods_gone and not self._archived(run.run_id)
                if gone or (run.run_id, node) not in self.logs:
                    break
                # argo-gc: the workflow is gone too, so getPodLogsStreamFromWorkflow fails and
                # the archive is read by pod name (ARGO_ARCHIVE_LOGS, pod-logs.ts handler order)
                return self.logs[(run.run_id, node)].encode()
        message = (
            f'Could not get main container logs: Error: pods "{pod}" not found '
            f"in namespace {namespace or 'kubeflow'} and no log archive"
        )
        raise PlainError(500, message.encode(), "text/plain; charset=utf-8")

    def pod_names(self, run_id: str) -> dict[str, str]:
        """Node id -> Argo v2 pod name of the run's pods (for tests)."""
        run = self._run(run_id)
        return {
            run.node_ids[key]: _argo_pod_name_v2(run.workflow, template, run.node_ids[key])
            for key, template in _pod_templates(run)
        }

    # -- recurring runs ----------------------------------------------------
    def create_recurring_run(self, req: _Request, body: dict[str, Any]) -> dict[str, Any]:
        """``server/job_server.go`` ``createJob`` + ``api_converter.go`` ``toModelJob``."""
        what = "Failed to create a recurring run"
        name = _display_name(
            body,
            500,
            f"{what} due to conversion error: InternalServerError: Failed to convert a API "
            "recurring run to its internal representation: Invalid input error: Recurring "
            "run's name cannot be empty",
        )
        max_concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= max_concurrency <= 10:
            raise ApiError(
                400,
                f"{what} due to conversion error: Invalid input error: Max concurrency of a "
                f"recurring run must be at least 1 and at most 10. Received {max_concurrency}",
            )
        trigger = body.get("trigger") or {}
        cron_text = (trigger.get("cron_schedule") or {}).get("cron")
        if trigger.get("cron_schedule") is not None:
            try:
                cron.parse(cron_text or "")
            except cron.CronError as err:
                raise ApiError(
                    400,
                    f"{what} due to conversion error: Invalid input error: Schedule cron is not "
                    f"a supported format(https://godoc.org/github.com/robfig/cron). Error: {err}",
                ) from err
        periodic = trigger.get("periodic_schedule")
        if periodic is not None and int(periodic.get("interval_second") or 0) < 1:
            raise ApiError(
                400,
                f"{what} due to conversion error: Invalid input error: Found invalid period "
                f"schedule interval {periodic.get('interval_second') or 0}. Set at interval to "
                "least 1 second",
            )
        exp = self._experiment_and_namespace(req, body, what)
        self.authorize(req, exp["namespace"], "create", "jobs")
        ref = body.get("pipeline_version_reference") or {}
        spec = body.get("pipeline_spec")
        reference = None
        if ref.get("pipeline_version_id") or ref.get("pipeline_id"):
            version = self.resolve_version(ref, what)
            reference = {
                "pipeline_id": version["pipeline_id"],
                "pipeline_version_id": version["pipeline_version_id"],
            }
            spec = None
        elif _spec_root(spec) is None:
            raise ApiError(
                500,
                f"{what}: InternalServerError: Failed to create a recurring run with an invalid "
                "pipeline spec manifest",
            )
        now = _iso(time.time())
        enabled = body.get("mode") == "ENABLE"  # toModelJobEnabled: MODE_UNSPECIFIED is off
        job = {
            "recurring_run_id": str(uuid.uuid4()),
            "display_name": name,
            "description": body.get("description") or "",
            "pipeline_spec": spec,
            "pipeline_version_reference": reference,
            "runtime_config": body.get("runtime_config") or None,
            "service_account": body.get("service_account") or "",
            "max_concurrency": str(max_concurrency),
            "trigger": trigger,
            "mode": "ENABLE" if enabled else "DISABLE",
            "status": "ENABLED" if enabled else "DISABLED",
            "created_at": now,
            "updated_at": now,
            "no_catchup": bool(body.get("no_catchup")),
            "namespace": exp["namespace"],
            "experiment_id": exp["experiment_id"],
        }
        self.recurring_runs[job["recurring_run_id"]] = job
        return job

    def _recurring_run(self, recurring_run_id: str, what: str) -> dict[str, Any]:
        return _found(self.recurring_runs, recurring_run_id, "Job", what)

    def get_recurring_run(self, req: _Request, recurring_run_id: str) -> dict[str, Any]:
        job = self._recurring_run(recurring_run_id, "Failed to fetch a recurring run")
        self.authorize(req, job["namespace"], "get", "jobs")
        return job

    def list_recurring_runs(self, req: _Request) -> dict[str, Any]:
        namespace = self.namespace_of(req.query.get("namespace", ""))
        experiment_id = req.query.get("experiment_id", "")
        jobs = list(self.recurring_runs.values())
        if experiment_id:
            namespace = self.experiment(experiment_id, "Failed to list recurring runs")["namespace"]
            jobs = [j for j in jobs if j["experiment_id"] == experiment_id]
        else:
            jobs = [j for j in jobs if j["namespace"] == namespace]
        result = RECURRING_RUN_LISTING.page(jobs, dict(req.query), "recurringRuns")
        self._namespace_required(
            namespace,
            "Failed to list recurring runs: Invalid input error: a recurring run cannot have "
            "an empty namespace in multi-user mode",
        )
        self.authorize(req, namespace, "list", "jobs")
        return result

    def set_recurring_run_mode(self, req: _Request, recurring_run_id: str, enable: bool) -> dict:
        """``resource_manager.go`` ``ChangeJobMode``."""
        job = self._recurring_run(
            recurring_run_id, f"Failed to {'enable' if enable else 'disable'} a recurring run"
        )
        self.authorize(req, job["namespace"], "enable" if enable else "disable", "jobs")
        job["mode"] = "ENABLE" if enable else "DISABLE"
        job["status"] = "ENABLED" if enable else "DISABLED"
        job["updated_at"] = _iso(time.time())
        return {}

    def delete_recurring_run(self, req: _Request, recurring_run_id: str) -> dict[str, Any]:
        """``job_server.go`` ``DeleteRecurringRun`` (v2beta1): an optional
        ``propagation_policy`` (``recurring_run.proto`` ``DeletePropagationPolicy``, since
        2.15) that ``resource_manager.go`` ``DeleteJob`` passes on as the ScheduledWorkflow's
        Kubernetes delete propagation (``ORPHAN`` keeps the Argo Workflows it owns). An
        unknown value is a query-parameter parse error of grpc-gateway v2 (400)."""
        policy = req.query.get("propagation_policy", "DELETE_PROPAGATION_POLICY_UNSPECIFIED")
        names = {str(i): name for i, name in enumerate(DELETE_PROPAGATION_POLICIES)}
        policy = names.get(policy, policy)
        if policy not in DELETE_PROPAGATION_POLICIES:
            raise ApiError(
                400, f'parsing field "propagation_policy": {policy!r} is not a valid value'
            )
        job = self._recurring_run(recurring_run_id, "Failed to delete a recurring run")
        self.authorize(req, job["namespace"], "delete", "jobs")
        del self.recurring_runs[recurring_run_id]
        self.deleted_recurring_runs.append(
            {"recurring_run_id": recurring_run_id, "propagation_policy": policy}
        )
        return {}

    # -- uploads -------------------------------------------------------------
    def upload(self, req: _Request, version: bool) -> dict[str, Any]:
        """``server/pipeline_upload_server.go`` ``uploadPipeline`` / ``uploadPipelineVersion``."""
        what = "Failed to create a pipeline version" if version else "Failed to create a pipeline"
        filename, content = _multipart_file(req)
        if content is None:
            raise _upload_error(400, what if version else "Failed to read pipeline from file")
        spec = _read_pipeline_file(filename, content)
        if spec is None:
            raise _upload_error(400, what if version else "Failed to read a pipeline spec file")
        q = req.query
        name = q.get("name") or q.get("display_name") or filename  # buildPipelineName
        if not version:
            namespace = self.namespace_of(q.get("namespace", ""))
            if namespace:
                try:
                    self.authorize(req, namespace, "create", "pipelines")
                except ApiError as err:
                    raise _upload_error(400, what, err.message) from err
            try:
                pipeline = self.insert_pipeline(
                    name, q.get("display_name", ""), q.get("description", ""), namespace
                )
            except ApiError as err:
                raise _upload_error(
                    409, "Failed to create a pipeline and a pipeline version"
                ) from err
            self.insert_version(
                pipeline["pipeline_id"],
                pipeline["name"],
                pipeline["display_name"],
                pipeline["description"],
                spec,
                q.get("code_source_url", ""),
            )
            return pipeline
        pipeline_id = q.get("pipelineid", "")
        pipeline = self.pipelines.get(pipeline_id)
        if not pipeline_id or pipeline is None:
            raise _upload_error(400, what)
        if pipeline["namespace"]:
            try:
                self.authorize(req, pipeline["namespace"], "create", "pipelines")
            except ApiError as err:
                raise _upload_error(400, what, err.message) from err
        try:
            return self.insert_version(
                pipeline_id,
                name,
                q.get("display_name", ""),
                q.get("description", ""),
                spec,
                q.get("code_source_url", ""),
            )
        except ApiError as err:
            raise _upload_error(409, what) from err


def _check_version_source(version: dict[str, Any]) -> None:
    """``pipeline_server.go``: a version needs a pipeline spec or a package URL."""
    if not version.get("pipeline_spec") and not (version.get("package_url") or {}).get(
        "pipeline_url"
    ):
        raise ApiError(
            400,
            "Failed to create a pipeline version: Invalid input error: Pipeline version must have "
            "a pipeline spec or a valid source code's URL",
        )


def _display_name(body: dict[str, Any], status: int, message: str) -> str:
    """The body's ``display_name``; an empty one is refused with the server's status and text."""
    name = body.get("display_name") or ""
    if not name:
        raise ApiError(status, message)
    return name


def _unique(store: dict[str, dict[str, Any]], fields: dict[str, Any], message: str) -> None:
    """409 with the server's ``message`` when a stored object already has these ``fields``."""
    if any(all(item[k] == v for k, v in fields.items()) for item in store.values()):
        raise ApiError(409, message)


def _insert_named(
    store: dict[str, dict[str, Any]],
    kind: str,
    names: dict[str, str],
    *,
    unique_in: dict[str, Any],
    exists: str = "exist",
    object_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``storage/pipeline_store.go``: a pipeline or version whose ``name`` is taken within
    ``unique_in`` is 409 AlreadyExists in the store's words (``exists``: its verb); else
    stored under a new id (``<kind>_id``) with its creation time, the display name
    defaulting to the name."""
    name = names["name"]
    _unique(
        store,
        {"name": name, **unique_in},
        f"Failed to create a {kind}: Already exist error: Failed to create a new {kind}. "
        f"The name {name} already {exists}. Please specify a new name",
    )
    id_key = kind.replace(" ", "_") + "_id"
    stored = {
        id_key: object_id or str(uuid.uuid4()),
        **names,
        "display_name": names["display_name"] or name,
        "created_at": _iso(time.time()),
        **fields,
    }
    store[stored[id_key]] = stored
    return stored


def _found(store: dict[str, Any], key: str, kind: str, what: str) -> Any:
    """``store[key]``, or the server's 404: ``util.NewResourceNotFoundError`` under ``what``."""
    if key not in store:
        raise ApiError(
            404, f"{what}: ResourceNotFoundError: {kind} {key} not found", f"{kind} {key} not found"
        )
    return store[key]


def _version_spec(version: dict[str, Any]) -> Any:
    if version.get("pipeline_spec"):
        return version["pipeline_spec"]
    raise ApiError(
        500,
        "Failed to create a pipeline version: InternalServerError: the stand-in cannot fetch "
        "package_url (no network); send pipeline_spec",
    )


def _multipart_file(req: _Request) -> tuple[str, bytes | None]:
    """``r.FormFile("uploadfile")`` with the standard library's MIME parser."""
    ctype = req.headers.get("Content-Type", "")
    if not ctype.startswith("multipart/form-data"):
        return "", None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + req.raw
    )
    if not message.is_multipart():
        return "", None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_filename() or "", part.get_payload(decode=True) or b""
    return "", None


def _read_pipeline_file(filename: str, content: bytes) -> Any:
    """``server/util.go`` ``ReadPipelineFile``: YAML or JSON by extension (the stand-in
    reads no .zip/.tar.gz); a two-document file (kfp-kubernetes) becomes
    ``{"pipeline_spec", "platform_spec"}`` as ``YamlStringToPipelineSpecStruct`` does."""
    lower = filename.lower()
    try:
        if lower.endswith(".json"):
            docs = [json.loads(content)]
        elif lower.endswith((".yaml", ".yml")):
            import yaml  # PyYAML: in both environments (Airflow and kfp depend on it)

            docs = [d for d in yaml.safe_load_all(content.decode("utf-8")) if d is not None]
        else:
            return None
    except ValueError:
        return None
    except Exception as err:  # yaml.YAMLError
        if type(err).__module__.startswith("yaml"):
            return None
        raise
    if not docs or _spec_root(docs[0]) is None:
        return None
    if len(docs) > 1:
        return {"pipeline_spec": docs[0], "platform_spec": docs[1]}
    return docs[0]


_RUN_PATH = re.compile(rf"^{API}/runs/([^/:]+)$")
_RUN_ACTION = re.compile(rf"^{API}/runs/([^/:]+):(terminate|archive|unarchive|retry)$")
_EXPERIMENT_PATH = re.compile(rf"^{API}/experiments/([^/:]+)$")
_PIPELINE_PATH = re.compile(rf"^{API}/pipelines/([^/:]+)$")
_VERSIONS_PATH = re.compile(rf"^{API}/pipelines/([^/:]+)/versions$")
_VERSION_PATH = re.compile(rf"^{API}/pipelines/([^/:]+)/versions/([^/:]+)$")
_RECURRING_PATH = re.compile(rf"^{API}/recurringruns/([^/:]+)$")
_RECURRING_ACTION = re.compile(rf"^{API}/recurringruns/([^/:]+):(enable|disable)$")


def _route(state: _State, req: _Request) -> tuple[str, Any]:
    """The v2beta1 gateway routes (``backend/api/v2beta1/*.proto`` ``google.api.http``)."""
    m, path, body = req.method, req.path, req.body
    if path == f"{API}/runs":
        if m == "POST":
            return "V2beta1Run", state.create_run(req, body)
        if m == "GET":
            return "V2beta1ListRunsResponse", state.list_runs(req)
    if path == f"{API}/experiments":
        if m == "POST":
            return "V2beta1Experiment", state.create_experiment(req, body)
        if m == "GET":
            return "V2beta1ListExperimentsResponse", state.list_experiments(req)
    if path == f"{API}/pipelines":
        if m == "POST":
            return "V2beta1Pipeline", state.create_pipeline(req, body)
        if m == "GET":
            return "V2beta1ListPipelinesResponse", state.list_pipelines(req)
    if path == f"{API}/pipelines/create" and m == "POST":
        return "V2beta1Pipeline", state.create_pipeline_and_version(req, body)
    if path == f"{API}/recurringruns":
        if m == "POST":
            return "V2beta1RecurringRun", state.create_recurring_run(req, body)
        if m == "GET":
            return "V2beta1ListRecurringRunsResponse", state.list_recurring_runs(req)
    if match := _RUN_PATH.match(path):
        if m == "GET":
            return "V2beta1Run", state.get_run(req, match.group(1))
        if m == "DELETE":
            return "", state.delete_run(req, match.group(1))
    if (match := _RUN_ACTION.match(path)) and m == "POST" and match.group(2) == "terminate":
        return "", state.terminate_run(req, match.group(1))
    if (match := _RUN_ACTION.match(path)) and m == "POST" and match.group(2) == "retry":
        return "", state.retry_run(req, match.group(1))
    if match := _EXPERIMENT_PATH.match(path):
        if m == "GET":
            return "V2beta1Experiment", state.get_experiment(req, match.group(1))
        if m == "DELETE":
            return "", state.delete_experiment(req, match.group(1))
    if match := _PIPELINE_PATH.match(path):
        if m == "GET":
            return "V2beta1Pipeline", state.get_pipeline(req, match.group(1))
        if m == "DELETE":
            return "", state.delete_pipeline(req, match.group(1))
    if match := _VERSIONS_PATH.match(path):
        if m == "POST":
            return "V2beta1PipelineVersion", state.create_pipeline_version(
                req, match.group(1), body
            )
        if m == "GET":
            return "V2beta1ListPipelineVersionsResponse", state.list_pipeline_versions(
                req, match.group(1)
            )
    if match := _VERSION_PATH.match(path):
        if m == "GET":
            return "V2beta1PipelineVersion", state.get_pipeline_version(req, *match.groups())
        if m == "DELETE":
            return "", state.delete_pipeline_version(req, *match.groups())
    if match := _RECURRING_PATH.match(path):
        if m == "GET":
            return "V2beta1RecurringRun", state.get_recurring_run(req, match.group(1))
        if m == "DELETE":
            return "", state.delete_recurring_run(req, match.group(1))
    if (match := _RECURRING_ACTION.match(path)) and m == "POST":
        return "", state.set_recurring_run_mode(req, match.group(1), match.group(2) == "enable")
    # grpc-gateway v2 runtime.ServeMux: no pattern matches -> NotFound (HTTP 404).
    raise ApiError(404, "Not Found", "Not Found")


_REQUEST_MODELS = {
    ("POST", f"{API}/runs"): "V2beta1Run",
    ("POST", f"{API}/experiments"): "V2beta1Experiment",
    ("POST", f"{API}/pipelines"): "V2beta1Pipeline",
    ("POST", f"{API}/pipelines/create"): "V2beta1CreatePipelineAndVersionRequest",
    ("POST", f"{API}/recurringruns"): "V2beta1RecurringRun",
}


def _request_model(method: str, path: str) -> str | None:
    if (method, path) in _REQUEST_MODELS:
        return _REQUEST_MODELS[(method, path)]
    if method == "POST" and _VERSIONS_PATH.match(path):
        return "V2beta1PipelineVersion"
    return None


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """Internal bookkeeping keys (``_seq``) are not part of the API."""
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _response(type_name: str, payload: Any) -> Any:
    """The payload through the response model and out as the server's JSON."""
    if not type_name:
        return {}  # google.protobuf.Empty
    if isinstance(payload, dict):
        payload = {
            k: [_public(i) if isinstance(i, dict) else i for i in v] if isinstance(v, list) else v
            for k, v in _public(payload).items()
        }
    return wire.roundtrip(type_name, payload)


def _run_view(run: _Run) -> dict[str, Any]:
    return {
        **run.data,
        "polls": run.polls,
        "namespace": run.namespace,
        "reruns": run.reruns,
        "executions": dict(run.executions),
    }


def _control(state: _State, method: str, path: str, body: dict[str, Any]) -> Any:
    """The admin API behind :class:`StandInControl` (JSON in, JSON out)."""
    if path.startswith("/tokens"):
        answer = istio.control(state, method, path, body)
        if answer is not None:
            return answer
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
    if method == "POST" and path == "/multi_user":
        state.multi_user = bool(body.get("enabled", True))
        state.auth = MultiUser(
            user_header=body.get("user_header") or "kubeflow-userid",
            user_prefix=body.get("user_prefix") or "",
            tokens={k: (v[0], list(v[1])) for k, v in (body.get("tokens") or {}).items()},
            access=body.get("access"),
        )
        return {}
    if method == "POST" and path == "/api_server_ready":
        state.api_server_ready = bool(body.get("ready", True))
        return {}
    if method == "POST" and path == "/server_version":
        if body["version"] not in SERVER_VERSIONS:
            raise ApiError(400, f"server_version must be one of {SERVER_VERSIONS}")
        state.server_version = body["version"]
        return {}
    if path.startswith(("/dex/", "/iap/")):
        gate, module = (state.dex, dex) if path.startswith("/dex/") else (state.iap, iap)
        try:
            return module.control(gate, method, path[4:], body)
        except LookupError as err:
            raise ApiError(404, str(err)) from err
    if method == "POST" and path == "/ui_routes":
        state.ui_routes = bool(body.get("enabled", True))
        return {}
    if method == "POST" and path == "/log_archive":
        state.log_archive = bool(body.get("enabled", True))
        return {}
    if method == "POST" and path == "/oauth2":
        state.oauth_expires_in = int(body["expires_in"])
        return {}
    if method == "POST" and path == "/pipeline_versions":
        pipeline_id, version_id = body["pipeline_id"], body["pipeline_version_id"]
        if pipeline_id not in state.pipelines:
            pipeline = state.insert_pipeline(pipeline_id, "", "", "")
            state.pipelines[pipeline_id] = {**pipeline, "pipeline_id": pipeline_id}
            del state.pipelines[pipeline["pipeline_id"]]
        version = state.insert_version(
            pipeline_id,
            body.get("display_name") or version_id,
            body.get("display_name") or "",
            "",
            body.get("pipeline_spec") or {},
            version_id=version_id,
        )
        return _public(version)
    if method == "GET" and path == "/runs":
        for run in state.runs.values():
            state._progress(run, poll=False)
        return [_run_view(r) for r in sorted(state.runs.values(), key=lambda r: r.seq)]
    if method == "GET" and path == "/experiments":
        return list(state.experiments.values())
    if method == "GET" and path == "/pipelines":
        return list(state.pipelines.values())
    if method == "GET" and path == "/pipeline_versions":
        return [_public(v) for v in state.versions.values()]
    if method == "GET" and path == "/recurring_runs":
        return list(state.recurring_runs.values())
    if method == "GET" and path == "/deleted_recurring_runs":
        return state.deleted_recurring_runs
    if method == "GET" and path == "/requests":
        return state.request_log
    if m := re.fullmatch(r"/runs/([^/]+)/state", path):
        run = state._run(m.group(1))
        if body["state"] not in ALL_STATES:
            raise ApiError(400, f"unknown state {body['state']!r}")
        run.forced = body["state"]
        if body.get("error") is not None:
            run.schedule = dataclasses.replace(run.schedule, error=body["error"])
        state._set_state(run, body["state"])
        return _run_view(run)
    if m := re.fullmatch(r"/runs/([^/]+)/logs", path):
        run = state._run(m.group(1))
        if method == "DELETE":
            state.pods_gone.add(run.run_id)
            return {}
        task = body["task"]  # "<task>" (its executor pod) or "<task>-driver"
        if task.endswith("-driver") and task[: -len("-driver")] in run.tasks:
            key = f"{task[: -len('-driver')]}/driver"
        else:  # a retrying task's executor pod: its last attempt
            key = [f"{task}/executor", *_attempt_keys(run, task)][-1]
        node = run.node_ids.get(key, task)
        state.logs[(run.run_id, node)] = body["text"]
        state.custom_logs.add((run.run_id, node))
        return {"node_id": node}
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

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- plumbing --------------------------------------------------------
    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send(self, status: int, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_error(self, err: ApiError) -> None:
        """grpc-gateway's error body.

        HEAD (grpc-gateway v2, ``runtime.DefaultHTTPErrorHandler`` with the
        ``CustomMarshaler``): ``{"code", "message", "details"}``, empty fields left
        out. 2.5.0 (grpc-gateway v1.16 ``DefaultHTTPError``): also ``"error"``.
        ``details`` holds the ``google.rpc.Status`` that ``UserError.GRPCStatus``
        attaches (``common/util/error.go``), with the external message.
        """
        code = err.code if err.code is not None else GRPC_CODE.get(err.status, 2)
        body: dict[str, Any] = {}
        if self.server.state.server_version == "2.5.0":
            body["error"] = err.message
        body["code"] = code
        body["message"] = err.message
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.Status",
                "code": code,
                "message": err.external,
            }
        ]
        self._send(err.status, {k: v for k, v in body.items() if v})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, raw: bytes, model: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as err:
            raise ApiError(400, f"proto: syntax error (line 1:1): {err}") from err
        if model is None:
            return data if isinstance(data, dict) else {}
        try:
            return wire.encode(wire.decode(model, data), model)
        except wire.WireError as err:
            raise ApiError(400, str(err)) from err

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        state = self.server.state
        try:
            if path == f"{CONTROL}/oauth2/token":
                self._oauth_token(state)
                return
            raw = self._read_body() if method in ("POST", "PATCH") else b""
            if path.startswith(CONTROL):
                with state.lock:
                    body = json.loads(raw) if raw else {}
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
                        ApiError(
                            fault.status,
                            fault.message
                            or f"stand-in fault: HTTP {fault.status} "
                            f"{HTTPStatus(fault.status).phrase}",
                        )
                    )
                    return
            if state.profile in ("dex", "iap") and self._front(state, method, raw):
                return
            with state.lock:
                if istio.envoy_denies(state.profile, self.headers):
                    raise PlainError(403, istio.DENIAL, "text/plain")
                self._check_proxy_token(state)
                self._serve(state, method, path, query, raw)
        except ApiError as err:
            self._send_error(err)
        except PlainError as err:
            self._send_bytes(err.status, err.body, err.content_type)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _front(self, state: _State, method: str, raw: bytes) -> bool:
        """Profiles ``dex`` and ``iap``: the proxy in front answers, or lets the request by."""
        if state.profile == "dex":
            reply = state.dex.handle(method, self.path, self.headers, raw)
            if reply is None:
                return False
            status, body, content_type, headers = (
                reply.status,
                reply.body,
                reply.content_type,
                reply.headers,
            )
        else:
            denied = state.iap.check(self.headers)
            if denied is None:
                return False
            status, body, content_type, headers = denied
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def _serve(
        self, state: _State, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> None:
        if (state.profile == "ui-proxy" or state.ui_routes) and (
            path == UI_BASE_PATH or path.startswith(f"{UI_BASE_PATH}/")
        ):
            # app.ts getRegisterHandler: every route is served at route and basePath+route;
            # the API proxy under basePath strips it (pathRewrite) before the API server
            path = path[len(UI_BASE_PATH) :] or "/"
        if state.profile == "ui-proxy" or state.ui_routes:
            # frontend/server/app.ts createUIServer (tags 2.5.0 and 2.14.0, identical:
            # lines 283-331; HEAD of 2026-08: lines 372-420): /apis/v1beta1/* and
            # /apis/v2beta1/* (and under basePath) are proxied unchanged to the API server,
            # except the two healthz routes, the UI server's own handler (_ui_healthz);
            # /k8s/pod/logs is the UI server's own handler (2.14.0 lines 199-203). Any
            # other GET (/apis/v1alpha1/.../log included) reaches only the two static
            # handlers (2.14.0 lines 343-344, HEAD 432-433), which find no file and fall
            # through to Express's final handler: 404, text/html, "Cannot GET <originalUrl>"
            # (pillarjs/finalhandler). No index.html fallback: the old app.get('*',
            # indexHtmlHandler) was removed in 0.2.4 (kubeflow/pipelines 842b0cec, #3116).
            if method == "GET" and path == UI_LOG_PATH:
                self._send_bytes(200, state.read_pod_log(query), "text/plain; charset=utf-8")
                return
            if method == "GET" and path in HEALTHZ_PATHS and state.server_version != "1.8.5":
                # registered before the proxy (app.ts "Healthz", 2.5.0/2.14.0 lines 110-126,
                # HEAD 138-156): the UI server answers, not the API server
                self._send(200, self._ui_healthz(state, path))
                return
            if not path.startswith(("/apis/v1beta1/", f"{API}/")):
                page = (
                    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                    "<title>Error</title>\n</head>\n<body>\n"
                    f"<pre>Cannot {html.escape(method)} {html.escape(self.path)}</pre>\n"
                    "</body>\n</html>\n"
                )
                raise PlainError(404, page.encode(), "text/html; charset=utf-8")
        if state.server_version == "1.8.5" and path.startswith(API + "/"):
            # KFP 1.x (backend/src/apiserver/main.go at 1.8.5): no v2beta1 handler is
            # registered, so grpc-gateway v1's ServeMux answers DefaultOtherErrorHandler's
            # http.Error(w, "Not Found", 404): plain text, not JSON.
            raise PlainError(404, b"Not Found\n", "text/plain; charset=utf-8")
        if path in HEALTHZ_PATHS and method == "GET":
            self._send(200, self._healthz(state, path))
            return
        if match := LOG_PATH.match(path):
            body = state.read_log(*match.groups())
            self._send_bytes(200, body, "text/plain")
            return
        req = _Request(method, path, query, self.headers, {}, raw)
        if path in (f"{API}/pipelines/upload", f"{API}/pipelines/upload_version"):
            pipeline_or_version = state.upload(req, version=path.endswith("upload_version"))
            model = (
                "V2beta1PipelineVersion" if path.endswith("upload_version") else "V2beta1Pipeline"
            )
            self._send(200, _response(model, pipeline_or_version))
            return
        if not path.startswith(API + "/"):
            # the top-level gorilla mux (main.go buildHTTPRouter): unknown path -> 404 text
            raise PlainError(404, b"404 page not found\n", "text/plain; charset=utf-8")
        req.body = self._json_body(raw, _request_model(method, path))
        try:
            type_name, payload = _route(state, req)
        except listing.ListError as err:
            raise ApiError(
                400, f"Failed to create list options: Invalid input error: {err}"
            ) from err
        self._send(200, _response(type_name, payload))

    @staticmethod
    def _healthz(state: _State, path: str) -> dict[str, Any]:
        """``main.go``: healthz is served by the top mux, a plain Go struct (not protojson)."""
        body: dict[str, Any] = {
            "commit_sha": "unknown",
            "tag_name": state.server_version if state.server_version != "head" else "unknown",
            "multi_user": state.multi_user,
        }
        if state.server_version == "head" and path.startswith(API):
            body["pipeline_store"] = "database"
        wire.decode(
            "V2beta1GetHealthzResponse",
            {k: v for k, v in body.items() if k in ("multi_user", "pipeline_store")},
        )
        return body

    @classmethod
    def _ui_healthz(cls, state: _State, path: str) -> dict[str, Any]:
        """The UI server's healthz: ``frontend/server/handlers/healthz.ts`` ``HealthzStats``.

        ``getHealthzHandler`` fetches the API server's healthz of the same API version
        (1 s timeout) and copies ``commit_sha``/``tag_name``/``multi_user`` (and, from
        2.14.0, ``pipeline_store``) into ``apiServerCommitHash``/``apiServerTagName``/
        ``apiServerMultiUser`` and ``multi_user`` (``pipelineStore``), with
        ``apiServerReady`` true; when that fetch fails it still answers 200, with
        ``apiServerReady`` false and the fields of its last success (one object per
        route, mutated in place). ``buildDate``/``frontendCommitHash``/``frontendTagName``
        come from the image's files (``getBuildMetadata``; ``frontend/Dockerfile``).
        ``res.json`` leaves undefined fields out.
        """
        tag = state.server_version if state.server_version != "head" else ""
        stats = state.ui_healthz_stats.setdefault(
            path, {"buildDate": "", "frontendCommitHash": "", "frontendTagName": tag}
        )
        if not state.api_server_ready:
            stats["apiServerReady"] = False
            return dict(stats)
        api = cls._healthz(state, path)
        stats["apiServerReady"] = True
        stats["apiServerCommitHash"] = api["commit_sha"]
        stats["apiServerTagName"] = api["tag_name"]
        stats["apiServerMultiUser"] = stats["multi_user"] = api["multi_user"]
        if state.server_version != "2.5.0":  # HealthzStats.pipelineStore: 2.14.0 and later
            if "pipeline_store" in api:
                stats["pipelineStore"] = api["pipeline_store"]
            else:
                stats.pop("pipelineStore", None)  # undefined: left out of the JSON
        return dict(stats)

    def _oauth_token(self, state: _State) -> None:
        """A Google-style OAuth2 token endpoint (``token_uri`` of a credentials file).

        Each refresh returns a new token, ``standin-google-token-<n>``, and the
        proxy accepts it from then on (if tokens are required at all).
        """
        id_token = state.iap.token_response(self._read_body())
        if id_token is not None:  # service_account.IDTokenCredentials: target_audience grant
            self._send(200, id_token)
            return
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
            state.request_log.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "authorization": self.headers.get("Authorization"),
                    "user": self.headers.get(state.auth.user_header),
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

    def _check_proxy_token(self, state: _State) -> None:
        """An authenticating proxy in front of the API (AI Platform Pipelines' inverse
        proxy / IAP, not the API server): without the expected bearer token, 401."""
        if state.tokens is None:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "Unauthenticated: Jwt is missing")
        if scheme.lower() != "bearer" or token not in state.tokens:
            raise ApiError(401, "Unauthenticated: Jwt verification fails")


class _Controls:
    """Control methods shared by the in-process server and the HTTP client."""

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything (runs, pipelines, faults, schedules, auth settings)."""
        self._call("POST", "/reset", {})

    def set_schedule(self, display_name: str | None = None, **schedule: Any) -> None:
        """Schedule for new runs (or only for runs with ``display_name``); see :class:`Schedule`."""
        self._call("POST", "/schedule", {**schedule, "display_name": display_name})

    def inject(self, kind: str, times: int = 1, **options: Any) -> None:
        """Add a :class:`Fault` for the next ``times`` matching API requests."""
        self._call("POST", "/faults", {"kind": kind, "times": times, **options})

    def require_token(self, *tokens: str) -> None:
        """A proxy in front answers 401 unless ``Authorization: Bearer <one of tokens>``."""
        self._call("POST", "/auth", {"tokens": list(tokens) if tokens else None})

    def set_multi_user(
        self,
        enabled: bool = True,
        *,
        user_header: str = "kubeflow-userid",
        user_prefix: str = "",
        tokens: dict[str, tuple[str, list[str]]] | None = None,
        access: dict[str, list[str]] | None = None,
    ) -> None:
        """Multi-user mode (see :class:`MultiUser`): identity header, reviewed tokens, access."""
        self._call(
            "POST",
            "/multi_user",
            {
                "enabled": enabled,
                "user_header": user_header,
                "user_prefix": user_prefix,
                "tokens": {k: list(v) for k, v in (tokens or {}).items()},
                "access": access,
            },
        )

    def issue_token(
        self,
        user: str,
        audiences: tuple[str, ...] = (TOKEN_REVIEW_AUDIENCE,),
        lifetime: float = 3600,
    ) -> str:
        """A service-account token the TokenReview accepts for ``lifetime`` seconds."""
        body = {"user": user, "audiences": list(audiences), "lifetime": lifetime}
        return self._call("POST", "/tokens", body)["token"]

    def register_token(
        self, token: str, user: str, audiences: list[str], expires_at: float
    ) -> None:
        """A token minted elsewhere (the Kubernetes stand-in's TokenRequest) is reviewable."""
        body = {"token": token, "user": user, "audiences": audiences, "expires_at": expires_at}
        self._call("POST", "/tokens/register", body)

    def rotate_token_file(self, path: str | Path, user: str, every_polls: int = 2) -> None:
        """Play the kubelet for a projected token file: write a token for ``user`` now, and
        after every ``every_polls`` run polls write its successor and expire it (istio.py)."""
        body = {"path": str(path), "user": user, "every_polls": every_polls}
        self._call("POST", "/tokens/kubelet", body)

    def revoke_tokens_every(self, every_polls: int) -> None:
        """Revoke every token issued so far after each ``every_polls`` run polls (istio.py)."""
        self._call("POST", "/tokens/revoke_every", {"every_polls": every_polls})

    def revocation_stats(self) -> dict[str, Any]:
        """``revoke_tokens_every``'s ``polls`` seen and ``revocations`` made."""
        return self._call("GET", "/tokens/revoke_every")

    def kubelet_stats(self) -> dict[str, Any]:
        """``rotate_token_file``'s ``polls`` seen and ``rotations`` made."""
        return self._call("GET", "/tokens/kubelet")

    def expire_tokens(self, token: str | None = None) -> None:
        """``token`` (default: every issued token) has expired: its review fails (401)."""
        self._call("POST", "/tokens/expire", {"token": token})

    def set_server_version(self, version: str) -> None:
        """``head``, ``2.5.0`` or ``1.8.5`` (KFP 1.x: no v2beta1 API)."""
        self._call("POST", "/server_version", {"version": version})

    def set_token_lifetime(self, seconds: int) -> None:
        """``expires_in`` of tokens from the OAuth2 endpoint (short: clients refresh each call)."""
        self._call("POST", "/oauth2", {"expires_in": seconds})

    def configure_dex(
        self,
        *,
        users: dict[str, dict[str, str]] | None = None,
        session_seconds: float = dex.COOKIE_EXPIRE,
        api_routes: bool = True,
        skip_provider_button: bool = False,
        session_requests: int | None = None,
    ) -> None:
        """Profile ``dex``: users per connector, session lifetime (seconds, or requests
        served), oauth2-proxy options (see :meth:`.dex.DexGate.configure`)."""
        self._call(
            "POST",
            "/dex/configure",
            {
                "users": users,
                "session_seconds": session_seconds,
                "api_routes": api_routes,
                "skip_provider_button": skip_provider_button,
                "session_requests": session_requests,
            },
        )

    def expire_dex_sessions(self) -> None:
        """Profile ``dex``: every session cookie issued so far has expired."""
        self._call("POST", "/dex/expire", {})

    def dex_stats(self) -> dict[str, Any]:
        """Profile ``dex``: ``logins``, ``failed_logins``, ``refused`` requests, ``sessions``."""
        return self._call("GET", "/dex/stats")

    def configure_iap(self, *, client_id: str = iap.CLIENT_ID, token_seconds: int = 3600) -> None:
        """Profile ``iap``: the IAP OAuth client id (expected ``aud``), ID token lifetime."""
        self._call(
            "POST", "/iap/configure", {"client_id": client_id, "token_seconds": token_seconds}
        )

    def mint_id_token(self, audience: str, email: str = "standin@example.com") -> str:
        """Profile ``iap``: a Google-style ID token for ``audience`` (as Google would sign it)."""
        return self._call("POST", "/iap/mint", {"audience": audience, "email": email})["id_token"]

    def iap_stats(self) -> dict[str, Any]:
        """Profile ``iap``: ``minted`` ID tokens and the reasons of ``refused`` requests."""
        return self._call("GET", "/iap/stats")

    def set_ui_routes(self, enabled: bool = True) -> None:
        """Behind ``dex``/``iap``: the ingress reaches the UI server (``ml-pipeline-ui``, the
        ``ui-proxy`` routes), as Kubeflow's ``/pipeline`` route does, not the API server."""
        self._call("POST", "/ui_routes", {"enabled": enabled})

    def set_api_server_ready(self, ready: bool = True) -> None:
        """``ui-proxy``: whether the UI server's healthz fetch of the API server succeeds
        (``frontend/server/handlers/healthz.ts``: otherwise 200, ``apiServerReady`` false).
        Only healthz is affected; proxied API calls still reach the API server."""
        self._call("POST", "/api_server_ready", {"ready": ready})

    def set_log_archive(self, enabled: bool) -> None:
        """Profile ``argo-gc``: whether a log archive is configured."""
        self._call("POST", "/log_archive", {"enabled": enabled})

    def add_pipeline_version(
        self,
        pipeline_id: str,
        pipeline_version_id: str,
        pipeline_spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A pipeline (created when missing) with a version of these ids (newest so far)."""
        return self._call(
            "POST",
            "/pipeline_versions",
            {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": pipeline_version_id,
                "pipeline_spec": pipeline_spec,
            },
        )

    def set_run_state(self, run_id: str, state: str, error: str | None = None) -> dict[str, Any]:
        """Force a run into ``state`` (sticks until terminated); ``error``: last log line."""
        return self._call("POST", f"/runs/{run_id}/state", {"state": state, "error": error})

    def set_task_log(self, run_id: str, task: str, text: str) -> str:
        """The pod log of ``task`` (a component task: its executor pod); returns the node id."""
        return self._call("POST", f"/runs/{run_id}/logs", {"task": task, "text": text})["node_id"]

    def remove_task_logs(self, run_id: str) -> None:
        """The run's pods are gone: the log endpoint answers with its error body."""
        self._call("DELETE", f"/runs/{run_id}/logs")

    def delete_run(self, run_id: str) -> None:
        """Make the run disappear: later GETs answer 404."""
        self._call("DELETE", f"/runs/{run_id}")

    def runs(self) -> list[dict[str, Any]]:
        """Every run as stored (all fields), plus ``polls`` and ``namespace``, oldest first."""
        return self._call("GET", "/runs")

    def stored(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of ``kind``, oldest first: ``experiments``, ``pipelines``,
        ``pipeline_versions``, ``recurring_runs``, or ``deleted_recurring_runs`` (each deleted
        recurring run's id and the propagation policy of its delete)."""
        return self._call("GET", f"/{kind}")

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received: method, path, query, authorization, user header, time."""
        return self._call("GET", "/requests")


class KfpApiStandIn(ThreadedServer, _Controls):
    """The stand-in server in a background thread of this process."""

    _thread_name = "kfp-api-standin"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        multi_user: bool = False,
        schedule: Schedule | None = None,
        server_version: str = "head",
        profile: str = "api-server",
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the stand-in only listens on the loopback interface")
        self._address = (host, port)
        self.state = _State(
            multi_user=multi_user,
            schedule=schedule,
            server_version=server_version,
            profile=profile,
        )

    def _make_server(self) -> _Server:
        return _Server(self._address, self.state)

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
    *,
    multi_user: bool = False,
    cwd: str | Path | None = None,
    python: str | None = None,
    server_version: str = "head",
    profile: str = "api-server",
) -> Iterator[StandInControl]:
    """Run the stand-in as a separate process (for tests that run a triggerer elsewhere)."""
    root = Path(cwd) if cwd else Path(__file__).resolve().parents[3]
    cmd = [python or sys.executable, "-m", "kfp_bridge.testing.kfp_api", "--port", "0"]
    cmd += ["--server-version", server_version, "--profile", profile]
    if multi_user:
        cmd.append("--multi-user")
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("KFP_STANDIN_URL="):
            raise RuntimeError(f"stand-in process did not start (first line {line!r})")
        yield StandInControl(line.strip().split("=", 1)[1])
    finally:
        stop(proc, grace=5)
        if proc.stdout:
            proc.stdout.close()


def airflow_connection_json(
    url: str, *, password: str | None = None, login: str | None = None, **extra: Any
) -> str:
    """An ``AIRFLOW_CONN_<ID>`` value (JSON) for a ``kfp`` connection to the stand-in
    (``login``/``password``: the Dex user of the ``dex`` profile with ``auth="dex"``)."""
    conn: dict[str, Any] = {"conn_type": "kfp", "host": url, "extra": {"backend": "kfp", **extra}}
    if password is not None:
        conn["password"] = password
    if login is not None:
        conn["login"] = login
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
    parser.add_argument("--server-version", choices=SERVER_VERSIONS, default="head")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="api-server",
        help="api-server: the API server itself; ui-proxy: the UI server (ml-pipeline-ui); "
        "multi-user-istio: multi-user Kubeflow behind Istio (istio.py); "
        "dex: Kubeflow's oauth2-proxy/Dex login in front; iap: Google IAP in front; "
        "argo-gc: finished workflows deleted, pod logs from the archive only",
    )
    parser.add_argument("--pending", type=float, default=1)
    parser.add_argument("--running", type=float, default=1)
    parser.add_argument("--unit", choices=("polls", "seconds"), default="polls")
    args = parser.parse_args(argv)
    server = KfpApiStandIn(
        port=args.port,
        multi_user=args.multi_user,
        schedule=Schedule(pending=args.pending, running=args.running, unit=args.unit),
        server_version=args.server_version,
        profile=args.profile,
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
