"""Kubernetes service-account tokens for multi-user Kubeflow (``auth=sa_token_file`` and
``auth=kubernetes_token_request``).

Multi-user Kubeflow puts Istio in front of the KFP API server; its ``ml-pipeline``
AuthorizationPolicy (kubeflow/pipelines ``manifests/kustomize/base/installs/multi-user/
istio-authorization-config.yaml``) refuses a ``kubeflow-userid`` header from anyone but
KFP's own service accounts. What the API server accepts from other callers is a
service-account token whose audience is ``pipelines.kubeflow.org``
(``backend/src/apiserver/auth/authenticator_token_review.go``: a TokenReview with that
audience). Such tokens expire, so both providers here renew them:

* :class:`ServiceAccountTokenFile`: a token projected into a file by the kubelet, which
  rewrites the file before the token expires. Like the kfp SDK's
  ``ServiceAccountTokenVolumeCredentials`` (``kfp/client/set_volume_credentials.py``:
  path from the argument, else ``$KF_PIPELINES_SA_TOKEN_PATH``, else
  ``/var/run/secrets/kubeflow/pipelines/token``) the file is read again whenever it
  changed, so a long wait never sends a token the kubelet has replaced.
* :class:`KubernetesTokenRequest`: for Airflow outside the cluster (Cloud Composer next
  to a GKE Kubeflow): a token minted through the Kubernetes TokenRequest API
  (``POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token``) with the
  ``apache-airflow-providers-cncf-kubernetes`` hook of a ``kubernetes_conn_id``, and
  minted again before it expires.

Both are token providers for :class:`~kfp_bridge.backends.kfp_api.KfpApiBackend`: called
before every request, cheap when nothing changed. Tokens never reach a log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kfp_bridge.exceptions import AuthError

log = logging.getLogger(__name__)

KUBERNETES_AUTH_MODES = ("sa_token_file", "kubernetes_token_request")
# kfp/client/__init__.py KF_PIPELINES_SA_TOKEN_ENV / KF_PIPELINES_SA_TOKEN_PATH
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
# backend/src/apiserver/common/const.go DefaultTokenReviewAudience
PIPELINES_AUDIENCE = "pipelines.kubeflow.org"
# The Kubernetes API refuses expirationSeconds under 10 minutes
# (kubernetes pkg/apis/authentication/validation: "may not specify a duration less than 10
# minutes"); one hour is the kubelet's default for projected tokens.
MIN_EXPIRATION_SECONDS = 600
DEFAULT_EXPIRATION_SECONDS = 3600
# The kubelet renews a projected token once 80% of its lifetime has passed
# (kubernetes pkg/kubelet/token/token_manager.go requiresRefresh); so does this provider.
RENEW_AT_FRACTION = 0.8


def _now() -> float:
    """The clock renewal decisions use (a function, so a test can move it forward)."""
    return time.time()


class ServiceAccountTokenFile:
    """A projected service-account token, read again whenever the file changes.

    The kubelet replaces the file atomically (a new ``..data`` symlink), so its inode,
    size or modification time change with each new token; an unchanged file is not
    read again. ``path`` defaults as in the kfp SDK.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or os.environ.get(SA_TOKEN_ENV) or DEFAULT_SA_TOKEN_PATH)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self.reads = 0

    def __repr__(self) -> str:  # never the token
        return f"ServiceAccountTokenFile({str(self.path)!r})"

    def __call__(self) -> str:
        with self._lock:
            try:
                st = self.path.stat()
            except OSError as err:
                raise AuthError(
                    f"auth=sa_token_file: cannot read the service-account token file {self.path}"
                    f" ({err.strerror or err}); mount a projected token with audience "
                    f"{PIPELINES_AUDIENCE} there, or set extra.credentials_path"
                ) from None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    token = self.path.read_text().strip()
                except OSError as err:
                    raise AuthError(
                        f"auth=sa_token_file: cannot read {self.path} ({err.strerror or err})"
                    ) from None
                if not token:
                    raise AuthError(f"auth=sa_token_file: the token file {self.path} is empty")
                if self._stamp is not None:
                    log.info("Token file %s changed; using the new token", self.path)
                self._token, self._stamp = token, stamp
                self.reads += 1
            return self._token

    def invalidate(self) -> None:
        """Read the file again on the next call, changed or not (the API refused the token:
        a rotation the file's inode, time and size did not show, or a revoked token)."""
        with self._lock:
            self._stamp = None


