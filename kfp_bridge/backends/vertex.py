"""Vertex AI Pipelines backend, via the GAPIC ``aiplatform_v1.PipelineServiceClient``.

The client is built as the Google provider's ``PipelineJobHook`` builds it (a Google
Cloud connection's credentials, impersonation, regional endpoint, client info), and
run links are the provider's Vertex console links.

Differences from the Google provider's ``RunPipelineJobOperator`` that this
module exists for: the pipeline job id is derived from the run's display name,
so a retried task (or a worker that died after submitting) finds its job
instead of starting a second one; PAUSED is not success; errors are split into
retryable and final.

Vertex loads the template with ``yaml.safe_load``: a compiled file with a second
(kfp-kubernetes) YAML document is refused here with a clear message instead of
by the service.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kfp_bridge import run_report
from kfp_bridge.backends.base import (
    Backend,
    RunRequest,
    RunState,
    RunStatus,
    positive_seconds,
    same_parameters,
)
from kfp_bridge.exceptions import (
    AuthError,
    BackendConfigError,
    BackendError,
    PipelineSpecError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.failures import parse_failure

log = logging.getLogger(__name__)

MAX_JOB_ID_LENGTH = 128
MAX_ATTEMPTS = 100
_HASH_LENGTH = 8

# aiplatform_v1.PipelineState names -> RunState. PAUSED stays PAUSED (not success).
STATE_MAP: dict[str, RunState] = {
    "PIPELINE_STATE_UNSPECIFIED": RunState.RUNTIME_STATE_UNSPECIFIED,
    "PIPELINE_STATE_QUEUED": RunState.PENDING,
    "PIPELINE_STATE_PENDING": RunState.PENDING,
    "PIPELINE_STATE_RUNNING": RunState.RUNNING,
    "PIPELINE_STATE_SUCCEEDED": RunState.SUCCEEDED,
    "PIPELINE_STATE_FAILED": RunState.FAILED,
    "PIPELINE_STATE_CANCELLING": RunState.CANCELING,
    "PIPELINE_STATE_CANCELLED": RunState.CANCELED,
    "PIPELINE_STATE_PAUSED": RunState.PAUSED,
}
_RERUN_STATES = frozenset({RunState.FAILED, RunState.CANCELED})


def map_state(state: Any) -> RunState:
    """A ``PipelineState`` (enum member, name or number) as a :class:`RunState`."""
    from google.cloud import aiplatform_v1

    name = aiplatform_v1.PipelineState(state).name if not isinstance(state, str) else state
    return STATE_MAP.get(name, RunState.RUNTIME_STATE_UNSPECIFIED)


def job_id_for(display_name: str, attempt: int = 1) -> str:
    """Deterministic Vertex pipeline job id for a run name.

    Vertex ids are ``[a-z][-a-z0-9]{0,127}``. Sanitising can map different names
    to the same text, so a short hash of the exact name is appended; attempt 2+
    (a deliberate re-run after FAILED/CANCELED, or with other parameters) adds ``-r{n}``.
    """
    if not display_name:
        raise ValueError("display name is empty")
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    digest = hashlib.sha256(display_name.encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-{digest}" + (f"-r{attempt}" if attempt > 1 else "")
    base = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"run-{base}".rstrip("-")
    base = base[: MAX_JOB_ID_LENGTH - len(suffix)].rstrip("-")
    return f"{base}{suffix}"


def _label_value(value: str) -> str:
    """Vertex label values: lowercase letters, digits, ``_`` and ``-``, up to 63 chars."""
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower())[:63]


def _override_caching(spec: dict[str, Any], enable_caching: bool) -> None:
    """Set ``cachingOptions.enableCache`` on every task, as the Vertex SDK does."""
    dags = [spec.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in spec.get("components", {}).values()]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task.setdefault("cachingOptions", {})["enableCache"] = bool(enable_caching)


def _job_error(job: Any) -> str | None:
    """The job's error, then each failed task's: where Vertex says why (and the exit status).

    Vertex does not copy a component's output into these messages, but a failed
    container's exit status is in its task's error, which is how a permanent
    failure is told from a retryable one here (``kfp_bridge.failures``).
    """
    from google.cloud import aiplatform_v1

    failed = aiplatform_v1.PipelineTaskDetail.State.FAILED
    lines = [job.error.message] if job.error and job.error.message else []
    for task in job.job_detail.task_details if job.job_detail else ():
        if task.state == failed and task.error and task.error.message:
            lines.append(f"task {task.task_name}: {task.error.message}")
    return "\n".join(lines) or None


class VertexBackend(Backend):
    """Runs compiled pipelines as Vertex AI pipeline jobs in one project and location.

    ``self.client`` is the GAPIC ``PipelineServiceClient``, built as the Google
    provider's ``PipelineJobHook.get_pipeline_service_client`` builds it: the
    credentials of ``google_hook`` (a ``GoogleBaseHook``: a Google Cloud connection,
    impersonated when asked), the provider's client info and client options (the
    regional endpoint, or ``api_endpoint``; the universe domain). ``project_id``
    defaults to the hook's project. ``transport`` (``"grpc"``, the default, or
    ``"rest"``) is the client's. The ``client`` argument replaces the built client,
    for tests only: Vertex cannot be reached from the test machine.
    """

    name = "vertex"

    def __init__(
        self,
        project_id: str | None,
        location: str,
        *,
        google_hook: Any = None,
        api_endpoint: str | None = None,
        transport: str | None = None,
        request_timeout: float | str = 60.0,
        client: Any = None,
    ) -> None:
        if not location:
            raise BackendConfigError(
                "location", "is required for backend 'vertex' (a region, e.g. us-central1)"
            )
        if not project_id and google_hook is not None:
            project_id = google_hook.project_id
        if not project_id:
            raise BackendConfigError(
                "project_id",
                "is required for backend 'vertex' (or a project in the Google Cloud connection)",
            )
        if transport not in (None, "grpc", "rest"):
            raise BackendConfigError("transport", f"must be grpc or rest, got {transport!r}")
        self.project_id = project_id
        self.location = location
        self.request_timeout = positive_seconds("request_timeout", request_timeout)
        self.parent = f"projects/{project_id}/locations/{location}"
        if client is None:
            client = _pipeline_client(google_hook, location, api_endpoint, transport)
        self.client = client

    def __repr__(self) -> str:
        return f"VertexBackend(project_id={self.project_id!r}, location={self.location!r})"

    def job_name(self, job_id: str) -> str:
        return f"{self.parent}/pipelineJobs/{job_id}"

    # -- request building ----------------------------------------------------
    def build_pipeline_job(self, request: RunRequest) -> Any:
        """The ``PipelineJob`` message for a request (no network)."""
        from google.cloud import aiplatform_v1

        if request.platform_spec:
            raise PipelineSpecError(
                "Vertex AI Pipelines accepts a single-document pipeline template only; this "
                "compiled file has a second (kfp-kubernetes platform) document. Submit the "
                "Vertex variant of the pipeline, compiled without kfp-kubernetes settings."
            )
        if request.pipeline_id or request.pipeline_version_id:
            raise BackendError(
                "pipeline_id/pipeline_version_id refer to pipelines uploaded to a KFP API "
                "server; the vertex backend submits the compiled pipeline file"
            )
        spec = copy.deepcopy(dict(request.pipeline_spec))
        if request.enable_caching is not None:
            _override_caching(spec, request.enable_caching)
        labels = {_label_value(k): _label_value(str(v)) for k, v in request.labels.items()}
        if request.experiment:
            labels.setdefault("experiment", _label_value(request.experiment))
        runtime_config = aiplatform_v1.PipelineJob.RuntimeConfig(
            parameter_values=dict(request.parameters),
            gcs_output_directory=request.pipeline_root or "",
        )
        return aiplatform_v1.PipelineJob(
            display_name=request.display_name,
            pipeline_spec=spec,
            runtime_config=runtime_config,
            service_account=request.service_account or "",
            labels=labels,
        )

    def build_create_request(self, request: RunRequest, attempt: int = 1) -> Any:
        """The ``CreatePipelineJobRequest`` for attempt ``attempt`` of a run name."""
        from google.cloud import aiplatform_v1

        return aiplatform_v1.CreatePipelineJobRequest(
            parent=self.parent,
            pipeline_job=self.build_pipeline_job(request),
            pipeline_job_id=job_id_for(request.display_name, attempt),
        )

    # -- plumbing --------------------------------------------------------------
    def _call(
        self,
        what: str,
        method: str,
        *,
        run_scoped: bool = False,
        all_pages: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call the GAPIC client, mapping errors; ``all_pages`` drains a pager inside the try."""
        from google.api_core import exceptions as gexc

        try:
            result = getattr(self.client, method)(timeout=self.request_timeout, **kwargs)
            return list(result) if all_pages else result
        except (gexc.Unauthenticated, gexc.PermissionDenied) as err:
            raise AuthError(
                f"{what}: Vertex AI refused the credentials ({err.code} {err.message}). "
                "Check the service account's roles (Vertex AI User) and project_id."
            ) from err
        except gexc.NotFound as err:
            if run_scoped:
                raise RunNotFoundError(f"{what}: {err.message}") from err
            raise BackendError(f"{what}: {err.message}") from err
        except (
            gexc.ServerError,
            gexc.TooManyRequests,
            gexc.ResourceExhausted,
            gexc.DeadlineExceeded,
            gexc.RetryError,
        ) as err:
            raise TransientBackendError(f"{what}: Vertex AI: {err}") from err
        except gexc.GoogleAPICallError as err:
            raise BackendError(f"{what}: Vertex AI: {err.code} {err.message}") from err
        except Exception as err:
            import google.auth.exceptions as aexc

            if isinstance(err, aexc.TransportError):
                raise TransientBackendError(f"{what}: {err}") from err
            if isinstance(err, aexc.GoogleAuthError):
                raise AuthError(f"{what}: Google credentials could not be used: {err}") from err
            raise

    def _status(self, job: Any) -> RunStatus:
        job_id = job.name.rsplit("/", 1)[-1]
        state = map_state(job.state)
        error = _job_error(job) if state is not RunState.SUCCEEDED else None
        created = job.create_time.isoformat() if job.create_time else None
        # Vertex keeps no component output: the verdict is the exit status in the messages
        failure = parse_failure(error) if state is RunState.FAILED else None
        return RunStatus(
            run_id=job_id,
            display_name=job.display_name,
            state=state,
            url=self.run_url(job_id),
            error=error,
            created_at=created,
            parameters=_job_parameters(job),
            failure=failure,
        )

    def _get_job(self, job_id: str) -> Any | None:
        try:
            return self._call(
                f"get pipeline job {job_id}",
                "get_pipeline_job",
                run_scoped=True,
                name=self.job_name(job_id),
            )
        except RunNotFoundError:
            return None

    # -- Backend ---------------------------------------------------------------
    def submit(self, request: RunRequest) -> RunStatus:
        """Create the job under the first free deterministic id.

        An existing job under the id that is not FAILED/CANCELED and ran with the
        request's parameters is returned instead of creating another: the id is the
        idempotency key. One with other parameters was set aside by the caller (a
        changed setting, another date): like an ended one, it moves us to the next id.
        """
        from google.api_core import exceptions as gexc

        self.build_pipeline_job(request)  # validate before any call
        for attempt in range(1, MAX_ATTEMPTS + 1):
            job_id = job_id_for(request.display_name, attempt)
            existing = self._get_job(job_id)
            if existing is not None:
                status = self._status(existing)
                if not self._reusable(status, request):
                    continue
                log.info("Vertex pipeline job %s already exists (%s)", job_id, status.state.value)
                return status
            create = self.build_create_request(request, attempt)
            try:
                job = self._call(
                    f"create pipeline job {job_id}", "create_pipeline_job", request=create
                )
            except BackendError as err:
                if not isinstance(err.__cause__, gexc.AlreadyExists):
                    raise
                existing = self._get_job(job_id)  # another worker created it meanwhile
                if existing is None:
                    raise
                status = self._status(existing)
                if not self._reusable(status, request):
                    continue
                return status
            log.info("Created Vertex pipeline job %s: %s", job_id, self.run_url(job_id))
            return self._status(job)
        raise BackendError(
            f"{MAX_ATTEMPTS} pipeline jobs named {request.display_name!r} already ended "
            "FAILED/CANCELED or ran with other parameters; refusing to start another"
        )

    @staticmethod
    def _reusable(status: RunStatus, request: RunRequest) -> bool:
        """Whether an existing job under our id is this request's run."""
        if status.state in _RERUN_STATES:
            return False
        if not same_parameters(request.parameters, status.parameters):
            log.info(
                "Vertex pipeline job %s (%s) ran with other parameters; trying the next id",
                status.run_id,
                status.state.value,
            )
            return False
        return True

    def get_run(self, run_id: str) -> RunStatus:
        job = self._call(
            f"get pipeline job {run_id}",
            "get_pipeline_job",
            run_scoped=True,
            name=self.job_name(run_id),
        )
        return self._status(job)

    def list_request(self, display_name: str) -> Any:
        from google.cloud import aiplatform_v1

        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        return aiplatform_v1.ListPipelineJobsRequest(
            parent=self.parent,
            filter=f'display_name="{escaped}"',
            order_by="create_time desc",
            page_size=100,
        )

    def find_runs(self, display_name: str, experiment: str | None = None) -> list[RunStatus]:
        jobs = self._call(
            f"list pipeline jobs named {display_name!r}",
            "list_pipeline_jobs",
            all_pages=True,
            request=self.list_request(display_name),
        )
        statuses = [self._status(j) for j in jobs if j.display_name == display_name]
        return sorted(statuses, key=lambda s: s.created_at or "", reverse=True)

    def cancel(self, run_id: str) -> None:
        try:
            self._call(
                f"cancel pipeline job {run_id}",
                "cancel_pipeline_job",
                run_scoped=True,
                name=self.job_name(run_id),
            )
        except (RunNotFoundError, AuthError):
            raise
        except BackendError:
            # FAILED_PRECONDITION: the job is no longer running.
            status = self.get_run(run_id)
            if status.state.is_terminal or status.state is RunState.CANCELING:
                return
            raise

    def check(self) -> str:
        """List pipeline jobs by a name no job has: the credentials and project are accepted."""
        self.find_runs("kfp-bridge-connection-test")
        return f"Vertex AI Pipelines reachable in {self.parent}"

    def run_url(self, run_id: str) -> str | None:
        return vertex_console_url(self.location, run_id, self.project_id)

    def task_report(
        self, run_id: str, task: str, kind: str = "result"
    ) -> run_report.RunReport | None:
        """The report among the task's output parameters (or, for a failure, in its error).

        Vertex keeps a task's output parameters in its execution's metadata as
        ``output:NAME`` (``PipelineTaskDetail.execution.metadata``); a step returns its
        report's JSON as one of them. Task logs are in Cloud Logging, which the
        pipeline API does not serve.
        """
        job = self._call(
            f"get pipeline job {run_id}",
            "get_pipeline_job",
            run_scoped=True,
            name=self.job_name(run_id),
        )
        for detail in reversed(list(job.job_detail.task_details)):
            if detail.task_name != task:
                continue
            texts = [
                value if run_report.PREFIX in value else f"{run_report.PREFIX} {value}"
                for key, value in dict(detail.execution.metadata or {}).items()
                if key.startswith("output:") and isinstance(value, str)
            ]
            if detail.error and detail.error.message:
                texts.append(detail.error.message)
            found = run_report.last_report("\n".join(texts), kind)
            if found is not None:
                return found
        return None


