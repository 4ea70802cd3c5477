"""Profile ``dex``: Kubeflow's ingress login (oauth2-proxy + Dex) in front of the KFP API.

A claim about kubeflow/manifests (1.9 and later) and the two projects it wires up;
each behaviour names its source:

- ``common/oauth2-proxy/base/oauth2_proxy.cfg``: cookie ``oauth2_proxy_kubeflow``,
  ``cookie_expire = "24h"`` (Dex's token lifetime), ``login_url = "/dex/auth"``,
  ``redirect_url = "/oauth2/callback"``, ``skip_auth_routes = ["^/dex/"]``,
  ``skip_provider_button = false`` and ``api_routes = ["/apis/", ...]``;
- ``common/oauth2-proxy/components/istio-external-auth-patches/patches/
  cm.enable-oauth2-proxy.yaml``: Istio asks oauth2-proxy about every request
  (``envoyExtAuthzHttp``) forwarding only ``authorization`` and ``cookie``, so
  oauth2-proxy never sees ``Accept: application/json`` and its ``isAjax`` check
  does not apply;
- oauth2-proxy ``oauthproxy.go`` ``Proxy``: no session on an ``api_routes`` path ->
  ``errorJSON(401)`` (``Content-Type: application/json``, body ``{}``); elsewhere the
  sign-in page with HTTP 403 (``skip_provider_button = false``), or a 302 straight to
  the provider's login when ``skip_provider_button = true`` (``OAuthStart``). Without
  ``api_routes`` (oauth2-proxy set-ups before they were added, and the
  ``oidc-authservice`` of Kubeflow 1.8 and earlier) an API request without a session is
  such a 302 to the login page;
- ``OAuthStart`` (``/oauth2/start?rd=``): sets the CSRF cookie
  ``<cookie_name>_csrf`` and redirects to ``login_url`` with ``state=<nonce>:<rd>``;
  ``OAuthCallback`` (``/oauth2/callback``): checks the CSRF cookie, sets the session
  cookie (``Expires`` = ``cookie_expire``) and redirects to ``rd``;
- Dex ``server/handlers.go``: ``/dex/auth`` lists the connectors, or redirects to the
  only one; ``/dex/auth/{connector}`` redirects a password connector (``local``: the
  static passwords of ``common/dex/overlays/oauth2-proxy/config-map.yaml``
  ``staticPasswords``, ``user@example.com``; ``ldap``) to
  ``/dex/auth/{connector}/login?state=<auth request>&back=``, whose GET is the login
  form (fields ``login`` and ``password``) and whose POST answers a wrong password
  with the form again (HTTP 200, "Invalid Email Address and password.", Dex
  ``web/templates/password.html``) and a right one with a 303 to ``/dex/approval``;
  ``oauth2.skipApprovalScreen: true`` makes ``/dex/approval`` redirect (303) to the
  client's ``redirect_uri`` with ``code`` and ``state``.

The Kubeflow docs' ``KFPClientManager`` (kubeflow/website ``content/en/docs/components/
pipelines/user-guides/core-functions/connect-api.md``) walks exactly these steps and
hands the cookies to ``kfp.Client(cookies=...)``.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

COOKIE_NAME = "oauth2_proxy_kubeflow"  # oauth2_proxy.cfg cookie_name
CSRF_COOKIE = f"{COOKIE_NAME}_csrf"  # oauth2-proxy pkg/cookies/csrf.go: <cookie_name>_csrf
COOKIE_EXPIRE = 24 * 3600.0  # oauth2_proxy.cfg cookie_expire = "24h"
CLIENT_ID = "kubeflow-oidc-authservice"  # manifests: OIDC_CLIENT_ID of oauth2-proxy and Dex
REDIRECT_URI = "/oauth2/callback"  # oauth2_proxy.cfg redirect_url, Dex staticClients
API_ROUTES = re.compile(r"/apis/|^/ml_metadata")  # oauth2_proxy.cfg api_routes (unanchored)
DEFAULT_USERS = {"local": {"user@example.com": "12341234"}}  # manifests' documented default


@dataclasses.dataclass
class Reply:
    """A whole HTTP answer of the gate (status, headers, body)."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _html(title: str, inner: str) -> bytes:
    page = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
    page += f"<body>{inner}</body></html>\n"
    return page.encode()


