"""Google's token, IAM, GCS and Vertex REST endpoints, answered in-process and recorded.

The real google-auth, google-cloud-storage and GAPIC REST clients make the calls
(through ``requests``); ``responses`` answers them and records which identity each
one carried. The KFP stand-in is reached through urllib3 and is not intercepted: it
records its own ``Authorization`` headers. Answers follow the services' wire
formats, as the real clients parse them:

- OAuth 2.0 token endpoint (service-account JWT grant, RFC 6749 section 5.1):
  ``{"access_token", "expires_in", "token_type"}`` (``google/oauth2/_client.py``
  ``_handle_refresh_grant_response``);
- IAM Credentials ``projects/-/serviceAccounts/{sa}:generateAccessToken``:
  ``{"accessToken", "expireTime"}`` with ``expireTime`` as ``%Y-%m-%dT%H:%M:%SZ``
  (``google/auth/impersonated_credentials.py`` ``_make_iam_token_request``; IAM
  Credentials API reference);
- IAM Credentials ``projects/-/serviceAccounts/{sa}:generateIdToken``: ``{"token"}``, a
  JWT whose ``exp`` google-auth reads (``impersonated_credentials.IDTokenCredentials``);
  ``id_token_minter(audience, email)`` signs it (e.g. the KFP stand-in's IAP);
- Cloud Storage JSON API media download ``/download/storage/v1/b/{b}/o/{o}?alt=media``
  and its errors ``{"error": {"code", "message", "errors": [{"reason"}]}}``
  (cloud.google.com/storage/docs/json_api/v1/status-codes; the client turns them into
  ``google.api_core.exceptions.NotFound``/``Forbidden``);
- Vertex AI REST ``GET v1/projects/{p}/locations/{l}/pipelineJobs[/{id}]``: a
  PipelineJob (or a list of them) in the ``aiplatform_v1`` message's JSON form, which
  the GAPIC REST transport parses; an unknown job is a 404 ``{"error": {...}}``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import responses
from google.auth import _helpers

TOKEN_URI = "https://oauth2.googleapis.com/token"
IAM_GENERATE = re.compile(
    r"https://iamcredentials\.googleapis\.com/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken"
)
IAM_GENERATE_ID = re.compile(
    r"https://iamcredentials\.googleapis\.com/v1/projects/-/serviceAccounts/([^/:]+):generateIdToken"
)
GCS_MEDIA = re.compile(r"https://storage\.googleapis\.com/download/storage/v1/b/([^/]+)/o/([^?]+)")
VERTEX = re.compile(r"https://([a-z0-9-]+)-aiplatform\.googleapis\.com(?::443)?/v1/(.*)")

_KEY_CACHE: dict[str, str] = {}


def service_account_key(email: str, project: str) -> dict[str, str]:
    """A service-account key file (real RSA key) whose token endpoint is Google's."""
    if "pem" not in _KEY_CACHE:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _KEY_CACHE["pem"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "k1",
        "private_key": _KEY_CACHE["pem"],
        "client_email": email,
        "client_id": "1",
        "token_uri": TOKEN_URI,
    }


def google_connection(
    key: dict[str, str] | None = None, **extra: Any
) -> str:  # AIRFLOW_CONN_* JSON form
    """A ``google_cloud_platform`` connection; ``keyfile_dict`` as the connection form stores it."""
    fields = dict(extra)
    if key is not None:
        fields["keyfile_dict"] = json.dumps(key)
    return json.dumps({"conn_type": "google_cloud_platform", "extra": fields})


@dataclass
class Call:
    method: str
    url: str
    authorization: str | None
    body: Any = None


