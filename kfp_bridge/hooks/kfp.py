"""Connection type ``kfp``: which execution backend runs the pipeline, and how to reach it.

The connection form (fields, labels, placeholders) is declared in
``kfp_bridge/get_provider_info.py`` under ``conn-fields`` and
``ui-field-behaviour``: that is how Airflow 3.2+ builds connection forms;
``get_connection_form_widgets`` / ``get_ui_field_behaviour`` on hooks are
deprecated there, so this hook does not define them.

Connection fields:

- ``host``: KFP API endpoint (``backend=kfp``), e.g. the AI Platform Pipelines URL;
- ``password``: static bearer token (``auth=token``), or the Dex password (``auth=dex``);
- ``login``: the Dex user (``auth=dex``, e.g. ``user@example.com``);
- extra: ``backend`` (kfp | vertex | local), ``auth`` (none | token | google |
  sa_token_file | kubernetes_token_request | dex | iap), ``iap_client_id`` (``auth=iap``:
  the audience of the ID token), ``dex_connector`` (``auth=dex``: local or ldap),
  ``namespace``, ``user`` and ``user_header``
  (the identity header, default ``kubeflow-userid``: only for the API server reached
  without Istio; multi-user Kubeflow's Istio refuses it from other callers), ``ui_host``,
  ``credentials_path`` (sa_token_file), ``kubernetes_conn_id``, ``serviceaccount``,
  ``serviceaccount_namespace``, ``audience`` and ``expiration_seconds``
  (kubernetes_token_request; see :mod:`kfp_bridge.hooks.kube_tokens`),
  ``verify_ssl``, ``request_timeout``, ``project_id``
  and ``location`` (vertex), ``api_transport`` (vertex: grpc or rest),
  ``local_state_dir`` and ``local_python`` (local).
  Keys may also carry the form prefix ``extra__kfp__``.

Google identity (``auth=google`` and the vertex backend): a Google Cloud connection
(``gcp_conn_id``, default ``google_cloud_default``) read by the Google provider's
``GoogleBaseHook``, with ``impersonation_chain`` (the argument wins over the Google
connection's own field). A missing ``google_cloud_default`` means application
default credentials. The ``kfp`` connection still says *which* service and project:
``extra.project_id`` wins over the Google connection's project.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from kfp_bridge.backends.base import Backend, positive_seconds
from kfp_bridge.exceptions import AuthError, BackendConfigError, KfpBridgeError
from kfp_bridge.hooks.kube_tokens import KUBERNETES_AUTH_MODES
from kfp_bridge.redaction import airflow_redact

BACKENDS = ("kfp", "vertex", "local")
AUTH_MODES = ("none", "token", "google", *KUBERNETES_AUTH_MODES, "dex", "iap")
# Backend settings -> the connection field that holds them.
SETTING_FIELDS = {
    "host": "host",
    "python": "extra.local_python",
    "transport": "extra.api_transport",
}
DEFAULT_GCP_CONN_ID = "google_cloud_default"


class KfpConnectionError(KfpBridgeError, ValueError):
    """The ``kfp`` connection is incomplete or has a bad value (names the field)."""


class _Masking:
    """A token provider whose every new token is registered with the secrets masker;
    ``invalidate`` (renew on the next call) passes through when the provider has it."""

    def __init__(self, provider: Callable[[], str]) -> None:
        self._provider = provider
        self._last = ""
        if hasattr(provider, "invalidate"):
            self.invalidate = provider.invalidate

    def __repr__(self) -> str:  # never the token
        return f"_Masking({self._provider!r})"

    def __call__(self) -> str:
        token = self._provider()
        if token and token != self._last:
            mask_secret(token)
            self._last = token
        return token


def _masking(provider: Callable[[], str]) -> Callable[[], str]:
    return _Masking(provider)


def default_local_state_dir() -> str:
    """``var/kfp_local`` under ``$KFP_BRIDGE_HOME`` or the current directory."""
    home = Path(os.environ.get("KFP_BRIDGE_HOME") or os.getcwd())
    return str(home / "var" / "kfp_local")


class KubeflowPipelineHook(BaseHook):
    """Reads a ``kfp`` connection and builds the matching :class:`Backend` (``get_conn``).

    The hook reads fields; each backend validates its own settings (host, project,
    interpreter, ...) once, and the hook names the connection field in the error.

    :param kfp_conn_id: connection id (type ``kfp``).
    :param gcp_conn_id: Google Cloud connection for ``auth=google`` and the vertex backend.
    :param impersonation_chain: service account to impersonate, or a chain of them
        (the last one is impersonated, the others are delegates), as in the Google provider.
    """

    conn_name_attr = "kfp_conn_id"
    default_conn_name = "kfp_default"
    conn_type = "kfp"
    hook_name = "Kubeflow Pipelines"

    def __init__(
        self,
        kfp_conn_id: str = default_conn_name,
        *,
        gcp_conn_id: str = DEFAULT_GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kfp_conn_id = kfp_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    # -- connection reading ----------------------------------------------------
    @cached_property
    def connection(self) -> Any:
        """The connection, its secrets registered with Airflow's secrets masker."""
        conn = self.get_connection(self.kfp_conn_id)
        # Airflow masks the password (and, in extra_dejson, token/secret-like keys) when
        # it hands out a connection; the password again here so no path depends on how.
        if conn.password:
            mask_secret(conn.password)
        _ = conn.extra_dejson
        return conn

    def register_secrets(self) -> None:
        """Make this process mask the connection's secrets, e.g. before logging service text.

        A worker resumed after deferral has not read the connection yet; a service
        error echoing the token would otherwise reach its task log in clear. Texts
        that came from the triggerer are redacted there already, so a connection that
        cannot be read here is a warning, not a failure.
        """
        try:
            _ = self.connection
        except Exception as err:
            self.log.warning(
                "Could not read connection %r to mask its secrets: %s", self.kfp_conn_id, err
            )

    def _error(self, message: str) -> KfpConnectionError:
        return KfpConnectionError(f"Connection {self.kfp_conn_id!r} (type kfp): {message}")

    @cached_property
    def extra(self) -> dict[str, Any]:
        raw = self.connection.extra_dejson or {}
        if not isinstance(raw, dict):
            raise self._error("extra must be a JSON object")
        prefix = f"extra__{self.conn_type}__"
        extra = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
        extra.update({k: v for k, v in raw.items() if not k.startswith(prefix)})
        return {k: v for k, v in extra.items() if v not in (None, "")}

    def _choice(self, field: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self.extra.get(field, default)).strip().lower()
        if value not in choices:
            raise self._error(
                f"extra.{field} must be one of {', '.join(choices)}, got {self.extra[field]!r}"
            )
        return value

    @property
    def backend_name(self) -> str:
        return self._choice("backend", BACKENDS, "kfp")

    def _bool(self, field: str, default: bool) -> bool:
        value = self.extra.get(field, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise self._error(f"extra.{field} must be true or false, got {value!r}")

    def _token_provider(self) -> Any:
        password = self.connection.password
        auth = self._choice("auth", AUTH_MODES, "token" if password else "none")
        from kfp_bridge.backends import kfp_api

        if auth == "token":
            if not password:
                raise self._error("extra.auth is 'token' but the password (bearer token) is empty")
            return kfp_api.static_token_provider(password)
        if auth == "google":
            return _masking(kfp_api.google_token_provider(self.google_credentials()))
        if auth in KUBERNETES_AUTH_MODES:
            return self._kubernetes_token_provider(auth)
        if auth == "iap":
            return self._iap_token_provider()
        return None

    def _token_source(self) -> str | None:
        """How a renewable token is obtained, for errors: ``auth=... of connection '...'``."""
        auth = self._choice("auth", AUTH_MODES, "token" if self.connection.password else "none")
        if auth not in KUBERNETES_AUTH_MODES:
            return None
        return f"auth={auth} of connection {self.kfp_conn_id!r}"

    def _kubernetes_token_provider(self, auth: str) -> Callable[[], str]:
        """A service-account token for multi-user Kubeflow behind Istio (``hooks.kube_tokens``)."""
        from kfp_bridge.hooks.kube_tokens import token_provider_from_extra

        if self.extra.get("user"):
            raise self._error(
                f"extra.user (the identity header) and auth={auth} exclude each other: "
                "behind Istio the header is refused; the token carries the identity"
            )
        try:
            return _masking(token_provider_from_extra(auth, self.extra))
        except AuthError as err:  # a missing or bad setting, before any request
            raise self._error(str(err)) from None

    # -- ingress logins: Dex (Kubeflow's oauth2-proxy) and Google IAP ---------------
    def _iap_token_provider(self) -> Any:
        """``auth=iap``: ID tokens whose audience is ``extra.iap_client_id`` (hooks/_iap.py)."""
        from kfp_bridge.backends import kfp_api
        from kfp_bridge.hooks._iap import id_token_credentials

        client_id = str(self.extra.get("iap_client_id") or "").strip()
        if not client_id:  # before any Google call
            raise self._error(
                "extra.auth is 'iap' but extra.iap_client_id is empty (the OAuth client id "
                "of the IAP-secured resource, ...apps.googleusercontent.com)"
            )
        credentials = id_token_credentials(self.google_credentials(), client_id)
        return _masking(kfp_api.google_token_provider(credentials))

    def _cookie_session(self) -> Any:
        """``auth=dex``: a Dex login with the connection's login and password (hooks/_dex.py)."""
        if self._choice("auth", AUTH_MODES, "none") != "dex":
            return None
        from kfp_bridge.backends import kfp_api
        from kfp_bridge.hooks._dex import CONNECTORS, DexSession

        conn = self.connection
        if not conn.login or not conn.password:
            raise self._error(
                "extra.auth is 'dex' but the login or the password is empty (the Dex user, "
                "e.g. user@example.com, and its password)"
            )
        connector = self._choice("dex_connector", CONNECTORS, "local")
        url = kfp_api._endpoint("host", conn.host, scheme=conn.schema or None, port=conn.port)
        return DexSession(
            url,
            conn.login,
            conn.password,
            connector=connector,
            verify_ssl=self._bool("verify_ssl", True),
            # checked here too: the Dex login is built before the backend checks its own
            timeout=positive_seconds("request_timeout", self.extra.get("request_timeout", 30.0)),
            on_secret=mask_secret,
        )

    # -- Google identity ---------------------------------------------------------
    @cached_property
    def google_hook(self) -> Any:
        """The Google provider's base hook for ``gcp_conn_id`` and ``impersonation_chain``."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from kfp_bridge.hooks.google_cloud import BridgeGoogleHook

        try:
            return BridgeGoogleHook(
                gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
            )
        except AirflowNotFoundException:
            raise KfpConnectionError(
                f"Google Cloud connection {self.gcp_conn_id!r} (gcp_conn_id) is not defined"
            ) from None

    def google_credentials(self) -> Any:
        """The Google connection's credentials (impersonated when a chain is set)."""
        import google.auth.exceptions

        try:
            return self.google_hook.get_credentials()
        except google.auth.exceptions.DefaultCredentialsError as err:
            raise AuthError(
                f"Google Cloud connection {self.gcp_conn_id!r} holds no key and no Google "
                "application default credentials were found (set "
                "GOOGLE_APPLICATION_CREDENTIALS, run on GCP with a service account, or give "
                f"the connection a key): {err}"
            ) from err

    # -- the backend ---------------------------------------------------------------
    def get_conn(self) -> Backend:
        """The backend this connection selects, validated; built once per hook."""
        return self._backend

    @cached_property
    def _backend(self) -> Backend:
        build = {"kfp": self._kfp_backend, "vertex": self._vertex_backend}.get(
            self.backend_name, self._local_backend
        )
        try:
            return build()
        except BackendConfigError as err:  # name the field a person edits, not the argument
            field = SETTING_FIELDS.get(err.setting, f"extra.{err.setting}")
            raise self._error(f"{field} {err.problem}") from err

    def _kfp_backend(self) -> Backend:
        from kfp_bridge.backends.kfp_api import KfpApiBackend

        conn = self.connection
        return KfpApiBackend(
            conn.host or "",
            scheme=conn.schema or None,
            port=conn.port or None,
            token_provider=self._token_provider(),
            token_source=self._token_source(),
            namespace=self.extra.get("namespace"),
            ui_host=self.extra.get("ui_host"),
            verify_ssl=self._bool("verify_ssl", True),
            request_timeout=self.extra.get("request_timeout", 30.0),
            user=self.extra.get("user"),
            user_header=self.extra.get("user_header"),
            cookie_session=self._cookie_session(),
        )

    def _vertex_backend(self) -> Backend:
        from kfp_bridge.backends.vertex import VertexBackend

        location = str(self.extra.get("location") or "")
        if not location:  # before any Google call
            raise BackendConfigError(
                "location", "is required for backend 'vertex' (a region, e.g. us-central1)"
            )
        self.google_credentials()  # a clear AuthError when there are none
        return VertexBackend(
            str(self.extra.get("project_id") or "") or None,
            location,
            google_hook=self.google_hook,
            transport=self.extra.get("api_transport"),
            request_timeout=self.extra.get("request_timeout", 60.0),
        )

    def _local_backend(self) -> Backend:
        from kfp_bridge.backends.local import LocalBackend
        from kfp_bridge.links.local_run import api_base_url, local_run_url

        state_dir = self.extra.get("local_state_dir") or default_local_state_dir()
        base_url = api_base_url()
        return LocalBackend(
            state_dir,
            python=self.extra.get("local_python"),
            run_page=lambda run_id: local_run_url(
                run_id, conn_id=self.kfp_conn_id, base_url=base_url
            ),
        )

    # -- UI "Test" button --------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Reach the service with the connection's credentials (``Backend.check``)."""
        try:
            return True, airflow_redact(self.get_conn().check())
        except Exception as err:
            return False, airflow_redact(f"{type(err).__name__}: {err}")
