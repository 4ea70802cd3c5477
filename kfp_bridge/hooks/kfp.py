"""Connection type ``kfp``: which execution backend runs the pipeline, and how to reach it.

The connection form (fields, labels, placeholders) is declared in
``kfp_bridge/get_provider_info.py`` under ``conn-fields`` and
``ui-field-behaviour``: that is how Airflow 3.2+ builds connection forms;
``get_connection_form_widgets`` / ``get_ui_field_behaviour`` on hooks are
deprecated there, so this hook does not define them.

Connection fields:

- ``host``: KFP API endpoint (``backend=kfp``), e.g. the AI Platform Pipelines URL;
- ``password``: static bearer token (``auth=token``);
- extra: ``backend`` (kfp | vertex | local), ``auth`` (none | token | google),
  ``namespace``, ``ui_host``, ``verify_ssl``, ``request_timeout``, ``project_id``
  and ``location`` (vertex), ``local_state_dir`` and ``local_python`` (local).
  Keys may also carry the form prefix ``extra__kfp__``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from kfp_bridge.backends.base import Backend
from kfp_bridge.exceptions import KfpBridgeError

BACKENDS = ("kfp", "vertex", "local")
AUTH_MODES = ("none", "token", "google")


class KfpConnectionError(KfpBridgeError, ValueError):
    """The ``kfp`` connection is incomplete or has a bad value (names the field)."""


def default_local_state_dir() -> str:
    """``var/kfp_local`` under ``$KFP_BRIDGE_HOME`` or the current directory."""
    home = Path(os.environ.get("KFP_BRIDGE_HOME") or os.getcwd())
    return str(home / "var" / "kfp_local")


class KubeflowPipelineHook(BaseHook):
    """Reads a ``kfp`` connection and builds the matching :class:`Backend`.

    :param kfp_conn_id: connection id (type ``kfp``).
    """

    conn_name_attr = "kfp_conn_id"
    default_conn_name = "kfp_default"
    conn_type = "kfp"
    hook_name = "Kubeflow Pipelines"

    def __init__(self, kfp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kfp_conn_id = kfp_conn_id

    # -- connection reading ----------------------------------------------------
    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.kfp_conn_id)

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

    def _host(self) -> str:
        conn = self.connection
        host = (conn.host or "").strip()
        if not host:
            raise self._error("host (the KFP API endpoint) is empty")
        if "://" not in host:
            scheme = conn.schema if conn.schema in ("http", "https") else "https"
            host = f"{scheme}://{host}"
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error(f"host must be an http(s) URL, got {conn.host!r}")
        if conn.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
        return urlunsplit(parts).rstrip("/")

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

    def _request_timeout(self, default: float) -> float:
        value = self.extra.get("request_timeout", default)
        try:
            timeout = float(value)
        except (TypeError, ValueError):
            raise self._error(f"extra.request_timeout must be a number, got {value!r}") from None
        if timeout <= 0:
            raise self._error(f"extra.request_timeout must be positive, got {value!r}")
        return timeout

    def _token_provider(self) -> Any:
        password = self.connection.password
        auth = self._choice("auth", AUTH_MODES, "token" if password else "none")
        from kfp_bridge.backends import kfp as kfp_backend

        if auth == "token":
            if not password:
                raise self._error("extra.auth is 'token' but the password (bearer token) is empty")
            return kfp_backend.static_token_provider(password)
        if auth == "google":
            return kfp_backend.google_token_provider()
        return None

    # -- backends ----------------------------------------------------------------
    def get_backend(self) -> Backend:
        """The backend this connection selects, validated; built once per hook."""
        return self._backend

    def get_conn(self) -> Backend:
        return self._backend

    @cached_property
    def _backend(self) -> Backend:
        name = self.backend_name
        if name == "kfp":
            return self._kfp_backend()
        if name == "vertex":
            return self._vertex_backend()
        return self._local_backend()

    def _kfp_backend(self) -> Backend:
        from kfp_bridge.backends.kfp import KfpApiBackend

        host = self._host()
        ui_host = self.extra.get("ui_host")
        if ui_host and not str(ui_host).startswith(("http://", "https://")):
            raise self._error(f"extra.ui_host must be an http(s) URL, got {ui_host!r}")
        return KfpApiBackend(
            host,
            token_provider=self._token_provider(),
            namespace=self.extra.get("namespace"),
            ui_host=ui_host,
            verify_ssl=self._bool("verify_ssl", True),
            request_timeout=self._request_timeout(30.0),
        )

    def _vertex_backend(self) -> Backend:
        from kfp_bridge.backends.vertex import VertexBackend

        project_id = self.extra.get("project_id")
        location = self.extra.get("location")
        if not project_id:
            raise self._error("extra.project_id is required for backend 'vertex'")
        if not location:
            raise self._error("extra.location is required for backend 'vertex' (a region)")
        return VertexBackend(
            str(project_id), str(location), request_timeout=self._request_timeout(60.0)
        )

    def _local_backend(self) -> Backend:
        from kfp_bridge.backends.local import LocalBackend

        state_dir = self.extra.get("local_state_dir") or default_local_state_dir()
        python = self.extra.get("local_python")
        if python and not Path(python).exists():
            raise self._error(f"extra.local_python {python!r} does not exist")
        return LocalBackend(state_dir, python=python)

    # -- UI "Test" button --------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Reach the service with the connection's credentials (KFP: healthz + list experiments)."""
        try:
            backend = self.get_backend()
            if self.backend_name == "kfp":
                health = backend.healthz()  # type: ignore[attr-defined]
                backend.check_access()  # type: ignore[attr-defined]
                mode = "multi-user" if health.get("multi_user") else "single-user"
                return True, f"KFP API at {backend.host} is healthy ({mode})"  # type: ignore[attr-defined]
            if self.backend_name == "vertex":
                backend.find_runs("kfp-bridge-connection-test")
                return True, f"Vertex AI Pipelines reachable ({backend!r})"
            python = Path(backend.python)  # type: ignore[attr-defined]
            if not python.exists():
                return False, f"pipeline interpreter {python} does not exist"
            return True, f"local backend: state in {backend.state_dir}, python {python}"  # type: ignore[attr-defined]
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