def _redirect(location: str, status: int = 302, cookies: list[str] | None = None) -> Reply:
    headers = [("Location", location)] + [("Set-Cookie", c) for c in cookies or []]
    return Reply(status, _html("Found", f'<a href="{location}">Found</a>.'), headers=headers)


class DexGate:
    """oauth2-proxy + Dex in front of the API; every access holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configure()

    def configure(
        self,
        *,
        users: dict[str, dict[str, str]] | None = None,
        session_seconds: float = COOKIE_EXPIRE,
        api_routes: bool = True,
        skip_provider_button: bool = False,
        session_requests: int | None = None,
    ) -> None:
        """Users per connector (``local`` static passwords, ``ldap``), session lifetime,
        and oauth2-proxy's ``api_routes`` / ``skip_provider_button`` (both off: an API
        request without a session is a 302 to the login page). ``session_requests``: a
        session expires after serving that many requests (a long wait's expiry, counted
        in requests as :class:`~.server.Schedule` counts polls, so no test sleeps)."""
        with self.lock:
            self.users = {k: dict(v) for k, v in (users or DEFAULT_USERS).items()}
            self.session_seconds = float(session_seconds)
            self.api_routes = bool(api_routes)
            self.skip_provider_button = bool(skip_provider_button)
            self.session_requests = session_requests
            self.sessions: dict[str, tuple[str, float, int]] = {}
            self.auth_requests: dict[str, dict[str, str]] = {}
            self.codes: dict[str, tuple[str, str]] = {}
            self.logins = 0
            self.failed_logins = 0
            self.refused = 0

    def expire_sessions(self) -> None:
        """Every session cookie issued so far is expired (24 h passed)."""
        with self.lock:
            self.sessions.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "logins": self.logins,
                "failed_logins": self.failed_logins,
                "refused": self.refused,
                "sessions": len(self.sessions),
            }

    # -- requests ----------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, raw: bytes) -> Reply | None:
        """The gate's answer, or ``None`` to let an authenticated request through."""
        url = urlsplit(target)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        cookies = SimpleCookie()
        for header in headers.get_all("Cookie") or []:
            cookies.load(header)
        with self.lock:
            if path.startswith("/dex/"):  # skip_auth_routes = ["^/dex/"]
                return self._dex(method, path, query, raw)
            if path == "/oauth2/start":
                return self._start(query.get("rd") or "/")
            if path == REDIRECT_URI:
                return self._callback(query, cookies)
            session = cookies.get(COOKIE_NAME)
            if session is not None:
                entry = self.sessions.get(session.value)
                if entry is not None and entry[1] > time.time():
                    user, expires, used = entry
                    if self.session_requests is None or used < self.session_requests:
                        self.sessions[session.value] = (user, expires, used + 1)
                        return None
            self.refused += 1
            if self.api_routes and API_ROUTES.search(path):
                # oauthproxy.go: isAPIPath -> errorJSON(rw, 401)
                return Reply(401, b"{}", "application/json")
            if self.skip_provider_button:
                return self._start(target)
            # oauthproxy.go SignInPage(rw, req, http.StatusForbidden)
            form = (
                '<form method="GET" action="/oauth2/start">'
                f'<input type="hidden" name="rd" value="{target}">'
                "<button type=submit>Sign in with Dex</button></form>"
            )
            return Reply(403, _html("Sign In", form))

    def _start(self, rd: str) -> Reply:
        """``OAuthStart``: CSRF cookie, then the provider's login URL (``login_url``)."""
        nonce = secrets.token_urlsafe(16)
        query = urlencode(
            {
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "response_type": "code",
                "scope": "profile email groups openid",
                "state": f"{nonce}:{rd}",
            }
        )
        csrf = f"{CSRF_COOKIE}={nonce}; Path=/; Max-Age=900; HttpOnly; SameSite=Lax"
        return _redirect(f"/dex/auth?{query}", cookies=[csrf])

    def _callback(self, query: dict[str, str], cookies: SimpleCookie) -> Reply:
        """``OAuthCallback``: redeem the code, check the CSRF nonce, set the session."""
        code = self.codes.pop(query.get("code", ""), None)
        nonce, _, rd = query.get("state", "").partition(":")
        csrf = cookies.get(CSRF_COOKIE)
        if csrf is None or csrf.value != nonce:
            return Reply(
                403,
                _html(
                    "Error", "Login Failed: Unable to find a valid CSRF token. Please try again."
                ),
            )
        if code is None:
            return Reply(500, _html("Error", "Internal Server Error"))
        value = secrets.token_urlsafe(48)
        self.sessions[value] = (code[0], time.time() + self.session_seconds, 0)
        self.logins += 1
        expires = time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + self.session_seconds)
        )
        session = f"{COOKIE_NAME}={value}; Path=/; Expires={expires}; HttpOnly; SameSite=Lax"
        clear = f"{CSRF_COOKIE}=; Path=/; Max-Age=0"
        return _redirect(rd if rd.startswith("/") else "/", cookies=[session, clear])

    def _dex(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Reply:
        """Dex ``server/handlers.go``: connector choice, password login, approval."""
        if path == "/dex/auth":
            if query.get("client_id") != CLIENT_ID:
                return Reply(400, _html("Error", "Unregistered client_id."))
            if query.get("redirect_uri") != REDIRECT_URI:
                return Reply(400, _html("Error", "Unregistered redirect_uri."))
            connectors = list(self.users)
            if len(connectors) == 1:  # handleAuthorization: the only connector
                return _redirect(f"/dex/auth/{connectors[0]}?{urlencode(query)}")
            links = "".join(
                f'<a href="/dex/auth/{c}?{urlencode(query)}">Log in with {c}</a>'
                for c in connectors
            )
            return Reply(200, _html("Log In", links))
        if m := re.fullmatch(r"/dex/auth/([^/]+)", path):
            connector = m.group(1)
            if connector not in self.users:
                return Reply(404, _html("Error", "Requested resource does not exist."))
            request_id = secrets.token_hex(13)
            self.auth_requests[request_id] = {
                "connector": connector,
                "state": query.get("state", ""),
                "redirect_uri": query.get("redirect_uri", REDIRECT_URI),
            }
            return _redirect(f"/dex/auth/{connector}/login?state={request_id}&back=")
        if m := re.fullmatch(r"/dex/auth/([^/]+)/login", path):
            request = self.auth_requests.get(query.get("state", ""))
            if request is None or request["connector"] != m.group(1):
                return Reply(400, _html("Error", "Login session expired."))
            action = f"{path}?state={quote(query['state'])}&back="
            form = (
                f'<form method="post" action="{action}">'
                '<input name="login" type="text"><input name="password" type="password">'
                "<button type=submit>Login</button></form>"
            )
            if method == "GET":
                return Reply(200, _html("Log In", form))
            fields = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            login, password = fields.get("login", ""), fields.get("password", "")
            if self.users[request["connector"]].get(login) != password:
                self.failed_logins += 1
                return Reply(200, _html("Log In", "Invalid Email Address and password." + form))
            request["user"] = login
            return _redirect(f"/dex/approval?req={query['state']}&hmac=x", status=303)
        if path == "/dex/approval":
            request = self.auth_requests.pop(query.get("req", ""), None)
            if request is None or "user" not in request:
                return Reply(400, _html("Error", "Login session expired."))
            code = secrets.token_hex(13)
            self.codes[code] = (request["user"], request["state"])
            target = (
                f"{request['redirect_uri']}?{urlencode({'code': code, 'state': request['state']})}"
            )
            return _redirect(target, status=303)  # skipApprovalScreen: sendCodeResponse
        return Reply(404, _html("Error", "Requested resource does not exist."))


def control(gate: DexGate, method: str, path: str, body: dict[str, Any]) -> Any:
    """``/_standin/dex/...``: configure, expire sessions, counts."""
    if method == "POST" and path == "/configure":
        gate.configure(**body)
        return {}
    if method == "POST" and path == "/expire":
        gate.expire_sessions()
        return {}
    if method == "GET" and path == "/stats":
        return gate.stats()
    raise LookupError(f"unknown control endpoint {method} /dex{path}")
