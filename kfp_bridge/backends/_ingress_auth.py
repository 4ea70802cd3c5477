"""Session-cookie auth at an ingress in front of the KFP API (Kubeflow's oauth2-proxy + Dex).

``kfp.Client(cookies=...)`` sends a fixed ``Cookie`` header on every call
(``kfp/client/client.py``: ``kfp_server_api.ApiClient(config, cookie=cookies)``); a
session cookie expires (``cookie_expire = "24h"`` in kubeflow/manifests
``common/oauth2-proxy/base/oauth2_proxy.cfg``), so the bridge asks a
:class:`CookieSession` for the cookie before each call and for a new login when the
ingress no longer accepts it.
"""

from __future__ import annotations

from typing import Any, Protocol


class CookieSession(Protocol):
    """Logs in on first use and again after :meth:`renew`; thread-safe."""

    def cookie(self) -> str:
        """The ``Cookie`` header value of the current session (logs in when there is none)."""
        ...

    def renew(self, stale: str) -> None:
        """The ingress refused ``stale``: the next :meth:`cookie` logs in again (once)."""
        ...


def login_challenge(status: int | None, headers: Any, body: Any) -> bool:
    """Whether an answer means "log in (again)" rather than an API error.

    oauth2-proxy (``oauthproxy.go`` ``Proxy``) answers a request without a valid
    session with 401 ``{}`` on its ``api_routes`` (``/apis/``), with its sign-in page
    and HTTP 403 elsewhere (e.g. the UI server's ``/k8s/pod/logs``), or with a 302 to
    the login page (``skip_provider_button``, set-ups without ``api_routes``, and the
    ``oidc-authservice`` of Kubeflow 1.8 and earlier).
    """
    if status == 401 or status in (301, 302, 303, 307):
        return True
    if status == 403:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        content_type = ""
        if headers is not None:
            content_type = str(headers.get("Content-Type") or headers.get("content-type") or "")
        return "text/html" in content_type.lower() or "oauth2/start" in str(body or "")
    return False