def vertex_api_endpoint(location: str) -> str | None:
    """The regional Vertex AI endpoint, by the Google provider's rule.

    ``PipelineJobHook._get_api_endpoint`` (``cloud/hooks/vertex_ai/pipeline_job.py``):
    ``{region}-aiplatform.googleapis.com:443`` unless the region is ``global`` or the
    universe is not Google's default one (then the client's default applies). Written
    out because importing that module costs ~4 s (the high-level aiplatform SDK).
    """
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    if location and location != "global" and GoogleBaseHook.is_default_universe():
        return f"{location}-aiplatform.googleapis.com:443"
    return None


def _pipeline_client(
    google_hook: Any, location: str, api_endpoint: str | None, transport: str | None
) -> Any:
    """``PipelineServiceClient`` as ``PipelineJobHook.get_pipeline_service_client`` builds it."""
    from airflow.providers.google.common.consts import CLIENT_INFO
    from google.cloud import aiplatform_v1

    if google_hook is None:
        from kfp_bridge.hooks.google_cloud import BridgeGoogleHook

        google_hook = BridgeGoogleHook()
    options = google_hook.get_client_options(
        api_endpoint_override=api_endpoint or vertex_api_endpoint(location)
    )
    return aiplatform_v1.PipelineServiceClient(
        credentials=google_hook.get_credentials(),
        client_info=CLIENT_INFO,
        client_options=options,
        transport=transport,
    )


