"""Run a compiled Kubeflow pipeline and wait for it, idempotently.

One run per task instance, whatever happens to workers:

1. the run id is kept in Airflow 3.3's ``task_state_store`` (``ResumableJobMixin``),
   so a retry reconnects to it;
2. the run has a deterministic name (dag id, task id, logical date; the same for
   every try), and before submitting the operator looks that name up on the
   service, which closes the mixin's gap (worker killed between submit and persist).

A run found PENDING/RUNNING/PAUSED or SUCCEEDED is reused when it ran with the
parameters this try renders; a live one with other parameters is stopped first, a
succeeded one left alone, and a new run starts (``_set_aside``). With
``on_retry="resume"`` a FAILED run an earlier try saw fail on its own is resumed in
place (``_resume``); otherwise a new run starts (``_find_reusable_run``).

Retries versus clears: Airflow bumps the DAG run's ``clear_number`` when a person
clears a task, never on an automatic retry. The default run name carries it, so
a retry reattaches while a deliberate clear re-runs the pipeline (and rewrites
that date's output), which is what "Clear" means everywhere else in Airflow.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator, ResumableJobMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from kfp_bridge import run_report, try_history
from kfp_bridge.backends.base import RunRequest, RunState, RunStatus, same_parameters
from kfp_bridge.exceptions import (
    ApiVersionError,
    AuthError,
    BackendConfigError,
    BadInputError,
    ParameterError,
    PipelineNotFoundError,
    PipelineSpecError,
    RetryRefusedError,
    RunFailedError,
    RunNotFoundError,
)
from kfp_bridge.hooks.kfp import DEFAULT_GCP_CONN_ID, KubeflowPipelineHook
from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY, KubeflowRunLink
from kfp_bridge.pipeline_source import load_compiled_pipeline
from kfp_bridge.pipeline_spec import CompiledPipeline, pipeline_from_spec
from kfp_bridge.redaction import airflow_redact
from kfp_bridge.results import ResultCallback, RunResult, WrittenDataset
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.supervision import SupervisedClock
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger
from kfp_bridge.waiting import RunWaiter, WaitPolicy

if TYPE_CHECKING:
    from airflow.sdk import Context, XComArg

    from kfp_bridge.backends.base import Backend

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_RUN_NAME = 128
# A run found CANCELING (e.g. the user cleared the task while deferred) is waited for,
# then replaced; reattaching to it would only fail the new try. Still CANCELING after
# this long: the try fails (retryable) and the next try decides again.
CANCELING_WAIT_SECONDS = 120.0
# task_state_store key: the run this task terminated and why. KFP ends a terminated run
# FAILED, like a failed pipeline; only the bridge knows it stopped the run itself.
TERMINATED_KEY = "kfp_bridge_terminated_run"
# The run a try saw end FAILED on its own (a retryable failure): the only run a later
# try resumes. A run stopped from outside (a clear's on_kill in the triggerer, a user)
# also ends FAILED on KFP but never gets this record.
RETRYABLE_KEY = "kfp_bridge_retryable_run"
# The run a try last asked to resume in place (KFP :retry) and when. A resumed run keeps
# its creation time, so its timeout counts from the resume; a later try reattaching to it
# reads the time here.
RESUMED_KEY = "kfp_bridge_resumed_run"
# Errors no retry can fix: fail the task at once.
_FINAL_ERRORS = (
    ParameterError,
    PipelineSpecError,
    PipelineNotFoundError,
    ApiVersionError,
    BackendConfigError,
    BadInputError,
)


def default_deferrable() -> bool:
    """Deferrable unless ``[kfp_bridge] default_deferrable`` says otherwise.

    Airflow's ``[operators] default_deferrable`` is written as ``false`` into every
    generated airflow.cfg, so it cannot tell "turned off" from "not set"; it only
    counts when it is true. Waiting on a pipeline for an hour must not hold a worker.
    """
    return conf.getboolean("kfp_bridge", "default_deferrable", fallback=True) or conf.getboolean(
        "operators", "default_deferrable", fallback=False
    )


def default_run_name(context: Context, run_key: str | None = None) -> str:
    """``{dag_id}__{task_id}__{key}`` (+ ``__{map_index}``, ``__c{clear}``).

    ``key`` is ``run_key`` when given (what the DAG means by this run, such as its
    business date), else the logical date in UTC. The same for every try of a task
    instance, which is what makes reattach work; a clear (``dag_run.clear_number``
    > 0) gets a new name and so a new run. Without a logical date (manual runs may
    have none) the dag run id stands in.
    """
    ti = context["ti"]
    dag_run = context.get("dag_run")
    return run_name_for(
        ti.dag_id,
        ti.task_id,
        _name_key(context, run_key),
        map_index=getattr(ti, "map_index", -1),
        clear_number=getattr(dag_run, "clear_number", None) or 0,
    )


def earlier_run_names(context: Context, run_key: str | None = None) -> list[str]:
    """The default run names of this task instance's earlier clears (newest first)."""
    dag_run = context.get("dag_run")
    clears = getattr(dag_run, "clear_number", None) or 0
    ti = context["ti"]
    return [
        run_name_for(
            ti.dag_id,
            ti.task_id,
            _name_key(context, run_key),
            map_index=getattr(ti, "map_index", -1),
            clear_number=n,
        )
        for n in range(clears - 1, -1, -1)
    ]


