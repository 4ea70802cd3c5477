"""What a KFP host is, for the connection test, and Istio's refusal, for every call.

The connection test names the topology it found, so a person knows what will and will
not work before a task runs:

* **API server or UI server.** The API server's top mux answers an unknown path with the
  Go text ``404 page not found`` (kubeflow/pipelines ``backend/src/apiserver/main.go``);
  the UI server ``ml-pipeline-ui`` (the host behind the AI Platform Pipelines inverse
  proxy and Kubeflow's ``/pipeline`` ingress) answers ``/`` with HTML: its index page or
  Express's HTML 404 (``frontend/server/app.ts``).
* **Single- or multi-user, and the KFP version**: ``GET /apis/v2beta1/healthz``. The API
  server answers ``commit_sha``, ``tag_name``, ``multi_user`` (``pipeline_store`` from
  2.14.0; ``backend/src/apiserver/main.go``); the UI server answers that route itself
  (``frontend/server/app.ts`` registers it before the API proxy) with
  ``frontend/server/handlers/healthz.ts``'s ``HealthzStats``: ``apiServerTagName``,
  ``apiServerCommitHash``, ``apiServerMultiUser`` and ``multi_user``, ``pipelineStore``,
  and ``apiServerReady``, which is false (still HTTP 200) when it could not reach the
  API server. :func:`read_healthz` reads both.
* **Istio in front** (multi-user Kubeflow): the ``ml-pipeline`` AuthorizationPolicy
  (``manifests/kustomize/base/installs/multi-user/istio-authorization-config.yaml``)
  allows a request carrying ``kubeflow-userid`` only from KFP's own service accounts;
  Envoy refuses the rest with a plain-text 403 ``RBAC: access denied`` (Istio's
  authorization-policy tasks show that answer) before the API server sees them. So the
  ``user`` header option cannot work there; a service-account token can. The test sends
  the header once to healthz (read-only, unauthenticated) to find out.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from kfp_server_api.exceptions import ApiException

from kfp_bridge.exceptions import AuthError, BackendError, TransientBackendError


class KfpApiBackend(Protocol):
    """What these checks read of ``kfp_api.KfpApiBackend`` (named here, not imported:
    that module imports this one)."""

    host: str
    namespace: str | None
    user: str | None
    user_header: str | None
    request_timeout: float
    _api_client: Any
    _cookie_session: Any
    _token_provider: Any


ISTIO_DENIAL = "RBAC: access denied"
PROBE_USER = "kfp-bridge-connection-test"
TOKEN_AUTH_HINT = (
    "use a service-account token with audience pipelines.kubeflow.org instead: "
    "auth=sa_token_file (a projected token file, in the cluster) or "
    "auth=kubernetes_token_request (minted through a kubernetes_conn_id, outside it)"
)


def _text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")


def is_istio_denial(status: int, body: Any) -> bool:
    """Envoy's RBAC filter refused the request (not the KFP API, whose 403s are JSON)."""
    return status == 403 and _text(body).strip() == ISTIO_DENIAL


def istio_denial_error(what: str, host: str, user: str | None) -> AuthError:
    """The error for an Istio refusal: says why, and what works instead."""
    if user:
        why = (
            f"Istio in front of the KFP API refuses the identity header sent for user {user!r}: "
            "multi-user Kubeflow's ml-pipeline AuthorizationPolicy accepts kubeflow-userid "
            "only from KFP's own service accounts, so the connection's `user` header option "
            "does not work behind Istio; remove extra.user and "
        )
    else:
        why = "Istio's authorization policy refused the request; "
    return AuthError(f"{what}: {host} answered HTTP 403 {ISTIO_DENIAL!r}: {why}{TOKEN_AUTH_HINT}.")