def vertex_console_url(location: str, job_id: str, project_id: str) -> str:
    """The Google provider's "Pipeline Job" console link (``VertexAIPipelineJobLink``).

    ``cloud/links/vertex_ai.py`` ``VERTEX_AI_PIPELINE_JOB_LINK`` under
    ``cloud/links/base.py`` ``BASE_LINK`` (domain from
    ``GOOGLE_CLOUD_HIGH_VALUE_COOKIE_DOMAIN``, default google.com). The provider
    keeps the format arguments in XCom; the bridge's link keeps the URL, so it is
    rendered here.
    """
    from airflow.providers.google.cloud.links.vertex_ai import VERTEX_AI_PIPELINE_JOB_LINK
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    base = f"https://console.cloud.{GoogleBaseHook.get_high_value_cookie_domain()}"
    return base + VERTEX_AI_PIPELINE_JOB_LINK.format(
        region=location, pipeline_id=job_id, project_id=project_id
    )


def _job_parameters(job: Any) -> dict[str, Any] | None:
    """The job's ``runtime_config.parameter_values`` as Python values (``None`` if unreadable).

    proto-plus hands lists and structs inside a ``Value`` back as its own
    ``RepeatedComposite``/``MapComposite`` views: they become plain lists and dicts.
    """
    try:
        values = job.runtime_config.parameter_values
        return {k: _plain(values[k]) for k in values}
    except Exception:  # a job without a runtime config, or a client that shapes it otherwise
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value