def _name_key(context: Context, run_key: str | None) -> datetime | str:
    if run_key:
        return run_key
    return context.get("logical_date") or getattr(context.get("dag_run"), "run_id", None)


def run_name_for(
    dag_id: str,
    task_id: str,
    logical_date: datetime | str,
    *,
    map_index: int | None = -1,
    clear_number: int = 0,
) -> str:
    """The run name of a task instance (see :func:`default_run_name`); a run id for no date."""
    if isinstance(logical_date, datetime):
        stamp = logical_date.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    else:
        stamp = str(logical_date)
    parts = [dag_id, task_id, stamp]
    if map_index is not None and map_index >= 0:
        parts.append(str(map_index))
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

    :param pipeline_file: compiled pipeline YAML (templated): a local path or a
        ``gs://`` URI (read with the Google provider's GCS hook as ``gcp_conn_id``).
        Its inputs validate ``parameters`` before anything is submitted.
    :param pipeline_id: an uploaded pipeline (kfp backend) instead of, or besides, the file.
    :param pipeline_version_id: version of ``pipeline_id``.
    :param parameters: run parameters (templated); numeric/boolean strings are coerced
        to the declared types (see ``kfp_bridge.pipeline_spec``). A mapping, or anything
        that renders to one: an XComArg, or a Jinja string when the DAG renders templates
        as native objects (``render_template_as_native_obj=True``). Anything else fails
        the task before any call to the service, naming ``parameters``.
    :param experiment: experiment name, created when missing.
    :param run_name: run display name (templated). Default: ``default_run_name``.
        Keep it the same across tries, or reattach cannot work.
    :param run_key: what names this DAG run in the default run name, in place of the
        UTC logical date (templated), e.g. the business date the run is for; the
        name keeps the dag id, task id, map index and clear suffix, so a clear still
        gets a new run. It must be unique per DAG run and the same for every try.
        Names over 128 characters are shortened with a hash (KFP's UI shows 255).
    :param pipeline_root: where the run writes artifacts.
    :param service_account: service account the run's pods use.
    :param enable_caching: override the compiled caching settings (every task's
        ``cachingOptions.enableCache``). With ``pipeline_id`` the version's spec is then
        sent inline with the run, as KFP honours the choice only there, and the KFP UI
        does not link the run to the version (the task log says so).
    :param kfp_conn_id: connection of type ``kfp``.
    :param gcp_conn_id: Google Cloud connection whose identity reaches Google
        (``auth=google`` on the kfp connection, the vertex backend, ``gs://`` pipeline
        files), read by the Google provider's base hook. A missing
        ``google_cloud_default`` means application default credentials.
    :param impersonation_chain: service account to impersonate, or a list whose last
        entry is impersonated through the others (templated). Wins over the Google
        connection's own "Impersonation Chain" field, as in the Google provider.
    :param report_task: the pipeline task whose result report (a
        ``kfp-bridge-report:`` line, :mod:`kfp_bridge.run_report`) is the run's result:
        after a successful run it is read, logged, returned (``return_value["result"]``)
        and given to ``on_result``. A succeeded run whose report cannot be read still
        succeeds, without a result, and the log says why.
    :param on_result: ``on_result(result, context)`` with the
        :class:`~kfp_bridge.results.RunResult` of ``report_task``, called in the task
        after a successful run: the DAG's own code turns the pipeline's fields into
        asset events (``context["outlet_events"]``) and may return the
        :class:`~kfp_bridge.results.WrittenDataset` list OpenLineage reports as outputs
        (else the declared outlets). Its ``ValueError`` fails the task without retries.
        When the report could not be read it is called with no fields and
        ``RunResult.unavailable`` saying why, to check the output where it landed.
    :param cancel_on_kill: cancel the run when the task is killed (marked failed or
        success, cleared) while it waits; false lets the run outlive the task.
    :param on_retry: what a try does when it finds this target's run ended FAILED:
        ``"resume"`` (default) asks the service to rerun only the failed tasks of that
        same run (KFP ``:retry``; name unchanged, one run per target); ``"new_run"``
        submits a new run. Only a run an earlier try saw fail on its own (not on bad
        input) is resumed, so one terminated by kfp-bridge or a clear never is; a service
        without retry (Vertex, local) or a refusal gets a new run, and the log says why.
    :param deferrable: wait in the triggerer (default) instead of a worker slot.
    :param poll_interval: seconds between status polls at first, after each change of
        the run's state and after the first successful poll that follows transient API
        errors. Polls back off while the state does not change, and transient errors are
        retried with an exponential back-off; no pause of either kind ever exceeds the
        cap of four poll intervals, at most 300 s (never below ``poll_interval``), in the
        worker as in the triggerer (:class:`~kfp_bridge.waiting.WaitPolicy`).
    :param timeout: seconds (or timedelta, positive; ``None``: no limit) from the run's
        creation or, for a run resumed in place (``on_retry="resume"``), from its latest
        resume, since KFP keeps a resumed run's creation time; then the run is canceled
        and the task fails.
    :param max_transient_errors: consecutive transient API errors tolerated while waiting.
    :param retry_deadline: seconds a burst of consecutive transient API errors may last
        before the call or the wait gives up (default 900; ``None``: the count alone).

    XCom: ``return_value`` = ``{"run_id", "run_url"}``, with ``report_task`` also
    ``"result"`` (the report's fields, or None when it could not be read);
    ``kubeflow_run_url`` = the URL (the "Kubeflow run" link), pushed as soon as the run
    is known. Task state store: the run id, and the try history
    (:mod:`kfp_bridge.try_history`: each try's run, state, start, end, whether it
    resumed), which each try logs first and the task's Slack message shows; Airflow
    clears XCom before each try, the state store it keeps.
    """

    template_fields: Sequence[str] = (
        "pipeline_file",
        "pipeline_id",
        "pipeline_version_id",
        "parameters",
        "experiment",
        "run_name",
        "run_key",
        "pipeline_root",
        "service_account",
        "impersonation_chain",
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
        parameters: Mapping[str, Any] | XComArg | str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        run_key: str | None = None,
        pipeline_root: str | None = None,
        service_account: str | None = None,
        enable_caching: bool | None = None,
        kfp_conn_id: str = "kfp_default",
        gcp_conn_id: str = DEFAULT_GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        report_task: str | None = None,
        on_result: ResultCallback | None = None,
        cancel_on_kill: bool = True,
        on_retry: str = "resume",
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float | timedelta | None = None,
        max_transient_errors: int = 10,
        retry_deadline: float | None = 900.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not pipeline_file and not pipeline_id:
            raise ValueError("KubeflowPipelineRunOperator needs pipeline_file or pipeline_id")
        self.pipeline_file = pipeline_file
        self.pipeline_id = pipeline_id
        self.pipeline_version_id = pipeline_version_id
        # A templated field: an XComArg or a Jinja string stays as given until it is
        # rendered (render_template_as_native_obj can make a string a dict), and is
        # checked in execute (_rendered_parameters). A mapping is copied, as before.
        self.parameters: Any = dict(parameters) if isinstance(parameters, Mapping) else parameters
        if self.parameters is None:
            self.parameters = {}
        self.experiment = experiment
        self.run_name = run_name
        self.run_key = run_key
        if run_name and run_key:
            raise ValueError(
                "give run_name or run_key, not both (run_key is part of the default name)"
            )
        self.pipeline_root = pipeline_root
        self.service_account = service_account
        self.enable_caching = enable_caching
        self.kfp_conn_id = kfp_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.cancel_on_kill = cancel_on_kill
        if on_retry not in ("resume", "new_run"):
            raise ValueError(f"on_retry must be 'resume' or 'new_run', not {on_retry!r}")
        self.on_retry = on_retry
        self.report_task = report_task
        self.on_result = on_result
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is not None and not timeout > 0:  # 0 must not quietly mean "no limit"
            raise ValueError(
                f"timeout must be a positive number of seconds or a timedelta (None: no "
                f"timeout), got {timeout!r}"
            )
        self.policy = WaitPolicy(
            poll_interval=float(poll_interval),
            timeout=timeout,
            max_transient_errors=max_transient_errors,
            retry_deadline=None if retry_deadline is None else float(retry_deadline),
        )
        self.kfp_run_id: str | None = None
        self.run_result: dict[str, Any] | None = None  # the report_task's result report
        self.run_written: list[WrittenDataset] = []  # what on_result says the run wrote
        # (run id, return value) once a succeeded run is concluded in this process: the mixin
        # asks get_job_result after poll_until_complete, which concluded it already
        self._concluded: tuple[str, dict[str, Any]] | None = None
        self.kfp_run_url: str | None = None
        self.kfp_run_name: str | None = None
        self._context: Context | None = None
        self._request: RunRequest | None = None
        self._state_store: Any = None
        self._earlier_names: list[str] = []
        self._try_number: int | None = None  # this try's number, keying its history entry
        self._resumed = False  # this try resumed an earlier try's run (KFP :retry)
        self._resume_record: dict[str, str] | None = None  # {"run_id", "at"} of this try's resume
        self._try_started: str | None = None
        # The try history as this process last read or wrote it (kfp_bridge.try_history).
        # Failure callbacks read it here: once a try fails, Airflow gives the next try a
        # new task instance id, and the state store no longer answers the old one.
        self.try_history: list[try_history.TryEntry] = []

    @cached_property
    def backend(self) -> Backend:
        return self.hook.get_conn()

    @cached_property
    def hook(self) -> KubeflowPipelineHook:
        return KubeflowPipelineHook(
            kfp_conn_id=self.kfp_conn_id,
            gcp_conn_id=self.gcp_conn_id,
            impersonation_chain=self.impersonation_chain,
        )

    @cached_property
    def _waiter(self) -> RunWaiter:
        # The worker's clock: a wait orphaned by its supervisor's death ends the process.
        return RunWaiter(
            lambda: self.backend,
            self.policy,
            log=self.log,
            redact=airflow_redact,
            clock=SupervisedClock(self.log),
        )

    # -- execute ---------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        self._state_store = context.get("task_state_store")
        self._context = context
        self._begin_try(context)
        try:
            self._request = self._build_request(context)  # validates before anything is submitted
        except AuthError as exc:
            raise AirflowFailException(_auth_failure_message(self.kfp_conn_id, exc)) from exc
        # provisional until the run (and its creation time) is known
        self._waiter.deadline = self.policy.deadline_for(None, time.time())
        self.log.info(
            "Kubeflow run %r: pipeline %s, backend %s, connection %s",
            self._request.display_name,
            self.pipeline_file or self.pipeline_id,
            self.backend.name,
            self.kfp_conn_id,
        )
        try:
            return self.execute_resumable(context)
        except AuthError as exc:  # 401/403 at any step: retries cannot fix credentials
            raise AirflowFailException(_auth_failure_message(self.kfp_conn_id, exc)) from exc
        except _FINAL_ERRORS as exc:  # e.g. a KFP 1.x server, a missing pipeline version
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def _rendered_parameters(self) -> dict[str, Any]:
        """``parameters`` after rendering: a mapping of names to values, or a clear error."""
        given = self.parameters
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise AirflowFailException(
                "parameters must render to a mapping of parameter names to values, got "
                f"{type(given).__name__}"
            )
        bad = sorted({type(k).__name__ for k in given if not isinstance(k, str)})
        if bad:
            raise AirflowFailException(
                f"parameters must have string keys (parameter names), got keys of type "
                f"{', '.join(bad)}"
            )
        return dict(given)

    def _build_request(self, context: Context) -> RunRequest:
        given = self._rendered_parameters()  # before any call to the service
        compiled: CompiledPipeline | None = None
        version_id = self.pipeline_version_id
        try:
            if self.pipeline_file:
                compiled = load_compiled_pipeline(
                    self.pipeline_file,
                    gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                )
                parameters = compiled.validate_parameters(given)
            if self.pipeline_id:
                # Looked up before anything is submitted: a missing pipeline or version is
                # named now (the KFP API would answer the run with a 500, read as transient),
                # and with pipeline_id alone the latest version is the one checked and run.
                version_id, spec = self._waiter.call(
                    f"look up pipeline {self.pipeline_id}",
                    lambda: self.backend.pipeline_version(self.pipeline_id, version_id),
                )
                uploaded = pipeline_from_spec(
                    spec, source=f"pipeline {self.pipeline_id} version {version_id}"
                )
                parameters = uploaded.validate_parameters(given)
                self.log.info(
                    "Pipeline %s version %s found; parameters checked against it",
                    self.pipeline_id,
                    version_id,
                )
                if self.enable_caching is not None:
                    compiled = self._inline_version(uploaded, version_id)
        except _FINAL_ERRORS as exc:
            # Retrying cannot fix a wrong parameter, a broken file or a missing pipeline.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        if self.run_name:
            run_name, self._earlier_names = sanitize_run_name(self.run_name), []
        else:
            key = str(self.run_key).strip() if self.run_key else None
            if self.run_key is not None and not key:
                raise AirflowFailException(
                    f"run_key rendered empty ({self.run_key!r}): it names the DAG run in the "
                    "Kubeflow run name"
                )
            run_name = default_run_name(context, key)
            self._earlier_names = earlier_run_names(context, key)
        return RunRequest(
            display_name=run_name,
            pipeline_spec=compiled.pipeline_spec if compiled else {},
            platform_spec=compiled.platform_spec if compiled else None,
            pipeline_path=compiled.path if compiled else None,
            parameters=parameters,
            # An uploaded version with a caching override travels inline (_inline_version).
            pipeline_id=None if compiled else self.pipeline_id,
            pipeline_version_id=None if compiled else version_id,
            experiment=self.experiment,
            pipeline_root=self.pipeline_root,
            service_account=self.service_account,
            enable_caching=self.enable_caching,
            labels={
                "airflow-dag-id": context["ti"].dag_id,
                "airflow-task-id": context["ti"].task_id,
            },
        )

    def _inline_version(self, uploaded: CompiledPipeline, version_id: str) -> CompiledPipeline:
        """An uploaded version's spec, to be sent with the run so ``enable_caching`` holds.

        KFP applies a caching choice only to a spec sent with the run: a run that references
        an uploaded version runs the version's spec as compiled (the SDK drops the choice
        there without a word, kubeflow/pipelines#10352). The cost: the KFP UI does not
        link the run to the version.
        """
        self.log.warning(
            "enable_caching=%s: KFP applies a caching choice only to a pipeline spec sent "
            "with the run, so this run carries pipeline %s version %s's spec inline "
            "(unchanged but for the caching) and the KFP UI will not link it to that version",
            self.enable_caching,
            self.pipeline_id,
            version_id,
        )
        return uploaded

    # -- ResumableJobMixin -----------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        """Reuse a run with our name when one is live or succeeded; otherwise start one."""
        request = self._request
        assert request is not None
        try:
            existing = self._find_reusable_run(request)
            if existing is not None:
                self.log.info(
                    "Reattaching to existing run %s of %s (%s), same parameters, state %s%s %s",
                    existing.run_id,
                    existing.created_at or "an unknown time",
                    request.display_name,
                    existing.state.value,
                    ": nothing recomputed. Run:" if existing.state.is_success else ". Run:",
                    existing.url,
                )
                status = existing
            else:
                self._wait_for_earlier_generations(request)
                status = self._waiter.submit(request)
        except _FINAL_ERRORS as exc:
            # The backend refused the pipeline or its parameters: retries cannot fix that.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        self._remember(context, status)
        return status.run_id

    def _find_reusable_run(self, request: RunRequest) -> RunStatus | None:
        runs = self._waiter.call(
            f"find runs named {request.display_name}",
            lambda: self.backend.find_runs(request.display_name, request.experiment),
        )
        stopped: set[str] = set()  # seen CANCELING: stopped by someone, never resumed
        for run in runs:
            if run.state is RunState.CANCELING:
                stopped.add(run.run_id)
                self.log.info("Run %s is CANCELING; waiting for it to end first", run.run_id)
                run = self._waiter.settle(run, within=CANCELING_WAIT_SECONDS)
                if run.state is RunState.CANCELING:
                    raise AirflowException(
                        f"Earlier Kubeflow run {run.run_id} ({request.display_name}) is still "
                        f"CANCELING after {CANCELING_WAIT_SECONDS:.0f}s; not starting another "
                        "run beside it. The next try decides again."
                    )
            if run.state.is_reattachable:
                if same_parameters(request.parameters, run.parameters):
                    return run
                self._set_aside(run, request)
        resume_checked = False
        for run in runs:
            if run.state.is_reattachable:  # set aside above, and said why
                continue
            reason = self._terminated_by_us(run.run_id)
            if not resume_checked and not reason and run.run_id not in stopped:
                resume_checked = True  # only the newest ended run is a candidate
                resumed = self._resume(run, request)
                if resumed is not None:
                    return resumed
            if reason:
                self.log.info(
                    "Earlier run %s ended %s after kfp-bridge terminated it (%s); "
                    "starting a new run",
                    run.run_id,
                    run.state.value,
                    reason,
                )
            else:
                self.log.info(
                    "Earlier run %s ended %s; starting a new run. Its error: %s",
                    run.run_id,
                    run.state.value,
                    (run.error or "no error message").splitlines()[0],
                )
        return None

    def _resume(self, run: RunStatus, request: RunRequest) -> RunStatus | None:
        """Retry ``run`` in place when it ended FAILED (not by us) with our parameters."""
        if (
            self.on_retry != "resume"
            or run.state is not RunState.FAILED
            or not self._seen_failing(run.run_id)
            or not same_parameters(request.parameters, run.parameters)
        ):
            return None
        # The timeout counts from here. Kept before asking, so a worker lost right after the
        # resume cannot leave the next try counting from the run's creation; a refused
        # resume leaves the run FAILED, never reattached, so the record then means nothing.
        self._record_resume(run.run_id, datetime.now(UTC).isoformat())
        try:
            self._waiter.call(f"retry run {run.run_id}", lambda: self.backend.retry(run.run_id))
        except RetryRefusedError as exc:
            # Refused, but the run we saw FAILED may have been retried meanwhile: our own
            # request whose answer was lost (the call was repeated), or another's. It may
            # even have succeeded by now. Any state but FAILED means a retry happened:
            # follow it, since a second run beside it would write the same output.
            status = self._waiter.call(
                f"get run {run.run_id}", lambda: self.backend.get_run(run.run_id)
            )
            if status.state is RunState.FAILED:
                self.log.info("Not resuming run %s: %s; starting a new run", run.run_id, exc)
                return None
            self.log.info(
                "Run %s is %s since our resume request, refused (%s): following it",
                run.run_id,
                status.state.value,
                exc,
            )
        else:
            status = self._waiter.call(
                f"get run {run.run_id}", lambda: self.backend.get_run(run.run_id)
            )
        self._resumed = True
        self.log.info(
            "Resumed run %s (%s) after FAILED (%s): only its failed tasks rerun. Run: %s",
            run.run_id,
            request.display_name,
            (run.error or "no error message").splitlines()[0],
            status.url,
        )
        return status

    def _set_aside(self, run: RunStatus, request: RunRequest) -> None:
        """A run under our name with other parameters (a new model, a changed setting).

        It is not this task's work: a succeeded one is left as it is, an active one
        is stopped and waited for, so at most one run writes the output; then a
        new run starts. Parameter names only in the log: values may be long.
        """
        theirs = dict(run.parameters or {})
        changed = sorted(
            k
            for k in set(request.parameters) | set(theirs)
            if not same_parameters({k: request.parameters.get(k)}, {k: theirs.get(k)})
        )
        if not run.state.is_terminal:
            self.log.warning(
                "Run %s (%s) is %s with other parameters (%s): stopping it before a new run. "
                "Run: %s",
                run.run_id,
                request.display_name,
                run.state.value,
                ", ".join(changed),
                run.url,
            )
            self._cancel(run.run_id, reason="Parameters changed", record="parameters changed")
            self._await_end(run, "with other parameters")
            return
        self.log.info(
            "Earlier run %s (%s) %s with other parameters (%s): not reusing it; "
            "starting a new run. Run: %s",
            run.run_id,
            request.display_name,
            run.state.value,
            ", ".join(changed),
            run.url,
        )

    def _wait_for_earlier_generations(self, request: RunRequest) -> None:
        """Before a cleared task's new run: the runs of its earlier clears must have ended.

        A clear while deferred stops the old run (the trigger's ``on_kill``), but the
        new try can start while that run is still CANCELING, and on a real cluster an
        old pod or load job may still write. So wait (bounded) for every earlier
        generation's run to end; stop one still active when ``cancel_on_kill``.
        """
        for name in self._earlier_names:
            runs = self._waiter.call(
                f"find runs named {name}",
                lambda name=name: self.backend.find_runs(name, request.experiment),
            )
            for run in runs:
                if run.state.is_terminal:
                    continue
                if run.state is not RunState.CANCELING and self.cancel_on_kill:
                    self.log.warning(
                        "Run %s of an earlier clear (%s) is still %s: stopping it first",
                        run.run_id,
                        name,
                        run.state.value,
                    )
                    self._cancel(run.run_id, reason="Replaced by a clear", record="cleared")
                else:
                    self.log.info(
                        "Run %s of an earlier clear (%s) is %s: waiting for it to end first",
                        run.run_id,
                        name,
                        run.state.value,
                    )
                self._await_end(run, f"of an earlier clear ({name})")

    def _await_end(self, run: RunStatus, what: str) -> None:
        """Wait (bounded) for ``run`` to end; still active: fail the try, the next decides."""
        ended = self._waiter.settle(run, within=CANCELING_WAIT_SECONDS)
        if not ended.state.is_terminal:
            raise AirflowException(
                f"Run {run.run_id} {what} is still {ended.state.value} after "
                f"{CANCELING_WAIT_SECONDS:.0f}s; not starting another run beside it. "
                "The next try decides again."
            )

    def get_job_status(self, external_id: Any, context: Context) -> str:
        try:
            status = self._waiter.read(str(external_id))
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
        if request is not None and not same_parameters(request.parameters, status.parameters):
            self.log.info(
                "Stored run %s ran with other parameters than this try renders: not reattaching",
                external_id,
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

    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:
        run_id = str(external_id)
        self.kfp_run_id = run_id
        status = self._waiter.read(run_id)
        self._remember(context, status)
        # the timeout counts from the run's creation, or its latest resume (which keeps the
        # creation time), never from this try or a reattach
        started = self._resumed_at(run_id) or status.created_at
        deadline = self._waiter.deadline = self.policy.deadline_for(started, time.time())
        if status.state.is_terminal:
            return self._conclude(RunEvent.ended(status))
        if self.deferrable:
            self.log.info(
                "Deferring: the triggerer polls run %s every %ss (backing off) until it ends",
                run_id,
                self.policy.poll_interval,
            )
            self.defer(
                trigger=KubeflowPipelineRunTrigger(
                    kfp_conn_id=self.kfp_conn_id,
                    run_id=run_id,
                    run_name=status.display_name,
                    run_url=status.url,
                    deadline=deadline,
                    policy=self.policy,
                    gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
            )
        event = self._waiter.wait(
            run_id, run_name=status.display_name, run_url=status.url, last_state=status.state
        )
        return self._conclude(event)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        if self._concluded is not None and self._concluded[0] == str(external_id):
            return self._concluded[1]  # the result is published once, not per question
        status = self._waiter.read(str(external_id))
        self._remember(context, status)
        return self._conclude(RunEvent.ended(status))

    # -- finishing -------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the same ending as a wait in the worker."""
        self._state_store = context.get("task_state_store")
        self._context = context
        self._try_number = _try_number(context)
        # This process has not read the connection yet: register its secrets before any
        # service text (the run's error, the service's message) is logged or raised.
        self.hook.register_secrets()
        run_event = RunEvent.from_payload(event)
        if run_event.run_url:
            context["ti"].xcom_push(key=RUN_URL_XCOM_KEY, value=run_event.run_url)
        return self._conclude(run_event)

    def _conclude(self, event: RunEvent) -> dict[str, Any]:
        """The one path from the end of a wait (worker or trigger) to the task's outcome."""
        self.kfp_run_id = event.run_id
        self.kfp_run_url = event.run_url or self.kfp_run_url
        self.kfp_run_name = event.run_name or self.kfp_run_name
        state = event.state.value if event.state else "unknown"
        self._record_try(
            run_id=event.run_id,
            state=state,
            end=try_history.now_iso(),
            failed_tasks=list(event.failed_tasks),
            **({"url": event.run_url} if event.run_url else {}),
        )
        if event.outcome is Outcome.SUCCEEDED:
            self.log.info("Run %s SUCCEEDED: %s", event.run_id, event.run_url)
            self._publish_result(event)
            done: dict[str, Any] = {"run_id": event.run_id, "run_url": event.run_url}
            if self.report_task:
                done["result"] = self.run_result
            self._concluded = (event.run_id, done)
            return done
        if event.outcome is Outcome.FAILED:
            reason = self._terminated_by_us(event.run_id)
            if reason:  # KFP ends a terminated run FAILED: say who stopped it, and why
                raise RunFailedError(
                    f"Kubeflow run {event.run_id} was terminated by kfp-bridge ({reason}) "
                    f"and ended {state}"
                )
            message = event.message or "no error message from the service"
            self.log.error(
                "Run %s ended %s: %s\nRun page: %s", event.run_id, state, message, event.run_url
            )
            failure = event.failure
            if failure is not None and failure.permanent:
                # Bad input fails the same way on every try: fail now, naming it.
                where = f" (input {failure.input})" if failure.input else ""
                raise AirflowFailException(
                    f"Kubeflow run {event.run_id} failed on bad input{where}, not retrying: "
                    f"{failure.error_type}: {failure.message}"
                )
            self._record_retryable(event.run_id)
            raise RunFailedError(f"Kubeflow run {event.run_id} ended {state}: {message}")
        if event.outcome is Outcome.TIMED_OUT:
            self.log.error(
                "Run %s did not finish within %ss of its creation or latest resume (state %s)",
                event.run_id,
                self.policy.timeout,
                state,
            )
            self._cancel(
                event.run_id,
                reason="Timed out",
                record=f"timed out after {self.policy.timeout}s",
            )
            raise AirflowException(
                f"Kubeflow run {event.run_id} timed out after {self.policy.timeout}s "
                f"(state {state}); kfp-bridge terminated it"
            )
        if event.outcome is Outcome.AUTH_ERROR:
            raise AirflowFailException(
                f"{_auth_failure_message(self.kfp_conn_id, event.message)} "
                f"{self._after_auth_error(event)}"
            )
        if event.outcome is Outcome.NOT_FOUND:
            raise AirflowFailException(
                f"Kubeflow run {event.run_id} no longer exists on the service (deleted, or "
                "another namespace?). Check the run in the UI; clear the task to start a new "
                f"run. The service said: {event.message}"
            )  # service text last: a URL in it is never followed by punctuation
        self.log.error(
            "Waiting for run %s failed (%s): %s", event.run_id, event.outcome.value, event.message
        )
        raise AirflowException(
            f"Waiting for Kubeflow run {event.run_id} failed ({event.outcome.value}): "
            f"{event.message}"
        )

    def _publish_result(self, event: RunEvent) -> None:
        """Read the run's result report; hand it to ``on_result``.

        A SUCCEEDED run never fails its task over the report: when the report cannot
        be read (no log route on this host, pod and archive gone, no report line) the
        task says why and ``on_result`` gets no fields, with the reason, to check the
        output itself. What ``on_result`` finds must keep the DAG's contract (it raises
        ``ValueError`` otherwise), or the task fails.
        """
        task = self.report_task
        if not task:
            return
        unavailable = None
        try:
            report = self._waiter.call(
                f"read the result of task {task!r} of run {event.run_id}",
                lambda: self.backend.task_report(event.run_id, task),
            )
        except Exception as exc:  # a log route or a log: never the run's outcome
            report, unavailable = None, str(exc) or type(exc).__name__
        if report is None:
            unavailable = unavailable or (
                f"its log holds no result report (a '{run_report.PREFIX}' line)"
            )
            self._report_unavailable(task, event, unavailable)
            result = RunResult(event.run_id, event.run_url, task, unavailable=unavailable)
        else:
            self.run_result = report.fields
            self.log.info("Task %r of run %s reported: %s", task, event.run_id, report.fields)
            result = RunResult(event.run_id, event.run_url, task, dict(report.fields))
        if self.on_result is None:
            return
        try:
            written = self.on_result(result, self._context)
        except ValueError as exc:  # the pipeline broke the DAG's contract: retries cannot fix it
            raise AirflowFailException(str(exc)) from exc
        self.run_written = list(written or ())

    def _report_unavailable(self, task: str, event: RunEvent, reason: str) -> None:
        host = getattr(self.backend, "host", None) or self.backend.name
        self.log.warning(
            "Kubeflow run %s SUCCEEDED; the result report of task %r is not available "
            "through %s: %s. The task succeeds without a report%s. Run: %s",
            event.run_id,
            task,
            host,
            reason,
            "; on_result checks the output without it" if self.on_result else "",
            event.run_url,
        )

    # -- OpenLineage (the provider's DefaultExtractor calls these) -----------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inlets in, what ``on_result`` says the run wrote (else the outlets) out, the run."""
        return self._lineage(written=self.run_written)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion, without a result: the declared outlets, the run if one exists."""
        return self._lineage(written=[])

    def _lineage(self, written: list[WrittenDataset]) -> Any:
        from kfp_bridge.lineage import operator_lineage

        try:
            backend = self.hook.backend_name
        except Exception:  # lineage never fails a task
            backend = None
        return operator_lineage(
            inlets=self.inlets,
            outlets=self.outlets,
            written=written,
            run_id=self.kfp_run_id,
            run_name=self.kfp_run_name,
            run_url=self.kfp_run_url,
            backend=backend,
        )

    def _remember(self, context: Context, status: RunStatus) -> None:
        """Push the run URL for the extra link (and failure callbacks) as soon as it is known."""
        self.kfp_run_id = status.run_id
        self.kfp_run_url = status.url
        self.kfp_run_name = status.display_name or None
        if status.url:
            context["ti"].xcom_push(key=RUN_URL_XCOM_KEY, value=status.url)
        self._record_try(
            run_id=status.run_id,
            state=status.state.value,
            resumed=self._resumed,
            url=status.url,
            failed_tasks=[t.name for t in status.failed_tasks],
        )

    def _begin_try(self, context: Context) -> None:
        """Log the earlier tries' runs (one line each) and open this try's history entry."""
        self._try_number = _try_number(context)
        self._resumed = False
        self._resume_record = None
        self._try_started = try_history.now_iso()
        if self._state_store is None or self._try_number is None:
            return
        try:
            history = self.try_history = try_history.load(self._state_store)
        except Exception:
            self.log.warning("Could not read the try history", exc_info=True)
            return
        earlier = try_history.earlier(history, self._try_number)
        if earlier:
            self.log.info(
                "Try %s; the runs of earlier tries:\n%s",
                self._try_number,
                "\n".join(try_history.line(e) for e in earlier),
            )

    def _record_try(self, **fields: Any) -> None:
        """Merge ``fields`` into this try's entry of the history (task state store)."""
        if self._state_store is None or self._try_number is None:
            return
        entry: dict[str, Any] = {"try_number": self._try_number, **fields}
        if self._try_started:
            entry.setdefault("start", self._try_started)
        try:
            self.try_history = try_history.record(self._state_store, entry)  # type: ignore[arg-type]
        except Exception:  # the history never fails a try
            self.log.warning(
                "Could not record try %s in the history", self._try_number, exc_info=True
            )

    def _cancel(self, run_id: str, *, reason: str, record: str) -> None:
        """Cancel and confirm; never sent to a run that already ended, never raises.

        The run and the reason are kept in the task state store first, so a later
        try tells this termination from a failure of the pipeline.
        """
        self._store(
            TERMINATED_KEY, {"run_id": run_id, "reason": record}, f"the termination of {run_id}"
        )
        try:
            self._waiter.cancel(run_id, reason=reason)
        except Exception:
            self.log.exception("Canceling run %s failed", run_id)

    def _after_auth_error(self, event: RunEvent) -> str:
        """The run outlives a refused wait: stop it if these credentials still may; say what.

        A 401/403 in the middle of a wait (an expired or revoked token) ends the task,
        not the run. With ``cancel_on_kill`` the run is terminated where the service
        still allows it; otherwise, or when it refuses, the message says the run may
        still be running, with its link and how to stop it.
        """
        where = f"Run page: {event.run_url} " if event.run_url else ""
        if self.cancel_on_kill:
            try:
                status = self._waiter.cancel(
                    event.run_id, reason="Credentials refused while waiting", within=10.0
                )
            except Exception as exc:
                self.log.warning("Could not stop run %s: %s", event.run_id, exc)
            else:
                if status is None or status.state.is_terminal:
                    state = status.state.value if status else "gone"
                    return f"Kubeflow run {event.run_id} was stopped ({state}). {where}".strip()
        return (
            f"Kubeflow run {event.run_id} may still be running: stop it in the Kubeflow UI "
            f"(Terminate), or fix the connection and clear this task, whose next try stops "
            f"the earlier run before starting a new one. {where}"
        ).strip()

    # -- records kept across tries (task state store): each is about one run ---------------
    def _store(self, key: str, record: dict[str, str], what: str) -> None:
        """Keep ``record`` under ``key``; a store that fails is logged, never fatal."""
        if self._state_store is None:
            return
        try:
            self._state_store.set(key, record)
        except Exception:
            self.log.warning("Could not record %s", what, exc_info=True)

    def _stored(self, key: str, run_id: str) -> Mapping[str, Any] | None:
        """The record under ``key`` when it is about ``run_id`` (unreadable: none)."""
        if self._state_store is None:
            return None
        try:
            record = self._state_store.get(key)
        except Exception:
            return None
        return record if isinstance(record, Mapping) and record.get("run_id") == run_id else None

    def _record_retryable(self, run_id: str) -> None:
        self._store(RETRYABLE_KEY, {"run_id": run_id}, f"run {run_id} as resumable")

    def _record_resume(self, run_id: str, at: str) -> None:
        self._resume_record = {"run_id": run_id, "at": at}
        self._store(RESUMED_KEY, self._resume_record, f"the resume of run {run_id}")

    def _resumed_at(self, run_id: str) -> str | None:
        """When a try of this task last resumed ``run_id`` (ISO time), if one did."""
        record = self._resume_record
        if not (record and record.get("run_id") == run_id):
            record = self._stored(RESUMED_KEY, run_id)
        return str(record.get("at") or "") or None if record else None

    def _seen_failing(self, run_id: str) -> bool:
        """Whether a try of this task saw ``run_id`` end FAILED on its own."""
        return self._stored(RETRYABLE_KEY, run_id) is not None

    def _terminated_by_us(self, run_id: str) -> str | None:
        """Why this task terminated ``run_id``, if it did."""
        record = self._stored(TERMINATED_KEY, run_id)
        return str(record.get("reason") or "terminated") if record else None

    def on_kill(self) -> None:
        """Worker-side kill (the task waits in the worker): stop the run too, unless it ended."""
        if self.kfp_run_id and not self.cancel_on_kill:
            self.log.info(
                "Task killed; run %s keeps running (cancel_on_kill=False)", self.kfp_run_id
            )
        elif self.kfp_run_id:
            self._cancel(self.kfp_run_id, reason="Task killed", record="the task was killed")


def _try_number(context: Context) -> int | None:
    number = getattr(context.get("ti"), "try_number", None)
    return number if isinstance(number, int) and number > 0 else None


def _auth_failure_message(conn_id: str, detail: object) -> str:
    # The backend's message already says what to check; saying it again is noise.
    return f"Connection {conn_id!r}: the service refused its credentials, not retrying. {detail}"
