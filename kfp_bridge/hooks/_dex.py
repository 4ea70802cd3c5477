"""``auth=dex``: log in to Kubeflow's ingress (oauth2-proxy + Dex) with a user and password.

The steps are those of the Kubeflow docs' ``KFPClientManager``
(kubeflow/website ``content/en/docs/components/pipelines/user-guides/core-functions/
connect-api.md``, "Kubeflow Platform - Outside the Cluster"), which hands the resulting
cookies to ``kfp.Client(cookies=...)``:

1. GET the API URL: a 403 is oauth2-proxy's sign-in page, so start the flow at
   ``/oauth2/start?rd=<path>``; a redirect leads to Dex; no redirect means the
   endpoint needs no login;
2. at ``.../auth`` (Dex lists its connectors) pick ``/auth/<connector>`` (``local``
   for static passwords, ``ldap``);
3. at ``.../auth/<connector>/login`` POST the form fields ``login`` and ``password``;
   no redirect afterwards means Dex refused them;
4. at ``.../approval`` POST ``approval=approve`` (only when the approval screen is on);
5. the cookies the session collected (``oauth2_proxy_kubeflow``) are the login.

Unlike the sample, a session here is renewed: the backend calls :meth:`DexSession.renew`
when the ingress refuses the cookie (expired after ``cookie_expire``, 24 h in
kubeflow/manifests ``common/oauth2-proxy/base/oauth2_proxy.cfg``). The password and
the cookie never reach a log: every new cookie goes to ``on_secret`` (the hook passes
Airflow's ``mask_secret``), and errors name the user and URL only.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from kfp_bridge.exceptions import AuthError, TransientBackendError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

CONNECTORS = ("local", "ldap")


class DexSession:
    """A Dex login kept as a cookie; :class:`~kfp_bridge.backends._ingress_auth.CookieSession`.

    :param url: the KFP endpoint behind the ingress (the connection's host).
    :param username: the Dex user (connection login), e.g. ``user@example.com``.
    :param password: its password (connection password).
    :param connector: the Dex connector when Dex offers several: ``local`` or ``ldap``.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        connector: str = "local",
        verify_ssl: bool = True,
        timeout: float = 30.0,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        if connector not in CONNECTORS:
            raise ValueError(f"connector must be one of {', '.join(CONNECTORS)}, got {connector!r}")
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.connector = connector
        self.verify_ssl = verify_ssl
        self.timeout = timeout
        self._on_secret = on_secret
        self._lock = threading.Lock()
        self._cookie: str | None = None
        self.logins = 0

    def __repr__(self) -> str:  # never shows the password or the cookie
        return f"DexSession(url={self.url!r}, username={self.username!r})"

    def cookie(self) -> str:
        with self._lock:
            if self._cookie is None:
                self._cookie = self._login()
            return self._cookie

    def renew(self, stale: str) -> None:
        with self._lock:
            if self._cookie == stale:  # another thread may have logged in already
                self._cookie = None

    # -- the login flow ------------------------------------------------------------
    def _login(self) -> str:
        import requests

        try:
            cookie = self._flow(requests.Session())
        except requests.RequestException as err:
            raise TransientBackendError(
                f"Dex login at {self.url} failed on the way: {type(err).__name__}: {err}"
            ) from err
        self.logins += 1
        log.info("Logged in to %s through Dex as %s", self.url, self.username)
        return cookie

    def _get(self, session: requests.Session, url: str) -> requests.Response:
        return session.get(url, allow_redirects=True, verify=self.verify_ssl, timeout=self.timeout)

    def _flow(self, session: requests.Session) -> str:
        resp = self._get(session, self.url)
        if resp.status_code == 403:
            # oauth2-proxy's sign-in page (skip_provider_button = false): start the flow
            parts = urlsplit(resp.url)
            start = parts._replace(path="/oauth2/start", query=urlencode({"rd": parts.path}))
            resp = self._get(session, start.geturl())
        elif resp.status_code != 200:
            raise AuthError(
                f"Dex login: GET {self.url} answered HTTP {resp.status_code} "
                "(expected the ingress's login page)"
            )
        if not resp.history:
            log.warning("%s asked for no login (auth=dex): sending no cookie", self.url)
            return ""
        parts = urlsplit(resp.url)
        if re.search(r"/auth$", parts.path):  # Dex lists its connectors: pick ours
            parts = parts._replace(path=f"{parts.path}/{self.connector}")
        if re.search(r"/auth/[^/]+/login$", parts.path):
            login_url = parts.geturl()
        else:
            resp = self._get(session, parts.geturl())
            if resp.status_code != 200:
                raise AuthError(
                    f"Dex login: the {self.connector} connector's page answered HTTP "
                    f"{resp.status_code} (is connector {self.connector!r} enabled in Dex?)"
                )
            login_url = resp.url
        resp = session.post(
            login_url,
            data={"login": self.username, "password": self._password},
            allow_redirects=True,
            verify=self.verify_ssl,
            timeout=self.timeout,
        )
        if not resp.history or re.search(r"/auth/[^/]+/login$", urlsplit(resp.url).path):
            # Dex answers a wrong password with its form again (HTTP 200, no redirect); what
            # the upstream answers at the end of the redirects (the UI, a 404) does not matter
            raise AuthError(
                f"Dex refused the login of user {self.username!r} at {self.url} "
                f"(HTTP {resp.status_code}): check the connection's login and password "
                f"and the Dex connector ({self.connector})"
            )
        if re.search(r"/approval$", urlsplit(resp.url).path):
            resp = session.post(
                resp.url,
                data={"approval": "approve"},
                allow_redirects=True,
                verify=self.verify_ssl,
                timeout=self.timeout,
            )
        jar = session.cookies
        if not any(c.value for c in jar):
            raise AuthError(
                f"Dex login of user {self.username!r} at {self.url} ended without a session "
                "cookie (is this a Kubeflow ingress with oauth2-proxy?)"
            )
        for c in jar:
            if c.value and self._on_secret is not None:
                self._on_secret(c.value)
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar if c.value)
        if self._on_secret is not None:
            self._on_secret(cookie)
        return cookie