def _get(backend: KfpApiBackend, path: str, headers: dict[str, str] | None = None) -> tuple:
    """``(status, content type, body text)`` of a GET with the backend's credentials."""
    client = backend._api_client
    timeout = (backend.request_timeout, backend.request_timeout)
    try:
        response = client.call_api(
            path,
            "GET",
            header_params=dict(headers or {}),
            auth_settings=["Bearer"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
    except ApiException as err:
        content_type = (err.headers or {}).get("Content-Type", "") if err.headers else ""
        return err.status or 0, content_type, _text(err.body)
    return response.status, response.headers.get("Content-Type", ""), _text(response.data)


def _front(backend: KfpApiBackend) -> str:
    try:
        status, content_type, body = _get(backend, "/")
    except Exception as err:  # best effort: the test already reached healthz
        return f"front not identified ({type(err).__name__})"
    head = body.lstrip().lower()
    if "html" in content_type.lower() or head.startswith(("<!doctype html", "<html")):
        return "UI server (ml-pipeline-ui: proxies the API, serves pod logs at /k8s/pod/logs)"
    if 300 <= status < 400:
        return f"a login front (HTTP {status} redirect on /)"
    if status == 404 and body.strip() == "404 page not found":
        return "API server (ml-pipeline)"
    return f"front not identified (HTTP {status} on /)"


def read_healthz(body: Any, host: str) -> dict[str, Any]:
    """A healthz answer of the API server or of the UI server, in the API server's names.

    ``multi_user``, ``tag_name``, ``commit_sha`` (and ``pipeline_store`` when sent).
    The UI server's ``apiServerReady`` false is a ``TransientBackendError``: the UI is
    up, the API server behind it did not answer (restarting, or not deployed).
    """
    try:
        data = json.loads(_text(body))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BackendError(f"healthz: {host} answered no healthz JSON: {_text(body)[:200]!r}")
    if "apiServerReady" not in data:  # the API server's own answer
        health = {k: data[k] for k in ("commit_sha", "tag_name", "pipeline_store") if k in data}
        return {**health, "multi_user": bool(data.get("multi_user"))}
    if not data["apiServerReady"]:
        raise TransientBackendError(
            f"healthz: {host} is the KFP UI server (ml-pipeline-ui) and could not reach the "
            "KFP API server behind it (apiServerReady false): the API server is down or "
            "restarting"
        )
    health = {
        "commit_sha": data.get("apiServerCommitHash"),
        "tag_name": data.get("apiServerTagName"),
        "multi_user": bool(data.get("multi_user", data.get("apiServerMultiUser"))),
        "pipeline_store": data.get("pipelineStore"),
    }
    return {k: v for k, v in health.items() if v is not None}


def _version(health: dict[str, Any]) -> str:
    tag = str(health.get("tag_name") or "")
    if tag and tag != "unknown":
        return f"KFP {tag}"
    return "KFP 2.x (v2beta1 API; build tag not reported)"


def _istio_in_front(backend: KfpApiBackend) -> bool:
    header = backend.user_header or "kubeflow-userid"
    try:
        status, _, body = _get(backend, "/apis/v2beta1/healthz", {header: PROBE_USER})
    except Exception:
        return False
    return is_istio_denial(status, body)


def describe(backend: KfpApiBackend, health: dict[str, Any]) -> str:
    """One line for the connection test: host kind, users, version, identity, caveats."""
    multi = bool(health.get("multi_user"))
    parts = [
        f"KFP API at {backend.host} is healthy ({'multi-user' if multi else 'single-user'})",
        _front(backend),
        _version(health),
    ]
    if backend.user:
        parts.append(f"identity: header {backend.user_header or 'kubeflow-userid'}")
    elif backend._cookie_session is not None:
        parts.append("identity: the ingress's session cookie (auth=dex login)")
    elif backend._token_provider is not None:
        parts.append("identity: bearer token")
    else:
        parts.append("identity: none sent")
    if backend.namespace:
        parts.append(f"namespace {backend.namespace} accepted")
    if multi and _istio_in_front(backend):
        parts.append(
            "Istio in front: the `user` header option will not work here (Istio refuses "
            "kubeflow-userid from outside KFP); a service-account token does"
        )
    return "; ".join(parts)
