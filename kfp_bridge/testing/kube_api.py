"""A loopback stand-in of the Kubernetes API's TokenRequest endpoint, reached via a kubeconfig.

It is a claim about Kubernetes (``authentication.k8s.io/v1`` TokenRequest, the
``serviceaccounts/token`` subresource; kubernetes/kubernetes
``pkg/registry/core/serviceaccount/storage/token.go`` and
``pkg/apis/authentication/validation/validation.go``; reference page
``kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1``):

* ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` with a ``TokenRequest``
  body answers 201 with the same object and ``status.token`` /
  ``status.expirationTimestamp`` (RFC 3339, UTC);
* the caller authenticates with its kubeconfig user's bearer token; without it 401
  (``Status`` reason ``Unauthorized``);
* an unknown service account is 404 ``serviceaccounts "<name>" not found``;
* ``spec.expirationSeconds`` under 600 is 422 (``may not specify a duration less than
  10 minutes``); the token's identity is ``system:serviceaccount:<ns>:<name>``;
* the API server may shorten the lifetime (``--service-account-max-token-expiration``):
  ``max_lifetime`` here, so a test can make tokens short-lived.

Each minted token is handed to ``on_mint(token, user, audiences, expires_at)``, which a
test points at the KFP stand-in's ``register_token`` so its TokenReview accepts it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kfp_bridge.testing._threaded import ThreadedServer
from kfp_bridge.testing.kfp_api.istio import make_token

TOKEN_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/serviceaccounts/([^/]+)/token$")
OnMint = Callable[[str, str, list[str], float], None]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class KubeApiStandIn(ThreadedServer):
    """The TokenRequest endpoint on 127.0.0.1, with the service accounts it knows."""

    _thread_name = "kube-api-standin"

    def __init__(
        self,
        service_accounts: list[tuple[str, str]],
        *,
        on_mint: OnMint | None = None,
        max_lifetime: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service_accounts = set(service_accounts)
        self.on_mint = on_mint
        self.max_lifetime = max_lifetime
        self.clock = clock  # the API server's clock (a test moves it with the client's)
        self.credential = "kube-admin-" + secrets.token_hex(8)  # the kubeconfig user's token
        self.minted: list[dict[str, Any]] = []  # namespace, name, audiences, seconds (no token)
        self._lock = threading.Lock()

    def _make_server(self) -> ThreadingHTTPServer:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = stand_in._token_request(self.path, self.headers, raw)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def write_kubeconfig(self, path: str | Path, *, credential: str | None = None) -> Path:
        """A kubeconfig whose one context reaches this stand-in with a bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "airflow", "user": {"token": credential or self.credential}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "airflow"}}],
            "current-context": "standin",
        }
        path = Path(path)
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def _token_request(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, Any]]:
        match = TOKEN_PATH.match(path.split("?", 1)[0])
        if not match:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if headers.get("Authorization") != f"Bearer {self.credential}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        namespace, name = match.groups()
        if (namespace, name) not in self.service_accounts:
            return 404, _status(404, "NotFound", f'serviceaccounts "{name}" not found')
        request = json.loads(raw or b"{}")
        spec = request.get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            return 422, _status(
                422,
                "Invalid",
                f'TokenRequest.authentication.k8s.io "{name}" is invalid: spec.expirationSeconds:'
                f" Invalid value: {seconds}: may not specify a duration less than 10 minutes",
            )
        audiences = list(spec.get("audiences") or [])
        lifetime = min(seconds, self.max_lifetime) if self.max_lifetime else seconds
        expires_at = self.clock() + lifetime
        user = f"system:serviceaccount:{namespace}:{name}"
        token = make_token(user, audiences, expires_at)
        with self._lock:
            self.minted.append(
                {"namespace": namespace, "name": name, "audiences": audiences, "seconds": seconds}
            )
        if self.on_mint is not None:
            self.on_mint(token, user, audiences, expires_at)
        stamp = datetime.fromtimestamp(int(expires_at), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": stamp},
        }
        return 201, answer
