"""Profile ``iap``: Google Identity-Aware Proxy in front of the KFP API (Kubeflow on GKE).

A claim about Google's IAP documentation ("Programmatic authentication",
cloud.google.com/iap/docs/authentication-howto) and how IAP answers:

- a programmatic caller sends a Google-issued OIDC ID token whose ``aud`` claim is
  the OAuth client id of the IAP-secured resource, in ``Authorization: Bearer`` or
  ``Proxy-Authorization: Bearer``;
- a request without credentials is sent to the Google sign-in (a 302 to
  ``accounts.google.com``), as a browser would be;
- a token IAP cannot use is HTTP 401 with a plain-text reason starting
  ``Invalid IAP credentials:``; a wrong audience reads "JWT audience doesn't match
  this application ('aud' claim (X) doesn't match expected value (Y))" (the text
  users report, e.g. GoogleCloudPlatform/professional-services issue #603); an
  OAuth *access* token (not a JWT) is refused the same way;
- an accepted request reaches the backend with ``x-goog-authenticated-user-email:
  accounts.google.com:<email>`` (cloud.google.com/iap/docs/identity-howto), the
  identity header and prefix KFP's API server reads by default
  (kubeflow/pipelines ``backend/src/apiserver/common/const.go``).

ID tokens are minted by the stand-in's Google-style token endpoint (the
``token_uri`` of :func:`~kfp_bridge.testing.kfp_api.server.write_google_credentials`):
google-auth's ``service_account.IDTokenCredentials`` posts a JWT assertion with a
``target_audience`` claim and reads ``id_token`` from the answer
(``google/oauth2/_client.py`` ``id_token_jwt_grant``). The stand-in signs them with
its own secret (HMAC) and IAP checks that signature, as IAP checks Google's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

CLIENT_ID = "standin-iap.apps.googleusercontent.com"
ISSUER = "https://accounts.google.com"
USER_HEADER = "x-goog-authenticated-user-email"
USER_PREFIX = "accounts.google.com:"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified; ``None`` when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


class IapGate:
    """IAP in front of the API; every access holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self.configure()

    def configure(self, *, client_id: str = CLIENT_ID, token_seconds: int = 3600) -> None:
        with self.lock:
            self.client_id = client_id
            self.token_seconds = int(token_seconds)
            self.minted = 0
            self.refused: list[str] = []

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"minted": self.minted, "refused": list(self.refused)}

    def mint(self, audience: str, email: str) -> str:
        """A Google-style ID token for ``audience`` (the token endpoint's answer)."""
        now = int(time.time())
        with self.lock:
            self.minted += 1
            lifetime = self.token_seconds
        header = {"alg": "HS256", "kid": "standin", "typ": "JWT"}
        claims = {
            "aud": audience,
            "azp": email,
            "email": email,
            "email_verified": True,
            "exp": now + lifetime,
            "iat": now,
            "iss": ISSUER,
            "sub": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
        }
        signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{signed}.{_b64(hmac.new(self._key, signed.encode(), 'sha256').digest())}"

    def token_response(self, raw: bytes) -> dict[str, Any] | None:
        """An ``{"id_token": ...}`` answer when the grant's assertion asks for an audience."""
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        claims = jwt_claims(form.get("assertion", ""))
        if not claims or not claims.get("target_audience"):
            return None
        return {"id_token": self.mint(claims["target_audience"], claims.get("iss", ""))}

    def check(self, headers: Any) -> tuple[int, bytes, str, list[tuple[str, str]]] | None:
        """``None`` when the request may pass; else the answer IAP gives."""
        header = headers.get("Authorization") or headers.get("Proxy-Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            query = urlencode(
                {"client_id": self.client_id, "response_type": "code", "scope": "openid email"}
            )
            location = f"https://accounts.google.com/o/oauth2/v2/auth?{query}"
            return 302, b"", "text/html; charset=UTF-8", [("Location", location)]
        reason = self._reason(token.strip())
        if reason is None:
            claims = jwt_claims(token.strip()) or {}
            del headers[USER_HEADER]  # IAP sets the header itself; a caller's copy is dropped
            headers[USER_HEADER] = f"{USER_PREFIX}{claims.get('email', '')}"
            return None
        with self.lock:
            self.refused.append(reason)
        body = f"Invalid IAP credentials: {reason}".encode()
        return 401, body, "text/html; charset=UTF-8", []

    def _reason(self, token: str) -> str | None:
        claims = jwt_claims(token)
        if claims is None:
            return "Unable to parse JWT"
        signed, _, signature = token.rpartition(".")
        expected = _b64(hmac.new(self._key, signed.encode(), "sha256").digest())
        if not hmac.compare_digest(signature, expected):
            return "JWT signature is invalid"
        if int(claims.get("exp", 0)) <= time.time():
            return "Expired JWT"
        if claims.get("aud") != self.client_id:
            return (
                "JWT audience doesn't match this application ('aud' claim "
                f"({claims.get('aud')}) doesn't match expected value ({self.client_id}))"
            )
        return None


def control(gate: IapGate, method: str, path: str, body: dict[str, Any]) -> Any:
    """``/_standin/iap/...``: configure, mint a token, counts."""
    if method == "POST" and path == "/configure":
        gate.configure(**body)
        return {}
    if method == "POST" and path == "/mint":
        return {"id_token": gate.mint(body["audience"], body.get("email", "standin@example.com"))}
    if method == "GET" and path == "/stats":
        return gate.stats()
    raise LookupError(f"unknown control endpoint {method} /iap{path}")