class KubernetesTokenRequest:
    """A service-account token minted with the Kubernetes TokenRequest API, renewed early.

    ``kubernetes_conn_id`` is a ``kubernetes`` connection of the cncf-kubernetes provider
    (kubeconfig path or content, or in-cluster) that may ``create`` ``serviceaccounts/
    token`` for ``service_account`` in ``namespace``. A token is minted on first use and
    again once ``RENEW_AT_FRACTION`` of its lifetime (as the API server reported it) has
    passed, or when :meth:`invalidate` says the KFP API refused it.
    """

    def __init__(
        self,
        kubernetes_conn_id: str,
        service_account: str,
        namespace: str,
        *,
        audience: str = PIPELINES_AUDIENCE,
        expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
        hook_factory: Callable[[str], Any] | None = None,
    ) -> None:
        if not kubernetes_conn_id:
            raise AuthError("auth=kubernetes_token_request needs extra.kubernetes_conn_id")
        if not service_account:
            raise AuthError("auth=kubernetes_token_request needs extra.serviceaccount")
        if not namespace:
            raise AuthError(
                "auth=kubernetes_token_request needs the service account's namespace "
                "(extra.serviceaccount_namespace, else extra.namespace)"
            )
        if int(expiration_seconds) < MIN_EXPIRATION_SECONDS:
            raise AuthError(
                f"extra.expiration_seconds must be at least {MIN_EXPIRATION_SECONDS} "
                f"(the Kubernetes API's minimum), got {expiration_seconds}"
            )
        self.kubernetes_conn_id = kubernetes_conn_id
        self.service_account = service_account
        self.namespace = namespace
        self.audience = audience
        self.expiration_seconds = int(expiration_seconds)
        self._hook_factory = hook_factory or _kubernetes_hook
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0
        self._client: Any = None
        self.minted = 0

    def __repr__(self) -> str:  # never the token
        return (
            f"KubernetesTokenRequest({self.kubernetes_conn_id!r}, "
            f"{self.namespace}/{self.service_account}, audience={self.audience!r})"
        )

    def invalidate(self) -> None:
        """Mint a new token on the next call (the service refused the current one)."""
        with self._lock:
            self._renew_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            now = _now()
            if not self._token or now >= self._renew_at:
                token, expires_at = self._mint()
                lifetime = max(expires_at - now, 0.0)
                self._token = token
                self._renew_at = now + RENEW_AT_FRACTION * lifetime
                self.minted += 1
                log.info(
                    "Minted a token for service account %s/%s (audience %s) through "
                    "connection %r; valid for %.0f s, renewed after %.0f s",
                    self.namespace,
                    self.service_account,
                    self.audience,
                    self.kubernetes_conn_id,
                    lifetime,
                    RENEW_AT_FRACTION * lifetime,
                )
            return self._token

    def _core_v1(self) -> Any:
        if self._client is None:
            self._client = self._hook_factory(self.kubernetes_conn_id).core_v1_client
        return self._client

    def _mint(self) -> tuple[str, float]:
        from kubernetes.client import AuthenticationV1TokenRequest, V1TokenRequestSpec
        from kubernetes.client.exceptions import ApiException

        body = AuthenticationV1TokenRequest(
            spec=V1TokenRequestSpec(
                audiences=[self.audience], expiration_seconds=self.expiration_seconds
            )
        )
        where = f"service account {self.namespace}/{self.service_account}"
        try:
            # Not preloaded: the kubernetes client logs a preloaded body (the token) at DEBUG.
            response = self._core_v1().create_namespaced_service_account_token(
                self.service_account, self.namespace, body, _preload_content=False
            )
            status = json.loads(response.data).get("status") or {}
        except ApiException as err:
            raise AuthError(
                f"auth=kubernetes_token_request: the Kubernetes API refused a token for {where}"
                f" (connection {self.kubernetes_conn_id!r}): HTTP {err.status} {err.reason}: "
                f"{_kube_message(err.body)}"
            ) from None
        except Exception as err:  # unreachable cluster, bad kubeconfig, not JSON
            raise AuthError(
                f"auth=kubernetes_token_request: could not get a token from the Kubernetes API "
                f"of connection {self.kubernetes_conn_id!r} for {where}: {type(err).__name__}"
            ) from None
        token = status.get("token")
        if not token:
            raise AuthError(f"auth=kubernetes_token_request: no token in the answer for {where}")
        expires = status.get("expirationTimestamp")
        try:
            return token, datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except (AttributeError, ValueError):
            return token, _now() + self.expiration_seconds


def _kube_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body (never the request, which has no token)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body or "")
    except ValueError:
        return str(body or "")[:300]
    return str(data.get("message") if isinstance(data, dict) else data)[:300]


def _kubernetes_hook(conn_id: str) -> Any:
    try:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    except ModuleNotFoundError as exc:  # an optional dependency: say which extra brings it
        raise ModuleNotFoundError(
            "auth=kubernetes_token_request needs the cncf-kubernetes provider, "
            "apache-airflow-providers-cncf-kubernetes: pip install 'kfp-bridge[kubernetes]'. "
            f"Import failed: {exc}",
            name=exc.name,
        ) from exc

    return KubernetesHook(conn_id=conn_id)


def token_provider_from_extra(
    auth: str, extra: dict[str, Any]
) -> ServiceAccountTokenFile | KubernetesTokenRequest:
    """The provider ``auth`` names, from the ``kfp`` connection's extra fields."""
    if auth == "sa_token_file":
        return ServiceAccountTokenFile(extra.get("credentials_path"))
    try:
        seconds = int(extra.get("expiration_seconds", DEFAULT_EXPIRATION_SECONDS))
    except (TypeError, ValueError):
        raise AuthError(
            "extra.expiration_seconds must be a whole number of seconds, got "
            f"{extra.get('expiration_seconds')!r}"
        ) from None
    return KubernetesTokenRequest(
        str(extra.get("kubernetes_conn_id") or ""),
        str(extra.get("serviceaccount") or ""),
        str(extra.get("serviceaccount_namespace") or extra.get("namespace") or ""),
        audience=str(extra.get("audience") or PIPELINES_AUDIENCE),
        expiration_seconds=seconds,
    )
