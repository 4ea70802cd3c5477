"""Run a compiled Kubeflow pipeline and wait for it, idempotently.

One run per task instance, whatever happens to workers:

1. the run id is kept in Airflow 3.3's ``task_state_store`` (``ResumableJobMixin``),
   so a retry reconnects to it;
2. the run has a deterministic name (dag id, task id, logical date; the same for
   every try), and before submitting the operator looks that name up on the
   service, which closes the mixin's gap (worker killed between submit and persist).

A run found PENDING/RUNNING/PAUSED or SUCCEEDED is reused; a new run starts only
when the earlier one ended FAILED/CANCELED/SKIPPED.

Retries versus clears: Airflow bumps the DAG run's ``clear_number`` when a person
clears a task, never on an automatic retry. The default run name carries it, so
a retry reattaches while a deliberate clear re-runs the pipeline (and rewrites
that date's partition), which is what "Clear" means everywhere else in Airflow.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.configuration import conf
from airflow.sdk import BaseOperator, ResumableJobMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from kfp_bridge.backends.base import RunRequest, RunState, RunStatus
from kfp_bridge.exceptions import (
    AuthError,
    ParameterError,
    PipelineSpecError,
    RunFailedError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY, KubeflowRunLink
from kfp_bridge.pipeline_spec import CompiledPipeline, load_pipeline
from kfp_bridge.retry import backoff_delay, call_with_retries
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from kfp_bridge.backends.base import Backend

T = TypeVar("T")

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_RUN_NAME = 128
# A run found CANCELING (e.g. the user cleared the task while deferred) is waited for,
# then replaced; reattaching to it would only fail the new try. Still CANCELING after
# this long: the try fails (retryable) and the next try decides again.
CANCELING_WAIT_SECONDS = 120.0
# Transient errors while looking up / submitting back off from here (or poll_interval).
SUBMIT_RETRY_BASE_SECONDS = 5.0


def default_deferrable() -> bool:
    """Deferrable unless ``[kfp_bridge] default_deferrable`` says otherwise.

    Airflow's ``[operators] default_deferrable`` is written as ``false`` into every
    generated airflow.cfg, so it cannot tell "turned off" from "not set"; it only
    counts when it is true. Waiting on a pipeline for an hour must not hold a worker.
    """
    return conf.getboolean("kfp_bridge", "default_deferrable", fallback=True) or conf.getboolean(
        "operators", "default_deferrable", fallback=False
    )


def default_run_name(context: Context) -> str:
    """``{dag_id}__{task_id}__{logical date, UTC}`` (+ ``__{map_index}``, ``__c{clear}``).

    The same for every try of a task instance, which is what makes reattach work;
    a clear (``dag_run.clear_number`` > 0) gets a new name and so a new run.
    Without a logical date (manual runs may have none) the dag run id stands in.
    """
    ti = context["ti"]
    logical_date = context.get("logical_date")
    if logical_date is not None:
        stamp = logical_date.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    else:
        stamp = context["dag_run"].run_id
    parts = [ti.dag_id, ti.task_id, stamp]
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        parts.append(str(map_index))
    dag_run = context.get("dag_run")
    clear_number = getattr(dag_run, "clear_number", None) or 0
    if clear_number > 0:
        parts.append(f"c{clear_number}")
    return sanitize_run_name("__".join(parts))


def sanitize_run_name(name: str) -> str:
    """Keep ``[A-Za-z0-9_.-]``; names over 128 characters keep a hash of the whole."""
    clean = _NAME_UNSAFE.sub("-", name.strip()).strip("-") or "run"
    if len(clean) > MAX_RUN_NAME:
        digest = hashlib.sha256(clean.encode()).hexdigest()[:10]
        clean = f"{clean[: MAX_RUN_NAME - 12]}__{digest}"
    return clean


class KubeflowPipelineRunOperator(ResumableJobMixin, BaseOperator):
    """Run a compiled KFP pipeline on the connection's backend and wait for the run.

    :param pipeline_file: compiled pipeline YAML (templated). Its inputs validate
        ``parameters`` before anything is submitted.
    :param pipeline_id: an uploaded pipeline (kfp backend) instead of, or besides, the file.
    :param pipeline_version_id: version of ``pipeline_id``.
    :param parameters: run parameters (templated); numeric/boolean strings are coerced
        to the declared types (see ``kfp_bridge.pipeline_spec``).
    :param experiment: experiment name, created when missing.
    :param run_name: run display name (templated). Default: ``default_run_name``.
        Keep it the same across tries, or reattach cannot work.
    :param pipeline_root: where the run writes artifacts.
    :param service_account: service account the run's pods use.
    :param enable_caching: override the compiled caching settings.
    :param kfp_conn_id: connection of type ``kfp``.
    :param deferrable: wait in the triggerer (default) instead of a worker slot.
    :param poll_interval: seconds between status polls (the trigger backs off from there).
    :param timeout: seconds (or timedelta) to wait for the run; then it is canceled
        and the task fails.
    :param max_transient_errors: consecutive transient API errors tolerated while waiting.

    XCom: ``return_value`` = ``{"run_id", "run_url"}``; ``kubeflow_run_url`` = the URL
    (the "Kubeflow run" link), pushed as soon as the run is known.
    """

    template_fields: Sequence[str] = (
        "pipeline_file",
        "pipeline_id",
        "pipeline_version_id",
        "parameters",
        "experiment",
        "run_name",
        "pipeline_root",
        "service_account",
    )
    template_fields_renderers = {"parameters": "json"}
    operator_extra_links = (KubeflowRunLink(),)
    ui_color = "#d6e4ff"
    external_id_key = "kfp_run_id"

    def __init__(
        self,
        *,
        pipeline_file: str | None = None,
        pipeline_id: str | None = None,
        pipeline_version_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        pipeline_root: str | None = None,
        service_account: str | None = None,
        enable_caching: bool | None = None,
        kfp_conn_id: str = "kfp_default",
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float | timedelta | None = None,
        max_transient_errors: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not pipeline_file and not pipeline_id:
            raise ValueError("KubeflowPipelineRunOperator needs pipeline_file or pipeline_id")
        self.pipeline_file = pipeline_file
        self.pipeline_id = pipeline_id
        self.pipeline_version_id = pipeline_version_id
        self.parameters = dict(parameters or {})
        self.experiment = experiment
        self.run_name = run_name
        self.pipeline_root = pipeline_root
        self.service_account = service_account
        self.enable_caching = enable_caching
        self.kfp_conn_id = kfp_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        self.timeout = timeout
        self.max_transient_errors = max_transient_errors
        self.kfp_run_id: str | None = None
        self._request: RunRequest | None = None
        # time.time() by which the run must end; from the run's creation once it is known
        self._deadline: float | None = None

    @cached_property
    def backend(self) -> Backend:
        from kfp_bridge.hooks.kfp import KubeflowPipelineHook

        return KubeflowPipelineHook(kfp_conn_id=self.kfp_conn_id).get_backend()

    # -- execute ---------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, str | None]:
        self._request = self._build_request(context)  # validates before anything is submitted
        # provisional until the run (and its creation time) is known
        self._deadline = time.time() + self.timeout if self.timeout else None
        self.log.info(
            "Kubeflow run %r: pipeline %s, backend %s, connection %s",
            self._request.display_name,
            self.pipeline_file or self.pipeline_id,
            self.backend.name,
            self.kfp_conn_id,
        )
        return self.execute_resumable(context)

    def _build_request(self, context: Context) -> RunRequest:
        compiled: CompiledPipeline | None = None
        try:
            if self.pipeline_file:
                compiled = load_pipeline(self.pipeline_file)
                parameters = compiled.validate_parameters(self.parameters)
            else:
                self.log.warning(
                    "No pipeline_file: parameters are not checked before submitting to pipeline %s",
                    self.pipeline_id,
                )
                parameters = dict(self.parameters)
        except (ParameterError, PipelineSpecError) as exc:
            # Retrying cannot fix a wrong parameter or a broken file: fail without retries.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        run_name = sanitize_run_name(self.run_name) if self.run_name else default_run_name(context)
        return RunRequest(
            display_name=run_name,
            pipeline_spec=compiled.pipeline_spec if compiled else {},
            platform_spec=compiled.platform_spec if compiled else None,
            pipeline_path=compiled.path if compiled else None,
            parameters=parameters,
            pipeline_id=self.pipeline_id,
            pipeline_version_id=self.pipeline_version_id,
            experiment=self.experiment,
            pipeline_root=self.pipeline_root,
            service_account=self.service_account,
            enable_caching=self.enable_caching,
            labels={
                "airflow-dag-id": context["ti"].dag_id,
                "airflow-task-id": context["ti"].task_id,
            },
        )

    # -- ResumableJobMixin -----------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        """Reuse a run with our name when one is live or succeeded; otherwise start one."""
        request = self._request
        assert request is not None
        try:
            existing = self._find_reusable_run(request)
            if existing is not None:
                self.log.info(
                    "Reattaching to existing run %s (%s), state %s: %s",
                    existing.run_id,
                    request.display_name,
                    existing.state.value,
                    existing.url,
                )
                status = existing
            else:
                status = self._submit(request)
        except (ParameterError, PipelineSpecError) as exc:
            # The backend refused the pipeline or its parameters: retries cannot fix that.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        except AuthError as exc:
            raise AirflowFailException(_auth_failure_message(self.kfp_conn_id, exc)) from exc
        self._remember(context, status)
        return status.run_id

    def _submit(self, request: RunRequest) -> RunStatus:
        """Submit; after a transient error re-POST only when no run with our name exists.

        The error may have hidden a run the service did create (response lost); the
        deterministic name finds it, so riding out the error cannot make a duplicate.
        """
        errors = 0
        while True:
            try:
                status = self.backend.submit(request)
                break
            except TransientBackendError as exc:
                errors += 1
                left = self._time_left()
                if errors > self.max_transient_errors or (left is not None and left <= 0):
                    raise
                delay = backoff_delay(errors, self._submit_retry_base)
                if left is not None:
                    delay = min(delay, left)
                self.log.warning(
                    "Transient error submitting run %s (%d/%d): %s; checking in %.1fs whether "
                    "it was created anyway",
                    request.display_name,
                    errors,
                    self.max_transient_errors,
                    exc,
                    delay,
                )
                time.sleep(delay)
                runs = self._retrying(
                    f"find runs named {request.display_name}",
                    lambda: self.backend.find_runs(request.display_name, request.experiment),
                    base_delay=self._submit_retry_base,
                )
                created = [r for r in runs if r.state.is_reattachable]
                if created:
                    status = created[0]
                    self.log.info("The run was created despite the error: %s", status.run_id)
                    break
        self.log.info(
            "Submitted run %s (%s), state %s: %s",
            status.run_id,
            request.display_name,
            status.state.value,
            status.url,
        )
        return status

    @property
    def _submit_retry_base(self) -> float:
        return min(self.poll_interval, SUBMIT_RETRY_BASE_SECONDS)

    def _time_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.time()

    def _retrying(self, what: str, call: Callable[[], T], base_delay: float | None = None) -> T:
        return call_with_retries(
            call,
            what=what,
            max_errors=self.max_transient_errors,
            base_delay=self.poll_interval if base_delay is None else base_delay,
            time_left=self._time_left,
            log=self.log,
        )

    def _find_reusable_run(self, request: RunRequest) -> RunStatus | None:
        runs = self._retrying(
            f"find runs named {request.display_name}",
            lambda: self.backend.find_runs(request.display_name, request.experiment),
            base_delay=self._submit_retry_base,
        )
        for run in runs:
            if run.state is RunState.CANCELING:
                run = self._wait_while_canceling(run)
                if run.state is RunState.CANCELING:
                    raise AirflowException(
                        f"Earlier Kubeflow run {run.run_id} ({request.display_name}) is still "
                        f"CANCELING after {CANCELING_WAIT_SECONDS:.0f}s; not starting another "
                        "run beside it. The next try decides again."
                    )
            if run.state.is_reattachable:
                return run
        if runs:
            self.log.info(
                "Earlier run(s) named %s ended %s; starting a new run",
                request.display_name,
                ", ".join(f"{r.run_id}={r.state.value}" for r in runs),
            )
        return None

    def _wait_while_canceling(self, run: RunStatus) -> RunStatus:
        self.log.info("Run %s is CANCELING; waiting for it to end before deciding", run.run_id)
        deadline = time.monotonic() + CANCELING_WAIT_SECONDS
        while run.state is RunState.CANCELING and time.monotonic() < deadline:
            time.sleep(min(self.poll_interval, 5.0, max(0.0, deadline - time.monotonic())))
            run = self._get_run_retrying(run.run_id)
        return run

    def get_job_status(self, external_id: Any, context: Context) -> str:
        try:
            status = self._get_run_retrying(str(external_id))
        except RunNotFoundError:
            self.log.warning("Stored run %s no longer exists on the service", external_id)
            return "NOT_FOUND"
        request = self._request
        if request is not None and status.display_name != request.display_name:
            # Stored by an earlier clear generation (or under another run_name): not ours.
            self.log.info(
                "Stored run %s is named %r, this try runs %r: not reattaching",
                external_id,
                status.display_name,
                request.display_name,
            )
            return "SUPERSEDED"
        if status.state.is_reattachable:
            self._remember(context, status)
        return status.state.value

    def is_job_active(self, status: str) -> bool:
        # CANCELING goes through submit_job, which waits for it to end and then replaces it.
        if status not in RunState.__members__ or status == RunState.CANCELING.value:
            return False
        return RunState(status).is_reattachable and not RunState(status).is_success

    def is_job_succeeded(self, status: str) -> bool:
        return status == RunState.SUCCEEDED.value

    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, str | None]:
        run_id = str(external_id)
        self.kfp_run_id = run_id
        status = self._get_run_retrying(run_id)
        self._remember(context, status)
        deadline = self._deadline = self._run_deadline(status)
        if status.state.is_terminal:
            return self._finish(status)
        if self.deferrable:
            self.log.info(
                "Deferring: the triggerer polls run %s every %ss (backing off) until it ends",
                run_id,
                self.poll_interval,
            )
            self.defer(
                trigger=KubeflowPipelineRunTrigger(
                    kfp_conn_id=self.kfp_conn_id,
                    run_id=run_id,
                    run_name=status.display_name,
                    run_url=status.url,
                    poll_interval=self.poll_interval,
                    max_poll_interval=max(self.poll_interval, min(300.0, 4 * self.poll_interval)),
                    deadline=deadline,
                    max_transient_errors=self.max_transient_errors,
                ),
                method_name="execute_complete",
            )
        return self._wait_in_worker(status, deadline)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, str | None]:
        status = self._get_run_retrying(str(external_id))
        self._remember(context, status)
        return self._finish(status)

    # -- waiting and finishing -------------------------------------------------------------

    def _get_run_retrying(self, run_id: str) -> RunStatus:
        """``get_run``, riding out transient API errors with jittered backoff (worker side)."""
        return self._retrying(f"read run {run_id}", lambda: self.backend.get_run(run_id))

    def _run_deadline(self, status: RunStatus) -> float | None:
        """``timeout`` counts from the run's creation, not from this try or reattach."""
        if not self.timeout:
            return None
        started = time.time()
        if status.created_at:
            try:
                created = datetime.fromisoformat(status.created_at.replace("Z", "+00:00"))
            except ValueError:
                self.log.warning(
                    "Unparsable creation time %r of run %s", status.created_at, status.run_id
                )
            else:
                if created.tzinfo is None:
                    created = created.replace(tzinfo=UTC)
                if 0 < created.timestamp() <= started:  # unset (epoch) or skewed: use now
                    started = created.timestamp()
        return started + self.timeout

    def _wait_in_worker(self, status: RunStatus, deadline: float | None) -> dict[str, str | None]:
        last_state = status.state
        while not status.state.is_terminal:
            if deadline is not None and time.time() >= deadline:
                self._cancel_after_timeout(status.run_id, status.state.value)
            sleep = self.poll_interval
            if deadline is not None:
                sleep = max(0.0, min(sleep, deadline - time.time()))
            time.sleep(sleep)
            try:
                status = self._get_run_retrying(status.run_id)
            except TransientBackendError:
                if deadline is not None and time.time() >= deadline:  # out of time, not luck
                    self._cancel_after_timeout(status.run_id, status.state.value)
                raise
            if status.state is not last_state:
                self.log.info("Run %s is %s", status.run_id, status.state.value)
                last_state = status.state
        return self._finish(status)

    def _finish(self, status: RunStatus) -> dict[str, str | None]:
        if status.state.is_success:
            self.log.info("Run %s SUCCEEDED: %s", status.run_id, status.url)
            return {"run_id": status.run_id, "run_url": status.url}
        message = status.error or "no error message from the service"
        self.log.error(
            "Run %s ended %s: %s\nRun page: %s",
            status.run_id,
            status.state.value,
            message,
            status.url,
        )
        raise RunFailedError(f"Kubeflow run {status.run_id} ended {status.state.value}: {message}")

    def _cancel_after_timeout(self, run_id: str, state: str | None) -> None:
        self.log.error(
            "Run %s did not finish within %ss (state %s); canceling it", run_id, self.timeout, state
        )
        try:
            self.backend.cancel(run_id)
        except Exception:
            self.log.exception("Canceling run %s after the timeout failed", run_id)
        raise AirflowException(
            f"Kubeflow run {run_id} timed out after {self.timeout}s (state {state})"
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, str | None]:
        """Resume after the trigger fired: turn its event into success or a clear failure."""
        self.kfp_run_id = event["run_id"]
        ti = context["ti"]
        if event.get("run_url"):
            ti.xcom_push(key=RUN_URL_XCOM_KEY, value=event["run_url"])
        status = event.get("status")
        if status == "success":
            self.log.info("Run %s SUCCEEDED: %s", event["run_id"], event.get("run_url"))
            return {"run_id": event["run_id"], "run_url": event.get("run_url")}
        if status == "failed":
            if "error" in event:  # the run's own error (events since it was added)
                error = event["error"] or "no error message from the service"
            else:
                error = event.get("message")
            self.log.error(
                "Run %s ended %s: %s\nRun page: %s",
                event["run_id"],
                event.get("state"),
                error,
                event.get("run_url"),
            )
            raise RunFailedError(
                f"Kubeflow run {event['run_id']} ended {event.get('state')}: {error}"
            )
        if status == "timeout":
            self._cancel_after_timeout(event["run_id"], event.get("state"))
        error_type = event.get("error_type")
        if error_type == AuthError.__name__:
            raise AirflowFailException(
                _auth_failure_message(self.kfp_conn_id, event.get("message"))
            )
        if error_type == RunNotFoundError.__name__:
            raise AirflowFailException(
                f"Kubeflow run {event['run_id']} no longer exists on the service (deleted, or "
                f"another namespace?): {event.get('message')}. Check the run in the UI; clear "
                "the task to start a new run."
            )
        self.log.error(
            "Waiting for run %s failed (%s): %s",
            event["run_id"],
            event.get("error_type"),
            event.get("message"),
        )
        raise AirflowException(
            f"Waiting for Kubeflow run {event['run_id']} failed "
            f"({event.get('error_type')}): {event.get('message')}"
        )

    def _remember(self, context: Context, status: RunStatus) -> None:
        """Push the run URL for the extra link (and failure callbacks) as soon as it is known."""
        self.kfp_run_id = status.run_id
        if status.url:
            context["ti"].xcom_push(key=RUN_URL_XCOM_KEY, value=status.url)

    def on_kill(self) -> None:
        """Worker-side kill (the task waits in the worker): stop the run too."""
        if self.kfp_run_id:
            self.log.info("Task killed; canceling run %s", self.kfp_run_id)
            try:
                self.backend.cancel(self.kfp_run_id)
            except Exception:
                self.log.exception("Canceling run %s failed", self.kfp_run_id)


def _auth_failure_message(conn_id: str, detail: object) -> str:
    return (
        f"Kubeflow Pipelines refused the credentials of connection {conn_id!r} (HTTP 401/403): "
        f"{detail}. Check the connection's token or Google credentials, that they have not "
        "expired, and that they may access the namespace / project. Not retrying."
    )