@dataclass
class GoogleApis:
    """The recorded calls and the knobs of the answers."""

    # Seconds an impersonated token stays *valid* for google-auth (it treats a token as
    # expired REFRESH_THRESHOLD before expireTime); short values force refreshes.
    impersonated_valid_seconds: float = 3600.0
    refuse_impersonation: bool = False  # IAM answers 403 (no Token Creator role)
    objects: dict[str, bytes] = field(default_factory=dict)  # "bucket/name" -> content
    forbidden: set[str] = field(default_factory=set)  # "bucket/name" refused with 403
    vertex_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job name -> JSON
    id_token_minter: Any = None  # (audience, email) -> ID token, for generateIdToken
    calls: list[Call] = field(default_factory=list)
    _source_tokens: int = 0
    _impersonated_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, pattern: str) -> list[Call]:
        return [c for c in self.calls if re.search(pattern, c.url)]

    # -- answers -----------------------------------------------------------------------
    def _record(self, request: Any) -> None:
        body = request.body
        if isinstance(body, bytes):
            body = body.decode()
        with contextlib.suppress(ValueError):  # the OAuth JWT grant is form-encoded
            body = json.loads(body) if body else None
        with self._lock:
            self.calls.append(
                Call(request.method, request.url, request.headers.get("Authorization"), body)
            )

    def _token(self, request: Any):
        self._record(request)
        with self._lock:
            self._source_tokens += 1
            token = f"source-token-{self._source_tokens}"
        return (
            200,
            {},
            json.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}),
        )

    def _generate(self, request: Any):
        self._record(request)
        if self.refuse_impersonation:
            message = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource"
            error = {"code": 403, "message": message, "status": "PERMISSION_DENIED"}
            return 403, {}, json.dumps({"error": error})
        with self._lock:
            self._impersonated_tokens += 1
            token = f"impersonated-{self._impersonated_tokens}"
        lifetime = _helpers.REFRESH_THRESHOLD + dt.timedelta(
            seconds=self.impersonated_valid_seconds
        )
        expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + lifetime
        body = {"accessToken": token, "expireTime": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return 200, {}, json.dumps(body)

    def _generate_id(self, request: Any):
        self._record(request)
        email = IAM_GENERATE_ID.match(request.url).group(1)
        audience = json.loads(request.body)["audience"]
        return 200, {}, json.dumps({"token": self.id_token_minter(audience, email)})

    def _gcs(self, request: Any):
        self._record(request)
        bucket, name = GCS_MEDIA.match(request.url).groups()
        key = f"{bucket}/{unquote(name)}"
        if key in self.forbidden:
            return _gcs_error(403, f"caller does not have storage.objects.get access to {key}.")
        if key not in self.objects:
            return _gcs_error(404, f"No such object: {key}")
        return 200, {"Content-Type": "application/octet-stream"}, self.objects[key]

    def _vertex(self, request: Any):
        self._record(request)
        _region, path = VERTEX.match(request.url.split("?")[0]).groups()
        if request.method == "GET" and path in self.vertex_jobs:
            return 200, {}, json.dumps(self.vertex_jobs[path])
        if request.method == "GET" and path.endswith("/pipelineJobs"):
            return 200, {}, json.dumps({"pipelineJobs": list(self.vertex_jobs.values())})
        error = {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}
        return 404, {}, json.dumps({"error": error})


def _gcs_error(code: int, message: str):
    reason = {403: "forbidden", 404: "notFound"}[code]
    body = {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return code, {"Content-Type": "application/json"}, json.dumps(body)


@contextlib.contextmanager
def google_apis(**knobs: Any) -> Iterator[GoogleApis]:
    """Answer Google's endpoints for the duration; everything else (loopback) passes through."""
    apis = GoogleApis(**knobs)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost)[:/]"))
        mock.add_callback(responses.POST, TOKEN_URI, callback=apis._token)
        mock.add_callback(responses.POST, IAM_GENERATE, callback=apis._generate)
        mock.add_callback(responses.POST, IAM_GENERATE_ID, callback=apis._generate_id)
        mock.add_callback(responses.GET, GCS_MEDIA, callback=apis._gcs)
        mock.add_callback(responses.GET, VERTEX, callback=apis._vertex)
        yield apis
