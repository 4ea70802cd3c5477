"""The ``multi-user-istio`` profile: multi-user Kubeflow with Istio in front of ``ml-pipeline``.

Each behaviour names the upstream file it reproduces (kubeflow/pipelines unless it says
otherwise):

* **Envoy's RBAC refusal.** ``manifests/kustomize/base/installs/multi-user/
  istio-authorization-config.yaml``, AuthorizationPolicy ``ml-pipeline``: a request is
  allowed when it comes from one of KFP's own service accounts (``ml-pipeline``,
  ``ml-pipeline-ui``, the persistence agent, ...) or carries no ``kubeflow-userid``
  header. The stand-in's callers are never KFP's own pods, so any request with that
  header is refused by the sidecar before the API server sees it: HTTP 403, body
  ``RBAC: access denied``, ``text/plain`` (Envoy's RBAC filter; istio/istio.io
  ``content/en/docs/tasks/security/authorization/`` show the same answer). Every path,
  healthz included, goes through the sidecar.
* **Tokens.** ``backend/src/apiserver/auth/authenticator_token_review.go``: a bearer
  token is sent to a Kubernetes TokenReview with audience ``pipelines.kubeflow.org``
  (``common/const.go``); the identity is the reviewed user
  (``system:serviceaccount:<ns>:<name>`` for a service-account token). Tokens here are
  issued with an expiry, as Kubernetes issues them (TokenRequest ``expirationSeconds``);
  the review of an expired token is not authenticated, which the API server reports as
  401 ``Review.Status.Authenticated is false``.
* **The kubelet's rotation.** A projected service-account token (``serviceAccountToken``
  volume source) is rewritten by the kubelet before it expires: it "proactively rotates
  the token if it is older than 80% of its total TTL" (kubernetes/website
  ``content/en/docs/concepts/storage/projected-volumes.md``), swapping the file in
  atomically (a new ``..data`` symlink, kubernetes ``pkg/volume/util/atomic_writer.go``).
  :func:`kubelet_tick` plays that part for a token file the test names, counted in run
  polls rather than seconds, so a wait sees the token expire at a known point: the
  successor is written first, then the old token's review fails.
* **Revocation.** A token can fail its review before its ``exp``: TokenReview checks
  that the service account (and the pod a token is bound to) still exists (kubernetes
  ``pkg/serviceaccount/claims.go`` ``Validate``). ``revoke_every_polls`` revokes every
  token issued so far after each N run polls, so a wait meets such a refusal at a known
  point (:func:`kubelet_tick`).
* **Authorization and namespaces** are the multi-user behaviour of ``server.py``
  (``resource/resource_manager.go`` ``IsAuthorized`` -> SubjectAccessReview; a namespace
  is required on list and create).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

PROFILE = "multi-user-istio"
ISTIO_USER_HEADER = "kubeflow-userid"  # the header the AuthorizationPolicy names
DENIAL = b"RBAC: access denied"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def make_token(user: str, audiences: list[str], expires_at: float) -> str:
    """A JWT-shaped service-account token (claims as Kubernetes writes them; not signed)."""
    now = int(time.time())
    claims = {"aud": audiences, "exp": int(expires_at), "iat": now, "iss": ISSUER, "sub": user}
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{_b64({'alg': 'RS256', 'kid': 'standin'})}.{_b64(claims)}.{signature}"


def envoy_denies(profile: str, headers: Any) -> bool:
    """The ``ml-pipeline`` AuthorizationPolicy refuses this request (see the module doc)."""
    return profile == PROFILE and bool(headers.get_all(ISTIO_USER_HEADER))


def register(state: Any, token: str, user: str, audiences: list[str], expires_at: float) -> None:
    """What a TokenReview of ``token`` answers until ``expires_at``."""
    state.auth.tokens[token] = (user, list(audiences))
    state.auth.expires[token] = float(expires_at)


def control(state: Any, method: str, path: str, body: dict[str, Any]) -> Any:
    """``/tokens`` control endpoints: issue, register (minted elsewhere), expire."""
    if method == "POST" and path == "/tokens":
        expires_at = time.time() + float(body.get("lifetime", 3600))
        audiences = list(body.get("audiences") or ["pipelines.kubeflow.org"])
        token = make_token(body["user"], audiences, expires_at)
        register(state, token, body["user"], audiences, expires_at)
        return {"token": token, "expires_at": expires_at}
    if method == "POST" and path == "/tokens/register":
        register(state, body["token"], body["user"], body["audiences"], body["expires_at"])
        return {}
    if method == "POST" and path == "/tokens/kubelet":
        state.kubelet = {
            "path": body["path"],
            "user": body["user"],
            "every": int(body.get("every_polls") or 2),
            "polls": 0,
            "token": _rotate(state, body["path"], body["user"], None),
            "rotations": 0,
        }
        return {}
    if method == "POST" and path == "/tokens/revoke_every":
        state.revoker = {"every": int(body["every_polls"]), "polls": 0, "revocations": 0}
        return {}
    if method == "GET" and path == "/tokens/revoke_every":
        return dict(getattr(state, "revoker", None) or {})
    if method == "GET" and path == "/tokens/kubelet":
        return {k: v for k, v in (getattr(state, "kubelet", None) or {}).items() if k != "token"}
    if method == "POST" and path == "/tokens/expire":
        token = body.get("token")
        for known in [token] if token else list(state.auth.tokens):
            state.auth.expires[known] = 0.0
        return {}
    return None


def _rotate(state: Any, path: str, user: str, old: str | None) -> str:
    """Write a new token file atomically, then let the old token expire."""
    token = make_token(user, ["pipelines.kubeflow.org"], time.time() + 3600)
    register(state, token, user, ["pipelines.kubeflow.org"], time.time() + 3600)
    tmp = Path(path).with_name(Path(path).name + ".kubelet")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)
    if old is not None:
        state.auth.expires[old] = 0.0
    return token


def kubelet_tick(state: Any) -> None:
    """After each run poll: every ``every`` polls the token file is rotated, and tokens
    are revoked when asked (module doc)."""
    revoker = getattr(state, "revoker", None)
    if revoker:
        revoker["polls"] += 1
        if revoker["polls"] % revoker["every"] == 0:
            for token in list(state.auth.tokens):
                state.auth.expires[token] = 0.0
            revoker["revocations"] += 1
    kubelet = getattr(state, "kubelet", None)
    if not kubelet:
        return
    kubelet["polls"] += 1
    if kubelet["polls"] % kubelet["every"] == 0:
        kubelet["token"] = _rotate(state, kubelet["path"], kubelet["user"], kubelet["token"])
        kubelet["rotations"] += 1
