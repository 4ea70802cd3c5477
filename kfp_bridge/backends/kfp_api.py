"""KFP REST API v2beta1 backend (AI Platform Pipelines, Kubeflow), via ``kfp-server-api``.

The generated client installs beside Airflow, unlike the ``kfp`` SDK, so this
module rebuilds the few things ``kfp.Client`` does around it: the request body
for a run from a compiled pipeline (pipeline spec plus optional kfp-kubernetes
platform spec, caching override), experiment lookup/creation by name, a fresh
bearer token per request, and the run page URL. Every service error is mapped
to the bridge's exceptions so callers can tell retryable from final.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import kfp_server_api
import urllib3
from kfp_server_api.exceptions import ApiException, ApiValueError

from kfp_bridge import run_report
from kfp_bridge.backends import _ingress_auth, argo_pods, kfp_failures, kfp_models, kfp_topology
from kfp_bridge.backends.base import (
    Backend,
    FailedTask,
    RunRequest,
    RunState,
    RunStatus,
    positive_seconds,
)
from kfp_bridge.exceptions import (
    ApiVersionError,
    AuthError,
    BackendConfigError,
    BackendError,
    BadInputError,
    PipelineNotFoundError,
    RetryRefusedError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.failures import parse_failure

log = logging.getLogger(__name__)

TokenProvider = Callable[[], str]
"""Returns a bearer token; called before every request, so it must cache and refresh."""

_LIST_PAGE_SIZE = 100
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NO_V2BETA1 = "this KFP API has no v2beta1 endpoints (KFP < 2.0?)"
DEFAULT_USER_HEADER = "kubeflow-userid"  # what Kubeflow's multi-user manifests configure
_LOG_READ_LIMIT = 16 * 1024 * 1024  # bytes of one pod log read at most (only the tail is kept)
T = TypeVar("T")
# HTTP 500s that name bad input, as kubeflow/pipelines backend/src/apiserver sends them at
# 2.5.0, 2.14.0 and master: UserError.GRPCStatus puts the whole wrapped chain in the message
# (common/util/error.go), and NewInternalServerError turns a wrapped input error into a 500.
# - "Invalid input error" (NewInvalidInputError) inside a 500: resource/resource_manager.go,
#   CreateRun's manifest fetch ("...with an empty pipeline spec manifest"), and
#   server/api_converter.go ("Run name cannot be empty", "Experiment must have a non-empty
#   name"; from 2.15 validation/length.go's "<Type>.<Field> length cannot exceed <N>");
# - "InvalidInputError" (NewInvalidInputErrorWithDetails): an invalid inline spec, "...with an
#   invalid pipeline spec manifest: InvalidInputError: ...: pipeline spec is invalid";
# - "ResourceNotFoundError" of a pipeline (version) lookup inside that manifest fetch;
# - "Data too long for column" (MySQL error 1406 through storage/*_store.go, up to 2.14);
# - "Failed to compile job" (template/v2_template.go) and "Failed to validate workflow for"
#   (resource_manager.go): the same spec compiles and validates the same way every time;
# - "Experiment's namespace was not found" (resource_manager.go, multi-user).
# Not listed on purpose: "Failed to create a workflow for" also wraps transient Kubernetes
# errors. The exact messages are the cases of tests/bridge/test_kfp_backend.py.
_BAD_INPUT_500 = re.compile(
    r"Invalid input error|InvalidInputError|ResourceNotFoundError|"
    r"(invalid|empty) pipeline spec (manifest|source)|length cannot exceed|"
    r"Data too long for column|Failed to compile job|Failed to validate workflow for|"
    r"Experiment's namespace was not found"
)


def static_token_provider(token: str) -> TokenProvider:
    """A fixed bearer token (Kubeflow service-account or Dex token)."""
    if not token:
        raise AuthError("auth=token needs a token (the connection's password field is empty)")
    return lambda: token


def google_token_provider(credentials: Any) -> TokenProvider:
    """Bearer tokens from Google credentials (AI Platform Pipelines behind its inverse proxy).

    The credentials come from a Google Cloud connection (``kfp_bridge.hooks.google_cloud``),
    impersonated when asked. They are refreshed only when google-auth no longer
    considers them valid (a few minutes before expiry), so a long wait refreshes
    as often as the token lifetime needs and no more; a lock keeps concurrent
    requests from refreshing at the same time.
    """
    import google.auth.transport.requests

    lock = threading.Lock()
    request = google.auth.transport.requests.Request()

    def provide() -> str:
        with lock:
            if not credentials.valid:
                credentials.refresh(request)
            return credentials.token

    return provide


def _endpoint(
    setting: str,
    value: str | None,
    *,
    scheme: str | None = None,
    port: int | None = None,
    explicit_scheme: bool = False,
) -> str:
    """An http(s) base URL; a bare host gets ``scheme`` (http/https, default https) and ``port``."""
    text = (value or "").strip()
    if not text:
        raise BackendConfigError(setting, "is empty (the KFP API endpoint)")
    if "://" not in text and not explicit_scheme:
        text = f"{scheme if scheme in ('http', 'https') else 'https'}://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendConfigError(setting, f"must be an http(s) URL, got {value!r}")
    try:
        explicit_port = parts.port
    except ValueError:  # urllib's own words: "Port could not be cast to integer value ..."
        explicit_port = None
        bad_port = True
    else:
        bad_port = parts.netloc.endswith(":")  # "host:" parses as no port at all
    if bad_port:
        raise BackendConfigError(
            setting, f"has a ':' after the host but no port number, got {value!r}"
        )
    if port and explicit_port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    return urlunsplit(parts).rstrip("/")


def _server_message(err: ApiException) -> str:
    """The message of a grpc-gateway error body, or the start of whatever was sent."""
    body = err.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            return body.strip()[:300]
        if isinstance(data, dict):
            return str(data.get("message") or data.get("error") or data)[:1000]
        return str(data)[:300]
    return str(err.reason or "no message")


class KfpApiBackend(Backend):
    """Runs compiled pipelines on a KFP API server (REST API v2beta1).

    ``host`` is an http(s) URL, or a bare host that ``scheme`` (default https) and
    ``port`` complete. ``token_provider`` is called before every request (see
    :func:`google_token_provider`, :func:`static_token_provider`); ``namespace``
    is the Kubeflow profile namespace in multi-user mode; ``user`` is sent in the
    identity header ``user_header`` (default ``kubeflow-userid``), as in-cluster
    callers of ``ml-pipeline.kubeflow:8888`` do; ``ui_host`` is where run links
    point when the UI is not served from the API host.
    """

    name = "kfp"

    def __init__(
        self,
        host: str,
        *,
        scheme: str | None = None,
        port: int | None = None,
        token_provider: TokenProvider | None = None,
        namespace: str | None = None,
        ui_host: str | None = None,
        verify_ssl: bool = True,
        request_timeout: float | str = 30.0,
        user: str | None = None,
        user_header: str | None = None,
        cookie_session: _ingress_auth.CookieSession | None = None,
        token_source: str | None = None,
    ) -> None:
        self.host = _endpoint("host", host, scheme=scheme, port=port)
        # a provider that can renew (``invalidate``): one renewal and retry after a 401
        self._token_source = token_source or "the connection's token"
        # an ingress login (auth=dex): its cookie on every call, a new login when refused
        self._cookie_session = cookie_session
        self.namespace = namespace or None
        self.ui_host = _endpoint("ui_host", ui_host, explicit_scheme=True) if ui_host else self.host
        self.request_timeout = positive_seconds("request_timeout", request_timeout)
        self._token_provider = token_provider
        self._experiment_ids: dict[str, str] = {}
        self._experiment_lock = threading.Lock()
        self._api_log_route = True  # False once the host answers it with a non-JSON 404

        config = kfp_server_api.Configuration(host=self.host)
        config.verify_ssl = verify_ssl
        # No hidden urllib3 retries: a retried POST could start a second run, and
        # the trigger already retries transient errors within its own budget.
        config.retries = False
        if token_provider is not None:
            config.api_key["authorization"] = ""
            config.api_key_prefix["authorization"] = "Bearer"
            config.refresh_api_key_hook = self._refresh_token
        if user_header and not user:
            raise BackendConfigError("user", "is empty but user_header is set")
        self.user = user or None
        self.user_header = (user_header or DEFAULT_USER_HEADER) if user else None
        self._api_client = kfp_models.ApiClient(
            config,
            header_name=(user_header or DEFAULT_USER_HEADER) if user else None,
            header_value=user or None,
        )
        self._pipelines = kfp_server_api.PipelineServiceApi(self._api_client)
        self._runs = kfp_server_api.RunServiceApi(self._api_client)
        self._experiments = kfp_server_api.ExperimentServiceApi(self._api_client)

    def __repr__(self) -> str:  # never shows the token
        return (
            f"KfpApiBackend(host={self.host!r}, namespace={self.namespace!r}, user={self.user!r})"
        )

    # -- plumbing ----------------------------------------------------------
    def _refresh_token(self, config: kfp_server_api.Configuration) -> None:
        assert self._token_provider is not None
        token = self._token_provider()
        if not token:
            raise AuthError("the token provider returned an empty bearer token")
        config.api_key["authorization"] = token

    def _session_cookie(self) -> str | None:
        """Put the ingress session's cookie on the client; the value sent (``None``: no session)."""
        if self._cookie_session is None:
            return None
        cookie = self._cookie_session.cookie()
        self._api_client.cookie = cookie or None
        return cookie

    def _token_refused(self, err: ApiException) -> bool:
        """A 401 to a renewable token: renew it (the caller retries once).

        Safe to retry, a POST too: the API server authenticates before it acts
        (``resource/resource_manager.go`` ``IsAuthorized`` first in every handler), so a
        refused request changed nothing. A token can be refused before its stated expiry:
        revoked (its service account or bound pod deleted, which TokenReview checks,
        kubernetes ``pkg/serviceaccount/claims.go``) or rotated unseen.
        """
        renew = getattr(self._token_provider, "invalidate", None)
        if err.status != 401 or renew is None:
            return False
        log.info(
            "KFP API at %s refused the token (HTTP 401): renewing it (%s) and retrying once",
            self.host,
            self._token_source,
        )
        renew()
        return True

    def _session_refused(self, sent: str | None, err: ApiException) -> bool:
        """The ingress wants a new login: renew the session (the caller retries once).

        Safe to retry: the ingress answered, so the API server never saw the request.
        """
        if sent is None or not _ingress_auth.login_challenge(err.status, err.headers, err.body):
            return False
        log.info(
            "The ingress of %s refused the session (HTTP %s): logging in again",
            self.host,
            err.status,
        )
        self._cookie_session.renew(sent)  # type: ignore[union-attr]
        return True

    def _call(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        run_scoped: bool = False,
        relogin: bool = True,
        **kwargs: Any,
    ) -> T:
        """Call the generated client and translate every failure into the bridge's errors.

        ``run_scoped``: a JSON 404 means "this object does not exist" (``RunNotFoundError``).
        ``relogin``: with an ingress session, one new login when the ingress refuses it;
        with a renewable token (service-account token file or TokenRequest), one new
        token when the API server answers 401.
        """
        kwargs["_request_timeout"] = (self.request_timeout, self.request_timeout)
        try:
            sent = self._session_cookie()
            return fn(*args, **kwargs)
        except ApiException as err:
            if relogin and self._session_refused(sent, err):
                return self._call(what, fn, *args, run_scoped=run_scoped, relogin=False, **kwargs)
            if relogin and self._token_refused(err):
                try:
                    return self._call(
                        what, fn, *args, run_scoped=run_scoped, relogin=False, **kwargs
                    )
                except AuthError as again:
                    cause = again.__cause__
                    if not isinstance(cause, ApiException) or cause.status != 401:
                        raise
                    raise AuthError(
                        f"{what}: KFP API at {self.host} refused a renewed token too (HTTP 401 "
                        f"twice; the token came from {self._token_source}): "
                        f"{_server_message(cause)}. The service account's token is revoked, "
                        "or lacks the audience pipelines.kubeflow.org: check the connection's "
                        "auth settings."
                    ) from None
            raise self._map_api_error(what, err, run_scoped) from err
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            raise TransientBackendError(
                f"{what}: KFP API at {self.host} unreachable or too slow "
                f"({type(err).__name__}: {err})"
            ) from err
        except (AuthError, BackendError, TransientBackendError):
            raise
        except ApiValueError as err:
            raise BackendError(f"{what}: invalid request: {err}") from err
        except Exception as err:
            mapped = _map_google_auth_error(what, err)
            if mapped is None:
                raise
            raise mapped from err

    def _map_api_error(self, what: str, err: ApiException, run_scoped: bool) -> Exception:
        status = err.status or 0
        message = _server_message(err)
        if status == 0:  # the client's own SSL failure
            return BackendError(
                f"{what}: TLS error talking to {self.host}: {err.reason} "
                "(check the certificate, or verify_ssl in the connection extra)"
            )
        if kfp_topology.is_istio_denial(status, err.body):
            return kfp_topology.istio_denial_error(what, self.host, self.user)
        if status in (401, 403):
            hint = "missing or expired credentials" if status == 401 else "no access"
            return AuthError(
                f"{what}: KFP API at {self.host} answered HTTP {status} ({hint}): {message}. "
                "Check the connection's auth setting (none/token/google/dex/iap), the token, "
                "and the namespace."
            )
        if 300 <= status < 400:
            # IAP in front of AI Platform Pipelines redirects unauthenticated calls to a login page.
            return AuthError(
                f"{what}: KFP API at {self.host} answered HTTP {status} (a redirect, usually to "
                "a login page): the endpoint needs credentials; check the connection's auth "
                "setting (none/token/google/dex/iap)."
            )
        if status == 404 and _is_html(err.body):
            # A web server without this route (the KFP UI server, an ingress): not a version
            # problem, the host serves other paths (frontend/server/app.ts).
            return BackendError(
                f"{what}: {self.host} has no such route (HTTP 404 with an HTML page)"
            )
        if status == 404 and not _is_json(err.body):
            # KFP 1.x: its gateway has no v2beta1 route and answers a plain-text 404
            # (grpc-gateway v1 DefaultOtherErrorHandler); a 404 of KFP 2.x is JSON.
            return ApiVersionError(
                f"{what}: {NO_V2BETA1}: {self.host} answered HTTP 404 {message!r}"
            )
        if status == 404 and run_scoped:
            return RunNotFoundError(f"{what}: not found on {self.host}: {message}")
        if status == 500 and _BAD_INPUT_500.search(message):
            return BadInputError(
                f"{what}: KFP API refused the request (HTTP 500 naming bad input; retrying "
                f"cannot help): {message}"
            )
        if status in _TRANSIENT_STATUS or status >= 500:
            return TransientBackendError(f"{what}: KFP API answered HTTP {status}: {message}")
        return BackendError(f"{what}: KFP API answered HTTP {status}: {message}")

    def _status(self, run: Any, *, read_logs: bool = False) -> RunStatus:
        """A run as the bridge sees it; a FAILED one says which tasks failed.

        With ``read_logs`` the failed tasks' log tails are fetched too (bounded, and
        a failure to read them is reported, never raised): only ``get_run`` asks,
        so listing old runs for reattach reads no logs.
        """
        try:
            state = RunState(run.state or RunState.RUNTIME_STATE_UNSPECIFIED.value)
        except ValueError:
            log.warning("Unknown KFP run state %r for run %s", run.state, run.run_id)
            state = RunState.RUNTIME_STATE_UNSPECIFIED
        url = self.run_url(run.run_id)
        error, failed, failure = None, (), None
        if state is RunState.FAILED:
            details = getattr(getattr(run, "run_details", None), "task_details", None) or []
            failed = tuple(kfp_failures.failed_tasks(details))
            if read_logs:
                failed = tuple(self._with_log_tails(run.run_id, list(failed)))
            error = _failure_text(run, list(failed), url)
            # the component's verdict: in its log tail, else in the exit code the API reports
            tails = "\n".join(t.log_tail for t in failed if t.log_tail)
            failure = parse_failure(tails) or parse_failure(_run_error(run))
        elif state is not RunState.SUCCEEDED:
            error = _run_error(run)
        return RunStatus(
            run_id=run.run_id,
            display_name=run.display_name or "",
            state=state,
            url=url,
            error=error,
            created_at=run.created_at.isoformat() if run.created_at else None,
            failed_tasks=failed,
            parameters=_run_parameters(run),
            failure=failure,
        )

    def _with_log_tails(self, run_id: str, tasks: list[FailedTask]) -> list[FailedTask]:
        out = []
        for i, task in enumerate(tasks):
            if i >= kfp_failures.MAX_TASKS:
                out.append(task)
                continue
            tail, why = None, "no pod listed for the task"
            for pod in task.pods:
                try:
                    tail = self.task_log_tail(run_id, pod)
                    break
                except Exception as exc:  # never fail the outcome on log reading
                    why = str(exc)[:300] or type(exc).__name__
            if tail is None:
                why = self._log_unavailable(task.name, why)
            out.append(FailedTask(task.name, task.pods, tail, None if tail is not None else why))
        return out

    def task_report(
        self, run_id: str, task: str, kind: str = "result"
    ) -> run_report.RunReport | None:
        """The report in the log tail of the task's pod (the API has no output parameters).

        The task's entry in ``run_details.task_details`` is the component's DAG node;
        its children (``child_tasks[].pod_name``) are the executor pods, the last one
        the latest attempt (``server/api_converter.go`` ``toModelTask``); an Argo retry
        node among them stands for its attempts, the last one read first
        (:func:`.argo_pods.pod_nodes`).
        """
        run = self._call(
            f"get run {run_id}", self._runs.run_service_get_run, run_id, run_scoped=True
        )
        details = getattr(getattr(run, "run_details", None), "task_details", None) or []
        known = {c.pod_name for d in details for c in d.child_tasks or [] if c.pod_name}
        children = [
            child.pod_name
            for detail in details
            if detail.display_name == task
            for child in detail.child_tasks or []
            if child.pod_name
        ]
        unreadable = []
        for pod in argo_pods.pod_nodes(children, known):
            try:
                tail = self.task_log_tail(run_id, pod)
            except Exception as exc:  # a missing log is no answer about the report
                unreadable.append(str(exc)[:300] or type(exc).__name__)
                continue
            report = run_report.last_report(tail, kind)
            if report is not None:
                return report
        if unreadable:
            raise BackendError(self._log_unavailable(task, "; ".join(unreadable)))
        return None

    def _log_unavailable(self, task: str, reason: str) -> str:
        return f"the log of task {task} is not available through {self.host}: {reason}"

    def task_log_tail(
        self,
        run_id: str,
        node_id: str,
        *,
        max_lines: int = kfp_failures.MAX_LOG_LINES,
        max_bytes: int = kfp_failures.MAX_LOG_BYTES,
    ) -> str:
        """The end of one pod's log, through whatever route the host serves.

        The API server streams it at ``GET /apis/v1alpha1/runs/{run}/nodes/{node}/log``
        (``apiserver/main.go``); the UI server (``ml-pipeline-ui``, the host behind the
        AI Platform Pipelines proxy and Kubeflow's ``/pipeline``) serves
        ``GET /k8s/pod/logs?podname=&runid=&podnamespace=`` by *pod name*
        (``frontend/server/app.ts``), answered here with the Argo v2 pod names of the
        node (:mod:`.argo_pods`), then the node id. One attempt each, no retries:
        ``BackendError`` naming every route's answer when none gives the log.
        """
        reasons = []
        if self._api_log_route:
            path = (
                f"/apis/v1alpha1/runs/{quote(run_id, safe='')}/nodes/{quote(node_id, safe='')}/log"
            )
            try:
                return self._read_log(path, [], max_lines, max_bytes)
            except _NoSuchRoute as exc:
                self._api_log_route = False  # a UI host: ask its own route from now on
                reasons.append(f"no API server log route ({exc})")
            # (an API server's own answer, e.g. pod gone, is raised as is: it has no UI route)
        for pod in argo_pods.candidate_pod_names(node_id):
            query = [("podname", pod), ("runid", run_id)]
            if self.namespace:
                query.append(("podnamespace", self.namespace))
            try:
                return self._read_log("/k8s/pod/logs", query, max_lines, max_bytes)
            except (_NoSuchRoute, BackendError) as exc:
                cause = exc.__cause__
                if isinstance(cause, ApiException) and cause.status == 422:
                    # pod-logs.ts (HEAD of 2026-08): authorization on and no podnamespace
                    raise BackendError(
                        f"the KFP UI server at {self.host} reads pod logs only with the "
                        f"run's namespace (multi-user: {exc}); set the connection's namespace"
                    ) from exc
                reasons.append(f"pod {pod}: {exc}")
        raise BackendError("; ".join(reasons))

    def _read_log(
        self,
        path: str,
        query: list[tuple[str, str]],
        max_lines: int,
        max_bytes: int,
        relogin: bool = True,
    ) -> str:
        """GET a log (streamed, tail kept); its failure as a ``BackendError``, never retried
        (except once after a new ingress login)."""
        try:
            sent = self._session_cookie()
            response = self._api_client.call_api(
                path,
                "GET",
                query_params=query,
                auth_settings=["Bearer"],
                _preload_content=False,
                _request_timeout=(self.request_timeout, self.request_timeout),
            )
        except ApiException as err:
            if relogin and self._session_refused(sent, err):
                return self._read_log(path, query, max_lines, max_bytes, relogin=False)
            message = _server_message(err)
            if err.status == 404 and not _is_json(err.body):
                kind = "HTML page" if _is_html(err.body) else repr(message)
                raise _NoSuchRoute(f"HTTP 404 {kind}") from err
            raise BackendError(f"HTTP {err.status}: {message}") from err
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            raise BackendError(f"{type(err).__name__}: {err}") from err
        try:
            chunks = response.stream(64 * 1024, decode_content=True)
            first = next(chunks, b"")
            problem = kfp_failures.log_endpoint_error(first)
            if problem is not None:
                # e.g. "...: Failed to read logs from pod P ...: pods "P" not found"
                raise BackendError(problem.rsplit(": ", 1)[-1])

            def bounded() -> Iterator[bytes]:
                read = 0
                for chunk in itertools.chain([first], chunks):
                    yield chunk
                    read += len(chunk)
                    if read >= _LOG_READ_LIMIT:
                        return

            return kfp_failures.tail(bounded(), max_lines, max_bytes)
        finally:
            response.release_conn()

    @staticmethod
    def _name_filter(display_name: str) -> str:
        """A display-name filter that survives the server's second URL decode.

        ``server/list_request_util.go`` ``parseAPIFilter`` runs ``url.QueryUnescape``
        on the already decoded query value (every KFP 1.8-2.x), which turns ``+``
        into a space and refuses a lone ``%``. Escaping the JSON once more here
        makes the second decode give it back exactly, whatever the name holds.
        """
        text = json.dumps(
            {
                "predicates": [
                    {"operation": "EQUALS", "key": "display_name", "string_value": display_name}
                ]
            },
            ensure_ascii=False,
        )
        return quote(text, safe="")

    # -- experiments -------------------------------------------------------
    def _find_experiment(self, display_name: str) -> str | None:
        kwargs: dict[str, Any] = {"filter": self._name_filter(display_name), "page_size": 10}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        response = self._call(
            f"list experiments named {display_name!r}",
            self._experiments.experiment_service_list_experiments,
            **kwargs,
        )
        for experiment in response.experiments or []:
            if experiment.display_name == display_name:
                return experiment.experiment_id
        return None

    def experiment_id(self, display_name: str, *, create: bool = True) -> str | None:
        """The id of the experiment with this name (in the namespace), created when missing."""
        with self._experiment_lock:
            if display_name in self._experiment_ids:
                return self._experiment_ids[display_name]
            experiment_id = self._find_experiment(display_name)
            if experiment_id is None and create:
                body = kfp_server_api.V2beta1Experiment(
                    display_name=display_name, namespace=self.namespace
                )
                try:
                    created = self._call(
                        f"create experiment {display_name!r}",
                        self._experiments.experiment_service_create_experiment,
                        body,
                    )
                    experiment_id = created.experiment_id
                    log.info("Created KFP experiment %r (%s)", display_name, experiment_id)
                except AuthError:
                    raise
                except BackendError:
                    # Someone else created it between our list and create (HTTP 409).
                    experiment_id = self._find_experiment(display_name)
                    if experiment_id is None:
                        raise
            if experiment_id is not None:
                self._experiment_ids[display_name] = experiment_id
            return experiment_id

    # -- Backend -----------------------------------------------------------
    def build_run_body(self, request: RunRequest, experiment_id: str | None) -> Any:
        """The ``V2beta1Run`` for a request, as ``kfp.Client.run_pipeline`` builds it."""
        pipeline_spec: dict[str, Any] | None = None
        reference = None
        if request.pipeline_id or request.pipeline_version_id:
            if not request.pipeline_id:
                raise BackendError("pipeline_version_id needs pipeline_id as well")
            reference = kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=request.pipeline_id,
                pipeline_version_id=request.pipeline_version_id,
            )
        else:
            pipeline_spec = pipeline_spec_body(
                request.pipeline_spec, request.platform_spec, request.enable_caching
            )
        return kfp_server_api.V2beta1Run(
            display_name=request.display_name,
            experiment_id=experiment_id,
            pipeline_spec=pipeline_spec,
            pipeline_version_reference=reference,
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(
                parameters=dict(request.parameters),
                pipeline_root=request.pipeline_root,
            ),
            service_account=request.service_account,
        )

    def pipeline_version(
        self, pipeline_id: str, pipeline_version_id: str | None = None
    ) -> tuple[str, Mapping[str, Any]]:
        """Look the pipeline (and version) up: ``PipelineNotFoundError`` naming the missing id.

        Done before submitting because the server answers a run for a missing
        pipeline or version with HTTP 500 (``resource/resource_manager.go``
        ``CreateRun`` wraps the lookup error as internal), which reads as transient.
        Without a version id this is the latest version, as the server picks it
        (newest ``created_at``, then the larger id).
        """
        what = f"get pipeline {pipeline_id}"
        try:
            self._call(
                what, self._pipelines.pipeline_service_get_pipeline, pipeline_id, run_scoped=True
            )
        except RunNotFoundError as exc:
            raise PipelineNotFoundError(f"pipeline_id {pipeline_id!r}: no such pipeline") from exc
        if pipeline_version_id:
            try:
                version = self._call(
                    f"get pipeline version {pipeline_version_id}",
                    self._pipelines.pipeline_service_get_pipeline_version,
                    pipeline_id,
                    pipeline_version_id,
                    run_scoped=True,
                )
            except RunNotFoundError as exc:
                raise PipelineNotFoundError(
                    f"pipeline_version_id {pipeline_version_id!r}: no such version of "
                    f"pipeline {pipeline_id!r}"
                ) from exc
            if version.pipeline_id and version.pipeline_id != pipeline_id:
                raise PipelineNotFoundError(
                    f"pipeline_version_id {pipeline_version_id!r} belongs to pipeline "
                    f"{version.pipeline_id!r}, not to pipeline_id {pipeline_id!r}"
                )
        else:
            page = self._call(
                f"list versions of pipeline {pipeline_id}",
                self._pipelines.pipeline_service_list_pipeline_versions,
                pipeline_id,
                sort_by="created_at desc",
                page_size=_LIST_PAGE_SIZE,
            )
            versions = page.pipeline_versions or []
            if not versions:
                raise PipelineNotFoundError(f"pipeline_id {pipeline_id!r} has no versions")
            # the server's latest: created_at desc, ties by id desc (pipeline_store.go)
            version = max(versions, key=lambda v: (v.created_at, v.pipeline_version_id))
        return version.pipeline_version_id, version.pipeline_spec or {}

    def submit(self, request: RunRequest) -> RunStatus:
        if request.pipeline_id or request.pipeline_version_id:
            if not request.pipeline_id:
                raise BackendError("pipeline_version_id needs pipeline_id as well")
            version_id, _ = self.pipeline_version(request.pipeline_id, request.pipeline_version_id)
            request = dataclasses.replace(request, pipeline_version_id=version_id)
        experiment = request.experiment or ("Default" if self.namespace else None)
        experiment_id = self.experiment_id(experiment) if experiment else None
        body = self.build_run_body(request, experiment_id)
        run = self._call(
            f"create run {request.display_name!r}", self._runs.run_service_create_run, body
        )
        log.info(
            "Created KFP run %s (%s): %s",
            run.run_id,
            request.display_name,
            self.run_url(run.run_id),
        )
        return self._status(run)

    def get_run(self, run_id: str) -> RunStatus:
        run = self._call(
            f"get run {run_id}", self._runs.run_service_get_run, run_id, run_scoped=True
        )
        return self._status(run, read_logs=True)

    def _list_runs(self, display_name: str, experiment_id: str | None) -> Iterator[Any]:
        kwargs: dict[str, Any] = {
            "filter": self._name_filter(display_name),
            "sort_by": "created_at desc",
            "page_size": _LIST_PAGE_SIZE,
        }
        if experiment_id:
            kwargs["experiment_id"] = experiment_id
        elif self.namespace:
            kwargs["namespace"] = self.namespace
        token = None
        while True:
            if token:
                kwargs["page_token"] = token
            page = self._call(
                f"list runs named {display_name!r}", self._runs.run_service_list_runs, **kwargs
            )
            yield from page.runs or []
            token = page.next_page_token
            if not token:
                return

    def find_runs(self, display_name: str, experiment: str | None = None) -> list[RunStatus]:
        experiment_id = None
        if experiment:
            experiment_id = self.experiment_id(experiment, create=False)
            if experiment_id is None:
                return []
        runs = [
            r
            for r in self._list_runs(display_name, experiment_id)
            if r.display_name == display_name
        ]
        # Newest first; the server already sorts, this keeps it true across pages.
        statuses = [self._status(r) for r in runs]
        return sorted(statuses, key=lambda s: s.created_at or "", reverse=True)

    def cancel(self, run_id: str) -> None:
        try:
            self._call(
                f"terminate run {run_id}",
                self._runs.run_service_terminate_run,
                run_id,
                run_scoped=True,
            )
        except RunNotFoundError:
            raise
        except (AuthError, TransientBackendError):
            raise
        except BackendError:
            # The server refuses to terminate a run that is no longer active.
            status = self.get_run(run_id)
            if status.state.is_terminal or status.state is RunState.CANCELING:
                log.info("KFP run %s already %s; nothing to terminate", run_id, status.state.value)
                return
            raise
        log.info("Asked KFP to terminate run %s", run_id)

    def retry(self, run_id: str) -> None:
        """``POST /apis/v2beta1/runs/{id}:retry`` (``resource_manager.go`` ``RetryRun``).

        Upstream refuses a workflow that is not Failed/Error with HTTP 409 (gRPC
        ``Aborted``: ``GenerateRetryExecution`` in ``common/util/workflow.go``, e.g.
        another retry started it after our look), one with offloaded node status with
        HTTP 500 (``CanRetry``), an empty stored manifest with 409; it has no archive
        check, and a garbage-collected workflow is created again from the stored
        manifest (``resource_manager.go`` ``RetryRun``, 2.5.0 to HEAD of 2026-08). A
        refusal is ``RetryRefusedError`` with the server's words, unless the run is no
        longer FAILED by then: another retry won the race (the run may even have ended),
        and the caller follows that one rather than starting a second run. A 5xx while
        the run is no longer FAILED means the retry may have started, so it stays a
        transient error (the caller looks again).
        """
        state = self.get_run(run_id).state
        if state is not RunState.FAILED:
            raise RetryRefusedError(
                f"KFP run {run_id} is {state.value}; only a FAILED run is retried"
            )
        try:
            self._call(
                f"retry run {run_id}", self._runs.run_service_retry_run, run_id, run_scoped=True
            )
        except (RunNotFoundError, AuthError):
            raise
        except TransientBackendError as err:
            if self.get_run(run_id).state is not RunState.FAILED:
                raise
            raise RetryRefusedError(f"KFP refused to retry run {run_id}: {err}") from err
        except BackendError as err:
            state = self.get_run(run_id).state
            if state is not RunState.FAILED:  # e.g. 409 after another's retry, maybe done
                log.info(
                    "KFP run %s is %s since the retry (%s): following it", run_id, state.value, err
                )
                return
            raise RetryRefusedError(f"KFP refused to retry run {run_id}: {err}") from err
        log.info("Asked KFP to retry run %s (its failed tasks rerun)", run_id)

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_host}/#/runs/details/{run_id}"

    # -- connection checks -------------------------------------------------
    def check(self) -> str:
        """healthz, then list one experiment: the credentials and namespace are accepted.

        The answer names the topology found (``kfp_topology.describe``).
        """
        health = self.healthz()
        self.check_access()
        return kfp_topology.describe(self, health)

    def healthz(self) -> dict[str, Any]:
        """``GET /apis/v2beta1/healthz``: ``multi_user``, ``tag_name``, ``commit_sha``
        (``pipeline_store`` when sent), from the API server's answer or the UI server's
        (:func:`kfp_topology.read_healthz`; the generated model would drop the build tag,
        and the UI server's names)."""
        response = self._call(
            "healthz",
            self._api_client.call_api,
            "/apis/v2beta1/healthz",
            "GET",
            auth_settings=["Bearer"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        return kfp_topology.read_healthz(response.data, self.host)

    def check_access(self) -> None:
        """List one experiment: proves the credentials and the namespace are accepted."""
        kwargs: dict[str, Any] = {"page_size": 1}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        self._call(
            "list experiments", self._experiments.experiment_service_list_experiments, **kwargs
        )

    def close(self) -> None:
        self._api_client.rest_client.pool_manager.clear()


def pipeline_spec_body(
    pipeline_spec: Mapping[str, Any],
    platform_spec: Mapping[str, Any] | None = None,
    enable_caching: bool | None = None,
) -> dict[str, Any]:
    """The ``pipeline_spec`` field of a v2beta1 run, as the KFP SDK sends it.

    Like ``kfp.Client``: a caching choice made at submission overrides every
    root task's ``cachingOptions.enableCache``; with a (non-empty) kfp-kubernetes
    platform spec the field becomes ``{"pipeline_spec": ..., "platform_spec": ...}``.
    """
    spec = copy.deepcopy(dict(pipeline_spec))
    if enable_caching is not None:
        tasks = spec.get("root", {}).get("dag", {}).get("tasks", {})
        for task in tasks.values():
            task.setdefault("cachingOptions", {})["enableCache"] = bool(enable_caching)
    if platform_spec:
        return {"pipeline_spec": spec, "platform_spec": copy.deepcopy(dict(platform_spec))}
    return spec


class _NoSuchRoute(Exception):
    """The host does not serve this path (a non-JSON 404).

    The UI server answers a path it neither proxies nor serves itself, such as the API
    server's ``/apis/v1alpha1/.../log``, with Express's HTML 404 "Cannot GET ..." (its
    static handlers fall through; ``frontend/server/app.ts`` at KFP 2.5.0-2.14.0 and
    HEAD has no index.html fallback); the API server's Go mux with "404 page not found".
    """


def _is_html(body: Any) -> bool:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").lstrip().lower()
    return text.startswith(("<!doctype html", "<html"))


def _is_json(body: Any) -> bool:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return bool(body) and str(body).lstrip().startswith(("{", "["))


def _failure_text(run: Any, tasks: list[FailedTask], run_url: str | None) -> str:
    """First line: what failed (for the task's error and Slack); then the log tails."""
    conversion_error = _run_error(run)
    if not tasks and conversion_error:
        return conversion_error
    lines = [kfp_failures.summary(tasks, run_url)]
    for task in tasks:
        if task.log_tail:
            pod = f" (pod {task.pods[0]})" if task.pods else ""
            lines += ["", f"--- last lines of the log of task {task.name}{pod} ---", task.log_tail]
    return "\n".join(lines)


def _run_error(run: Any) -> str | None:
    """The run's error message, else the first failed task's (v2beta1 ``error`` status)."""
    error = getattr(run, "error", None)
    if error is not None and getattr(error, "message", None):
        return error.message
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        task_error = getattr(task, "error", None)
        if task_error is not None and getattr(task_error, "message", None):
            return f"task {task.display_name}: {task_error.message}"
    return None


def _map_google_auth_error(what: str, err: Exception) -> Exception | None:
    try:
        import google.auth.exceptions as gexc
    except ImportError:  # pragma: no cover - google-auth is a dependency
        return None
    if isinstance(err, gexc.TransportError):
        return TransientBackendError(f"{what}: could not refresh Google credentials: {err}")
    if isinstance(err, gexc.GoogleAuthError):
        return AuthError(f"{what}: Google credentials could not be used: {err}")
    return None


def _run_parameters(run: Any) -> dict[str, Any] | None:
    """The run's ``runtime_config.parameters`` (``None`` when the service sent none)."""
    config = getattr(run, "runtime_config", None)
    parameters = getattr(config, "parameters", None)
    return dict(parameters) if parameters is not None else None
