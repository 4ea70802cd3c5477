"""KubeflowPipelineRunOperator: validation, deferral, idempotent retries, kill.

Most tests drive the operator against the stand-in KFP API server (real
kfp-server-api client) with a stand-in task context; the worker-kill test runs
a real ``airflow dags test`` process with the local backend (real kfp.local
runs), SIGKILLs it mid-wait and runs ``dags test`` again (a new DAG run: this
exercises the lookup by run name, not the task_state_store).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from kfp_bridge import try_history
from kfp_bridge.backends.base import RunState, RunStatus
from kfp_bridge.backends.local import LocalBackend
from kfp_bridge.backends.vertex import VertexBackend
from kfp_bridge.exceptions import RunFailedError, TransientBackendError
from kfp_bridge.failures import Failure
from kfp_bridge.links.local_run import FALLBACK_BASE_URL, local_run_url
from kfp_bridge.operators import kfp as operator_module
from kfp_bridge.operators.kfp import (
    KubeflowPipelineRunOperator,
    default_run_name,
    sanitize_run_name,
)
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.run_report import report_line
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger
from tests.bridge._helpers import (
    AIRFLOW_BIN,
    PIPELINE_PYTHON,
    TINY_PIPELINE,
    TaskInstance,
    TaskStateStore,
    airflow_env,
    local_connection_env,
    task_context,
    wait_for,
)
from tests.bridge.test_vertex_backend import RecordingPipelineServiceClient

LOGICAL_DATE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)  # 06:00 JST on 11-27
RUN_NAME = "daily_prediction__predict__2026-11-26T210000Z"


def _operator(conn_id: str, **kwargs) -> KubeflowPipelineRunOperator:
    defaults = {
        "task_id": "predict",
        "pipeline_file": str(TINY_PIPELINE),
        "parameters": {"message": "2026-11-27", "repeat": "2"},
        "kfp_conn_id": conn_id,
        "poll_interval": 0.01,
        "deferrable": False,
    }
    return KubeflowPipelineRunOperator(**{**defaults, **kwargs})


def _runs_named(server, name: str = RUN_NAME) -> list[dict]:
    return [r for r in server.runs() if r["display_name"] == name]


def _run_trigger(trigger: KubeflowPipelineRunTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), 30))


def _a_run_the_bridge_terminated(server, conn_id: str, store: TaskStateStore) -> dict:
    """A deferred try that timed out: the bridge terminated its run, which KFP ends FAILED."""
    server.set_schedule(pending=0, running=100000, canceling=1)
    op = _operator(conn_id, deferrable=True, timeout=0.3)
    context = task_context(TaskInstance(), store, LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    with pytest.raises(AirflowException, match="kfp-bridge terminated it"):
        op.execute_complete(context, _run_trigger(deferred.value.trigger))
    [stopped] = _runs_named(server)
    assert server.set_run_state(stopped["run_id"], "FAILED")["state"] == "FAILED"
    return stopped


def _a_try_failing_in(server, conn_id: str, store: TaskStateStore, task: str) -> dict:
    """A first try whose run fails in ``task`` (a MemoryError); the run as the server has it."""
    server.set_schedule(outcome="FAILED", failed_task=task, error="MemoryError")
    with pytest.raises(RunFailedError, match="MemoryError"):
        _operator(conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = _runs_named(server)
    return failed


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"message": "x", "lookback_days": 28}, "'lookback_days'"),
        ({"repeat": 2}, "'message'"),
        ({"message": "x", "repeat": "twenty-eight"}, "'repeat'"),
    ],
)
def test_bad_parameters_fail_before_any_run_is_created(kfp_server, kfp_conn_id, parameters, named):
    op = _operator(kfp_conn_id, parameters=parameters, retries=3)
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match=named):  # no retries: they cannot help
        op.execute(task_context(ti, TaskStateStore(), LOGICAL_DATE))
    assert kfp_server.runs() == []
    assert not [r for r in kfp_server.requests() if r["method"] == "POST"]
    assert ti.xcom == {}


def test_parameters_may_be_an_xcomarg_until_rendered():
    """A templated field: another task's output is accepted at parse time, as in Airflow."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("xcom_params", schedule=None):
        upstream = EmptyOperator(task_id="params")
        op = _operator("kfp_default", parameters=upstream.output)
    assert op.parameters == upstream.output
    assert op.upstream_task_ids == {"params"}


@pytest.mark.parametrize(
    ("rendered", "problem"),
    [
        ("message=x", "mapping of parameter names to values, got str"),
        (["message", "x"], "mapping of parameter names to values, got list"),
        ({1: "x"}, "string keys (parameter names), got keys of type int"),
    ],
)
def test_parameters_rendered_to_a_non_mapping_fail_before_any_service_call(
    kfp_server, kfp_conn_id, rendered, problem
):
    op = _operator(kfp_conn_id, parameters="{{ params.p }}", retries=3)
    op.parameters = rendered  # what rendering (e.g. as a native object) left
    with pytest.raises(AirflowFailException, match=rf"^parameters must .*{re.escape(problem)}"):
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert kfp_server.requests() == []


@pytest.mark.parametrize("native", [True, False])
def test_parameters_from_a_jinja_string_run_when_they_render_to_a_mapping(
    kfp_server, kfp_conn_id, native
):
    """With render_template_as_native_obj the string renders to a dict; else to text."""
    from airflow.sdk import DAG

    with DAG("jinja_params", schedule=None, render_template_as_native_obj=native):
        op = _operator(kfp_conn_id, parameters="{{ chosen }}")
    op.render_template_fields({"chosen": {"message": "2026-11-27", "repeat": "2"}})
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    if not native:
        with pytest.raises(AirflowFailException, match=r"a mapping .* got str$"):
            op.execute(context)
        assert kfp_server.requests() == []
        return
    result = op.execute(context)
    [run] = _runs_named(kfp_server)
    assert result["run_id"] == run["run_id"]
    assert run["runtime_config"]["parameters"] == {"message": "2026-11-27", "repeat": 2}


def test_parameters_may_be_any_mapping(kfp_server, kfp_conn_id):
    from types import MappingProxyType

    params = MappingProxyType({"message": "2026-11-27", "repeat": "2"})
    result = _operator(kfp_conn_id, parameters=params).execute(
        task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    )
    [run] = _runs_named(kfp_server)
    assert result["run_id"] == run["run_id"] and run["state"] == "SUCCEEDED"
    assert run["runtime_config"]["parameters"] == {"message": "2026-11-27", "repeat": 2}


@pytest.mark.parametrize("timeout", [0, -5, timedelta(0)])
def test_a_timeout_that_is_not_positive_is_refused_naming_it(timeout):
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds"):
        _operator("kfp_default", timeout=timeout)


def test_no_timeout_is_none(kfp_conn_id):
    assert _operator(kfp_conn_id, timeout=None).policy.timeout is None
    assert _operator(kfp_conn_id, timeout=timedelta(minutes=2)).policy.timeout == 120


def test_missing_pipeline_file_fails_before_any_run(kfp_server, kfp_conn_id, tmp_path):
    op = _operator(kfp_conn_id, pipeline_file=str(tmp_path / "missing.yaml"))
    with pytest.raises(AirflowFailException, match="compiled pipeline file not found"):
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert kfp_server.runs() == []


# -- run names -------------------------------------------------------------------------------


def test_default_run_name_is_the_same_for_every_try():
    ti = TaskInstance()
    assert default_run_name(task_context(ti, None, LOGICAL_DATE)) == RUN_NAME
    assert default_run_name(task_context(ti, None, LOGICAL_DATE)) == RUN_NAME
    mapped = TaskInstance(map_index=3)
    assert default_run_name(task_context(mapped, None, LOGICAL_DATE)) == f"{RUN_NAME}__3"
    cleared = task_context(ti, None, LOGICAL_DATE, clear_number=2)
    assert default_run_name(cleared) == f"{RUN_NAME}__c2"
    assert sanitize_run_name("a b/c:d") == "a-b-c-d"
    assert len(sanitize_run_name("x" * 300)) == 128


def test_run_key_names_the_run_in_place_of_the_utc_logical_date(kfp_server, kfp_conn_id):
    """The DAG's key (e.g. its business date) replaces the UTC stamp; clears still count."""
    ti = TaskInstance()
    context = task_context(ti, None, LOGICAL_DATE, clear_number=1)
    assert default_run_name(context, "2026-11-27") == "daily_prediction__predict__2026-11-27__c1"
    kfp_server.set_schedule(pending=0, running=1)
    op = _operator(kfp_conn_id, run_key="2026-11-27")
    result = op.execute(task_context(ti, TaskStateStore(), LOGICAL_DATE))
    [run] = _runs_named(kfp_server, "daily_prediction__predict__2026-11-27")
    assert run["run_id"] == result["run_id"]
    again = _operator(kfp_conn_id, run_key="2026-11-27").execute(
        task_context(TaskInstance(try_number=2), None, LOGICAL_DATE)
    )  # a retry without the state store finds the run by name: nothing resubmitted
    assert again["run_id"] == result["run_id"]
    assert len(_runs_named(kfp_server, "daily_prediction__predict__2026-11-27")) == 1
    with pytest.raises(ValueError, match="run_name or run_key"):
        _operator(kfp_conn_id, run_key="k", run_name="n")
    with pytest.raises(AirflowFailException, match="run_key rendered empty"):
        _operator(kfp_conn_id, run_key=" ").execute(task_context(ti, None, LOGICAL_DATE))


# -- deferrable ------------------------------------------------------------------------------


def test_deferrable_by_default_and_configurable(monkeypatch):
    monkeypatch.delenv("AIRFLOW__KFP_BRIDGE__DEFAULT_DEFERRABLE", raising=False)
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")  # Airflow's shipped value
    assert _operator("c", deferrable=None).deferrable is True
    monkeypatch.setenv("AIRFLOW__KFP_BRIDGE__DEFAULT_DEFERRABLE", "False")
    assert _operator("c", deferrable=None).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert _operator("c", deferrable=None).deferrable is True
    assert _operator("c", deferrable=False).deferrable is False


def test_deferral_frees_the_worker_and_completes_from_the_trigger_event(kfp_server, kfp_conn_id):
    op = _operator(kfp_conn_id, deferrable=True, timeout=600)
    ti, store = TaskInstance(), TaskStateStore()
    context = task_context(ti, store, LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)  # returns control to the worker at once: the slot is free
    trigger = deferred.value.trigger
    assert isinstance(trigger, KubeflowPipelineRunTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert (
        deferred.value.timeout is None
    )  # the trigger's own deadline; Airflow's would skip on_kill
    [run] = _runs_named(kfp_server)
    assert trigger.run_id == run["run_id"] == store.get("kfp_run_id")
    assert trigger.deadline is not None
    # the link is available while the task is deferred
    assert ti.xcom["kubeflow_run_url"].endswith(f"/#/runs/details/{run['run_id']}")
    assert run["runtime_config"]["parameters"] == {"message": "2026-11-27", "repeat": 2}

    event = _run_trigger(trigger)
    result = _operator(kfp_conn_id, deferrable=True).execute_complete(context, event)
    assert result == {"run_id": run["run_id"], "run_url": ti.xcom["kubeflow_run_url"]}


def test_failed_event_fails_the_task_with_the_run_error(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(outcome="FAILED", error="predict: model_sha256 mismatch")
    op = _operator(kfp_conn_id, deferrable=True)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = _run_trigger(deferred.value.trigger)
    # the API has no error text for a FAILED run: the task name and its log's last words
    with pytest.raises(
        RunFailedError, match="ended FAILED: task greet failed: predict: model_sha256 mismatch"
    ) as failed:
        op.execute_complete(context, event)
    first_line, *rest = str(failed.value).splitlines()  # what Slack shows
    assert "task greet failed: predict: model_sha256 mismatch" in first_line
    assert "--- last lines of the log of task greet" in "\n".join(rest)


@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize("permanent", [True, False])
def test_a_permanent_failure_fails_at_once_naming_the_input(
    kfp_server, kfp_conn_id, deferrable, permanent
):
    report = report_line(
        "failure",
        step="predict",
        permanent=permanent,
        error="ModelDigestMismatchError",
        input="model_sha256",
        message="model /models/model.pkl has sha256 ab12, expected cd34",
    )
    error = f"task predict failed:\n{report}\nTraceback (most recent call last):\n..."
    kfp_server.set_schedule(outcome="FAILED", error=error)
    op = _operator(kfp_conn_id, deferrable=deferrable, retries=3)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    if deferrable:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        finish = lambda: op.execute_complete(context, _run_trigger(deferred.value.trigger))  # noqa: E731
    else:
        finish = lambda: op.execute(context)  # noqa: E731
    if permanent:  # bad input: no retry can help, and the message names it
        with pytest.raises(
            AirflowFailException,
            match=r"bad input \(input model_sha256\), not retrying: ModelDigestMismatchError: ",
        ):
            finish()
    else:
        with pytest.raises(RunFailedError, match="ended FAILED") as err:
            finish()
        assert not isinstance(err.value, AirflowFailException)


def test_timeout_event_cancels_the_run_and_fails(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, deferrable=True, timeout=0.3)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = _run_trigger(deferred.value.trigger)
    assert RunEvent.from_payload(event).outcome is Outcome.TIMED_OUT
    with pytest.raises(Exception, match=r"timed out.*kfp-bridge terminated it"):
        op.execute_complete(context, event)
    [run] = _runs_named(kfp_server)
    assert run["state"] in ("CANCELING", "FAILED")


@pytest.mark.parametrize(
    ("break_it", "outcome", "named"),
    [
        (lambda server, run_id: server.require_token("right-token"), Outcome.AUTH_ERROR, "token"),
        (lambda server, run_id: server.delete_run(run_id), Outcome.NOT_FOUND, "no longer exists"),
    ],
)
def test_auth_or_not_found_event_fails_without_retries(
    kfp_server, kfp_conn_id, break_it, outcome, named
):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, deferrable=True, retries=3)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    break_it(kfp_server, deferred.value.trigger.run_id)
    event = _run_trigger(deferred.value.trigger)
    assert RunEvent.from_payload(event).outcome is outcome
    with pytest.raises(AirflowFailException, match=named) as err:  # 401/403/404: no retries
        op.execute_complete(context, event)
    assert str(err.value).lower().count("check") == 1, err.value  # the advice, once


@pytest.mark.parametrize(
    ("outcome", "raises"),
    [
        (Outcome.SUCCEEDED, None),
        (Outcome.FAILED, RunFailedError),
        (Outcome.AUTH_ERROR, AirflowFailException),
        (Outcome.NOT_FOUND, AirflowFailException),
        (Outcome.GAVE_UP, AirflowException),
        (Outcome.BACKEND_ERROR, AirflowException),
    ],
)
def test_each_outcome_ends_the_task_one_way(outcome, raises):
    """execute_complete and the worker-side wait end through the same _conclude."""
    state = RunState.SUCCEEDED if outcome is Outcome.SUCCEEDED else RunState.RUNNING
    event = RunEvent(outcome, "r-1", "name", "http://ui/r-1", state, "the reason")
    ti = TaskInstance()
    op = _operator("unused")
    if raises is None:
        assert op.execute_complete(task_context(ti, None, LOGICAL_DATE), event.to_payload()) == {
            "run_id": "r-1",
            "run_url": "http://ui/r-1",
        }
    else:
        with pytest.raises(raises, match="the reason") as err:
            op.execute_complete(task_context(ti, None, LOGICAL_DATE), event.to_payload())
        retryable = raises is not AirflowFailException  # Airflow retries everything else
        assert isinstance(err.value, AirflowFailException) is not retryable
    assert ti.xcom == {"kubeflow_run_url": "http://ui/r-1"}


@pytest.mark.parametrize("permanent", [True, False])
def test_whether_to_retry_is_read_from_the_events_failure_never_from_its_text(permanent):
    """The failure travels as data: the message text (a report line in it included) is
    for people; the verdict and the task's error come from ``failure`` alone."""
    lure = report_line("failure", permanent=not permanent, error="LureError", message="lure")
    failure = Failure(
        permanent=permanent, error_type="BadInputError", message="bad x", input="x", step="predict"
    )
    event = RunEvent(
        Outcome.FAILED,
        "r-1",
        "name",
        "http://ui/r-1",
        RunState.FAILED,
        f"task predict failed\n{lure}",
        ("predict",),
        failure,
    )
    ti = TaskInstance()
    payload = json.loads(json.dumps(event.to_payload()))  # as Airflow stores next_kwargs
    with pytest.raises(RunFailedError if not permanent else AirflowFailException) as err:
        _operator("unused").execute_complete(task_context(ti, None, LOGICAL_DATE), payload)
    if permanent:
        assert str(err.value) == (
            "Kubeflow run r-1 failed on bad input (input x), not retrying: BadInputError: bad x"
        )
    else:
        assert not isinstance(err.value, AirflowFailException)
        assert "LureError" in str(err.value)  # the text still reaches the person, unparsed


# -- idempotency -----------------------------------------------------------------------------


def test_retry_reattaches_through_the_task_state_store(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    store = TaskStateStore()
    with pytest.raises(TaskDeferred) as first:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), store, LOGICAL_DATE)
        )
    with pytest.raises(TaskDeferred) as retry:  # e.g. the triggerer's event was lost
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), store, LOGICAL_DATE)
        )
    assert retry.value.trigger.run_id == first.value.trigger.run_id
    assert len(_runs_named(kfp_server)) == 1


def test_retry_finds_the_run_by_name_when_the_id_was_never_persisted(kfp_server, kfp_conn_id):
    """The mixin's documented gap: worker died between submit and persist."""
    kfp_server.set_schedule(pending=0, running=100000)
    with pytest.raises(TaskDeferred) as first:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
        )
    for store in (TaskStateStore(), None):  # empty store, or no store at all
        with pytest.raises(TaskDeferred) as retry:
            _operator(kfp_conn_id, deferrable=True).execute(
                task_context(TaskInstance(), store, LOGICAL_DATE)
            )
        assert retry.value.trigger.run_id == first.value.trigger.run_id
    assert len(_runs_named(kfp_server)) == 1


def test_failed_earlier_run_leads_to_exactly_one_new_run(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(outcome="FAILED", error="feature table missing")
    store = TaskStateStore()
    with pytest.raises(RunFailedError, match="feature table missing"):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = _runs_named(kfp_server)

    kfp_server.set_schedule(outcome="SUCCEEDED")
    ti = TaskInstance()
    result = _operator(kfp_conn_id, on_retry="new_run").execute(
        task_context(ti, store, LOGICAL_DATE)
    )
    runs = _runs_named(kfp_server)
    assert len(runs) == 2
    [new] = [r for r in runs if r["run_id"] != failed["run_id"]]
    assert result == {"run_id": new["run_id"], "run_url": ti.xcom["kubeflow_run_url"]}
    assert new["state"] == "SUCCEEDED"

    # a further retry (e.g. a downstream clear) reuses the succeeded run
    again = _operator(kfp_conn_id).execute(
        task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    )
    assert again["run_id"] == new["run_id"]
    assert len(_runs_named(kfp_server)) == 2


def test_a_clear_reruns_while_retries_within_it_reattach(kfp_server, kfp_conn_id):
    """Airflow bumps dag_run.clear_number on a user clear, never on a retry."""
    store = TaskStateStore()
    first = _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    assert _runs_named(kfp_server)[0]["run_id"] == first["run_id"]

    cleared = _operator(kfp_conn_id).execute(
        task_context(TaskInstance(), store, LOGICAL_DATE, clear_number=1)
    )
    assert cleared["run_id"] != first["run_id"]  # the stored SUCCEEDED run is not reused
    [rerun] = _runs_named(kfp_server, f"{RUN_NAME}__c1")
    assert rerun["run_id"] == cleared["run_id"]

    retry = _operator(kfp_conn_id).execute(
        task_context(TaskInstance(), store, LOGICAL_DATE, clear_number=1)
    )
    assert retry["run_id"] == cleared["run_id"]
    assert len(kfp_server.runs()) == 2


def _killed_while_deferred(kfp_server, kfp_conn_id, canceling: int, clear_number: int = 0):
    """A try defers, the triggerer kills it (a clear); the next try defers again.

    Returns the first run's id and the next try's run id; the first run stays
    CANCELING for ``canceling`` polls.
    """
    kfp_server.set_schedule(pending=0, running=100000, canceling=canceling)
    store = TaskStateStore()
    with pytest.raises(TaskDeferred) as first:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), store, LOGICAL_DATE)
        )
    old_id = first.value.trigger.run_id
    asyncio.run(first.value.trigger.on_kill())  # what the triggerer does on "clear"
    with pytest.raises(TaskDeferred) as retry:  # the new try: stored id is CANCELING
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), store, LOGICAL_DATE, clear_number=clear_number)
        )
    return old_id, retry.value.trigger.run_id


def test_canceling_run_is_waited_for_then_replaced(kfp_server, kfp_conn_id):
    """A run still CANCELING (cleared while deferred) would only fail the new try."""
    old_id, new_id = _killed_while_deferred(kfp_server, kfp_conn_id, canceling=2)
    assert new_id != old_id
    states = {r["run_id"]: r["state"] for r in _runs_named(kfp_server)}
    assert states[old_id] == "FAILED" and len(states) == 2  # KFP: terminated ends FAILED


def test_run_still_canceling_after_the_wait_fails_the_try_without_reattaching(
    kfp_server, kfp_conn_id, monkeypatch
):
    """Reattaching to a CANCELING run would only fail; starting another beside it is worse."""
    monkeypatch.setattr(operator_module, "CANCELING_WAIT_SECONDS", 0.2)
    kfp_server.set_schedule(pending=0, running=100000)
    with pytest.raises(TaskDeferred) as first:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    kfp_server.set_run_state(first.value.trigger.run_id, "CANCELING")  # stuck canceling
    with pytest.raises(AirflowException, match="still CANCELING") as failed:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
        )
    assert not isinstance(failed.value, AirflowFailException)  # the next try decides again
    assert [r["run_id"] for r in _runs_named(kfp_server)] == [first.value.trigger.run_id]


# -- transient errors and final errors at submit time ----------------------------------------


def test_transient_errors_at_submit_are_ridden_out_with_exactly_one_run(kfp_server, kfp_conn_id):
    runs_path = "/runs$"  # list (GET) and create (POST); not GET /runs/<id>
    kfp_server.inject("status", times=2, status=503, method="GET", path=runs_path)
    kfp_server.inject("drop", times=1, method="GET", path="/experiments$")
    kfp_server.inject("status", times=1, status=503, method="POST", path="/experiments$")
    kfp_server.inject("status", times=1, status=503, method="POST", path=runs_path)
    kfp_server.inject("drop", times=1, method="POST", path=runs_path)
    ti = TaskInstance()
    op = _operator(kfp_conn_id, experiment="daily", max_transient_errors=5)
    result = op.execute(task_context(ti, TaskStateStore(), LOGICAL_DATE))
    [run] = _runs_named(kfp_server)
    assert result == {"run_id": run["run_id"], "run_url": ti.xcom["kubeflow_run_url"]}
    assert run["state"] == "SUCCEEDED"
    assert len(kfp_server.stored("experiments")) == 1


def test_run_created_behind_a_lost_response_is_adopted_not_duplicated(kfp_server, kfp_conn_id):
    """The create POST times out client-side (2 s) but the service creates the run (3 s)."""
    kfp_server.inject("slow", times=1, delay=3.0, method="POST", path="/runs$")
    # poll_interval 2: the look-up after the error comes >= 2 s later, after the run exists
    op = _operator(kfp_conn_id, deferrable=True, poll_interval=2.0)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    [run] = _runs_named(kfp_server)
    assert deferred.value.trigger.run_id == run["run_id"]
    assert len([r for r in kfp_server.requests() if r["method"] == "POST"]) == 1


def test_submit_error_beyond_the_budget_fails_the_try(kfp_server, kfp_conn_id):
    kfp_server.inject("status", times=-1, status=503, method="POST", path="/runs$")
    with pytest.raises(TransientBackendError):  # retryable: Airflow's next try goes on
        _operator(kfp_conn_id, max_transient_errors=2).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    assert kfp_server.runs() == []


def test_pipeline_refused_by_the_backend_at_submit_fails_without_retries(tmp_path):
    """Vertex refuses a two-document (kfp-kubernetes) file inside submit: no retry can help."""
    docs = [yaml.safe_load(TINY_PIPELINE.read_text()), {"platforms": {"kubernetes": {}}}]
    two_docs = tmp_path / "with_platform.yaml"
    two_docs.write_text(yaml.safe_dump_all(docs))
    gapic = RecordingPipelineServiceClient()
    op = _operator("unused", pipeline_file=str(two_docs), retries=3)
    op.__dict__["backend"] = VertexBackend("my-proj", "asia-northeast1", client=gapic)
    with pytest.raises(AirflowFailException, match=r"PipelineSpecError: .*Vertex variant"):
        op.execute(task_context(TaskInstance(), None, LOGICAL_DATE))
    assert [call for call, _ in gapic.calls if call == "create"] == []


# -- timeout -----------------------------------------------------------------------------------


def test_timeout_counts_from_the_run_creation_not_from_the_reattach(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    with pytest.raises(TaskDeferred):
        _operator(kfp_conn_id, deferrable=True, timeout=600).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    time.sleep(1.1)  # the retry comes later
    with pytest.raises(TaskDeferred) as retry:
        _operator(kfp_conn_id, deferrable=True, timeout=600).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    [run] = _runs_named(kfp_server)
    created = datetime.fromisoformat(run["created_at"].replace("Z", "+00:00")).timestamp()
    assert retry.value.trigger.run_id == run["run_id"]
    assert retry.value.trigger.deadline == created + 600


def test_worker_wait_of_an_old_run_times_out_at_once(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    with pytest.raises(TaskDeferred):
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    time.sleep(2.1)  # older than the timeout below, whatever the second it was created in
    seen_before = len(kfp_server.requests())
    with pytest.raises(AirflowException, match="timed out"):
        _operator(kfp_conn_id, timeout=1.0, poll_interval=5.0).execute(
            task_context(TaskInstance(), None, LOGICAL_DATE)
        )
    requests = kfp_server.requests()[seen_before:]
    cancel = next(i for i, r in enumerate(requests) if r["path"].endswith(":terminate"))
    # list by name + one read; no poll_interval sleep and no second poll before the cancel
    # (cancel-and-confirm then reads the run again before and after its terminate)
    reads = [r for r in requests[:cancel] if r["method"] == "GET" and "/runs/" in r["path"]]
    assert len(reads) == 2
    assert _runs_named(kfp_server)[0]["state"] in ("CANCELING", "FAILED")


# -- waiting in the worker -------------------------------------------------------------------


def test_non_deferrable_waits_in_the_worker_and_returns_only_id_and_url(kfp_server, kfp_conn_id):
    ti = TaskInstance()
    result = _operator(kfp_conn_id).execute(task_context(ti, TaskStateStore(), LOGICAL_DATE))
    assert set(result) == {"run_id", "run_url"}
    assert ti.xcom == {"kubeflow_run_url": result["run_url"]}


def test_non_deferrable_rides_out_transient_errors(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=2, running=2)
    kfp_server.inject("status", times=3, status=503, method="GET", path="/runs/[0-9a-f-]+$")
    result = _operator(kfp_conn_id).execute(task_context(TaskInstance(), None, LOGICAL_DATE))
    assert kfp_server.runs()[0]["run_id"] == result["run_id"]


def _execute_in_a_thread(op) -> tuple[threading.Thread, dict]:
    """Start ``op.execute`` in a thread; the dict gets its ``error`` when it raises."""
    holder: dict = {}

    def work():
        try:
            op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
        except Exception as exc:
            holder["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, holder


def test_paused_run_is_not_success(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, timeout=0.5)
    thread, holder = _execute_in_a_thread(op)
    run_id = _wait_for_server_run(kfp_server)
    kfp_server.set_run_state(run_id, "PAUSED")
    thread.join(30)
    assert "timed out" in str(holder["error"]) and "PAUSED" in str(holder["error"])


def test_on_kill_in_the_worker_cancels_the_run(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000, canceling=1)
    op = _operator(kfp_conn_id)
    thread, holder = _execute_in_a_thread(op)
    run_id = _wait_for_server_run(kfp_server)
    while op.kfp_run_id is None:  # the operator knows its run once submit returned
        time.sleep(0.01)
    op.on_kill()  # what the task runner calls on SIGTERM
    thread.join(30)
    assert isinstance(holder["error"], RunFailedError)
    # KFP ends a terminated run FAILED; the task says the bridge stopped it, not the pipeline
    assert "terminated by kfp-bridge (the task was killed) and ended FAILED" in str(holder["error"])
    assert _runs_named(kfp_server)[0]["state"] == "FAILED"
    assert any(r["path"].endswith(f"{run_id}:terminate") for r in kfp_server.requests())


def test_on_kill_with_cancel_on_kill_false_leaves_the_run(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, cancel_on_kill=False, timeout=6)
    thread, _ = _execute_in_a_thread(op)
    run_id = _wait_for_server_run(kfp_server)
    while op.kfp_run_id is None:
        time.sleep(0.01)
    op.on_kill()
    assert not any(r["path"].endswith(f"{run_id}:terminate") for r in kfp_server.requests())
    thread.join(30)  # ends by its timeout (which does cancel: that is not a kill)


def test_the_trigger_gets_the_google_identity_and_kill_choice(kfp_server, kfp_conn_id):
    op = _operator(
        kfp_conn_id,
        deferrable=True,
        gcp_conn_id="gcp_prod",
        impersonation_chain="run@p.iam.gserviceaccount.com",
        cancel_on_kill=False,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["gcp_conn_id"] == "gcp_prod"
    assert kwargs["impersonation_chain"] == "run@p.iam.gserviceaccount.com"
    assert kwargs["cancel_on_kill"] is False


def test_on_kill_after_the_run_ended_sends_no_cancel(kfp_server, kfp_conn_id, capsys):
    """A kill that comes after the run ended must not send the service a cancel."""
    op = _operator(kfp_conn_id)
    result = op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    capsys.readouterr()
    op.on_kill()
    assert not any("terminate" in r["path"] for r in kfp_server.requests())
    assert _runs_named(kfp_server)[0]["state"] == "SUCCEEDED"
    [line] = capsys.readouterr().out.splitlines()  # one line, and it says why
    assert f"Task killed, but run {result['run_id']} already ended SUCCEEDED" in line


def test_the_worker_wait_backs_off_like_the_trigger(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, poll_interval=0.02, timeout=2.0)
    op.policy = dataclasses.replace(op.policy, max_poll_interval=0.4)
    with pytest.raises(AirflowException, match="timed out"):
        op.execute(task_context(TaskInstance(), None, LOGICAL_DATE))
    polls = [r for r in kfp_server.requests() if r["method"] == "GET" and "/runs/" in r["path"]]
    # at a fixed 0.02 s interval two seconds would take ~100 polls
    assert len(polls) < 30


def _wait_for_server_run(server, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not server.runs():
        assert time.monotonic() < deadline, "operator never submitted"
        time.sleep(0.02)
    return server.runs()[0]["run_id"]


# -- a real worker process, killed mid-wait --------------------------------------------------

DAG_FILE = """
import os
from datetime import datetime, timezone
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

with DAG("kill_test", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)):
    KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file={pipeline!r},
        parameters={{"message": "{{{{ ds }}}}", "sleep_seconds": os.environ["TEST_SLEEP"]}},
        kfp_conn_id="kfp_local",
        poll_interval=0.5,
        deferrable=os.environ["TEST_DEFERRABLE"] == "1",
    )
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """A SQLite Airflow home with the kill_test DAG, migrated once for this module."""
    root = tmp_path_factory.mktemp("airflow")
    dags = root / "dags"
    dags.mkdir()
    (dags / "kill_test.py").write_text(DAG_FILE.format(pipeline=str(TINY_PIPELINE)))
    state_dir = root / "runs"
    env = airflow_env(root / "home", dags, local_connection_env(state_dir))
    subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    return {"env": env, "db": root / "home" / "airflow.db", "state_dir": state_dir, "root": root}


def _dags_test(airflow_home, logical_date: str, *, deferrable: bool, sleep: float, **popen):
    env = {**airflow_home["env"], "TEST_DEFERRABLE": "1" if deferrable else "0"}
    env["TEST_SLEEP"] = str(sleep)
    cmd = [str(AIRFLOW_BIN), "dags", "test", "kill_test", logical_date]
    return subprocess.Popen(cmd, env=env, start_new_session=True, **popen)


def _wait_for_running_run(backend, name: str, worker, log_path) -> RunStatus:
    deadline = time.monotonic() + 240
    while not backend.find_runs(name):
        assert worker.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the worker never submitted a run"
        time.sleep(0.2)
    [run] = backend.find_runs(name)
    return wait_for(backend, run.run_id, lambda s: s.state is RunState.RUNNING, timeout=60)


@contextmanager
def _worker_waiting(airflow_home, logical_date: str, name: str, *, sleep: float):
    """A non-deferrable ``dags test`` worker whose run is RUNNING: (worker, run, log path).

    On leaving the block the worker's process group is SIGKILLed if it still runs.
    """
    backend = LocalBackend(airflow_home["state_dir"], python=str(PIPELINE_PYTHON))
    log_path = airflow_home["root"] / f"{name}.log"
    with open(log_path, "wb") as log:
        worker = _dags_test(
            airflow_home, logical_date, deferrable=False, sleep=sleep, stdout=log, stderr=log
        )
        try:
            yield worker, _wait_for_running_run(backend, name, worker, log_path), log_path
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_worker_killed_mid_wait_then_retry_leaves_exactly_one_run(airflow_home):
    """A worker SIGKILLed mid-wait, then a second ``airflow dags test``: still one run.

    What this proves is the run-name lookup, not the ``task_state_store`` path:
    ``dags test`` recreates the DAG run, so the second task instance starts with
    an empty store and finds the first run only by its deterministic name (same
    dag, task and logical date, clear_number 0). The native store path (a real
    scheduler retry of the same task instance) is covered by the e2e suite.
    """
    logical_date = "2026-11-26T21:00:00+00:00"
    name = "kill_test__predict__2026-11-26T210000Z"
    backend = LocalBackend(airflow_home["state_dir"], python=str(PIPELINE_PYTHON))

    # 1. a worker waits for the run in its slot (non-deferrable) and is SIGKILLed
    with _worker_waiting(airflow_home, logical_date, name, sleep=25) as (_, run, _):
        pass  # leaving the block SIGKILLs the worker's process group
    assert backend.get_run(run.run_id).state is RunState.RUNNING  # the run outlives the worker

    # 2. a new `dags test` (new DAG run, empty task_state_store; deferrable this time)
    #    finds the run by its name and reattaches instead of starting a second run
    retry = _dags_test(
        airflow_home,
        logical_date,
        deferrable=True,
        sleep=25,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = retry.communicate(timeout=400)
    assert retry.returncode == 0, output[-4000:]
    assert f"Reattaching to existing run {run.run_id}" in output
    runs = backend.find_runs(name)
    assert [r.run_id for r in runs] == [run.run_id]
    assert runs[0].state is RunState.SUCCEEDED

    # XCom as Airflow stored it: the id and URL only, and the link key holds just the URL
    with sqlite3.connect(airflow_home["db"]) as db:
        rows = db.execute(
            "SELECT key, value FROM xcom WHERE dag_id = 'kill_test' AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = 'kill_test' "
            "AND logical_date LIKE '2026-11-26 21:00%' ORDER BY id DESC LIMIT 1)"
        ).fetchall()
    xcom = {key: json.loads(value) for key, value in rows}
    # Inside Airflow a local run's URL is its page on the api-server ([api] base_url unset
    # here: Airflow's own fallback), not the file:// URL the bare backend reports.
    page = local_run_url(run.run_id, conn_id="kfp_local", base_url=FALLBACK_BASE_URL)
    assert xcom == {
        "return_value": {"run_id": run.run_id, "run_url": page},
        "kubeflow_run_url": page,
    }


def test_sigterm_to_the_waiting_worker_cancels_the_run(airflow_home):
    """Killed / marked failed while waiting in a worker: Airflow calls on_kill on SIGTERM."""
    logical_date = "2026-11-25T21:00:00+00:00"
    name = "kill_test__predict__2026-11-25T210000Z"
    backend = LocalBackend(airflow_home["state_dir"], python=str(PIPELINE_PYTHON))
    with _worker_waiting(airflow_home, logical_date, name, sleep=300) as (worker, run, log_path):
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)
    final = backend.get_run(run.run_id)
    assert final.state is RunState.CANCELED, log_path.read_text()[-3000:]
    assert "Task killed; canceling run" in log_path.read_text()


def test_the_serialized_dag_carries_the_kubeflow_run_link():
    """What the scheduler/UI sees: link name -> the XCom key the worker fills with the URL."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("link_dag", schedule=None) as dag:
        _operator("kfp_default", task_id="predict")
    serialized = DagSerialization.to_dict(dag)
    [task] = serialized["dag"]["tasks"]
    assert task["__var"]["_operator_extra_links"] == {"Kubeflow run": "kubeflow_run_url"}
    assert DagSerialization.from_dict(serialized).get_task("predict").template_fields


# -- the real KFP API's answers (issue 9) --------------------------------------------------
def _tiny_spec() -> dict:
    return yaml.safe_load(TINY_PIPELINE.read_text())


def _posts(server) -> list[dict]:
    return [r for r in server.requests() if r["method"] == "POST" and r["path"].endswith("/runs")]


def test_pipeline_id_alone_checks_parameters_against_the_latest_version(kfp_server, kfp_conn_id):
    kfp_server.add_pipeline_version("pipe-1", "ver-1", _tiny_spec())
    bad = _operator(
        kfp_conn_id, pipeline_file=None, pipeline_id="pipe-1", parameters={"mesage": "typo"}
    )
    with pytest.raises(AirflowFailException, match="unknown parameter 'mesage'"):
        bad.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert _posts(kfp_server) == []
    good = _operator(kfp_conn_id, pipeline_file=None, pipeline_id="pipe-1")
    good.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    [run] = _runs_named(kfp_server)
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipe-1",
        "pipeline_version_id": "ver-1",
    }
    assert run["runtime_config"]["parameters"] == {"message": "2026-11-27", "repeat": 2}


@pytest.mark.parametrize("enable_caching", [True, False])
def test_caching_override_holds_for_an_uploaded_version(
    kfp_server, kfp_conn_id, enable_caching, capsys
):
    """The override reaches every task: the version's spec goes inline (issue 20)."""
    spec = _tiny_spec()
    kfp_server.add_pipeline_version("pipe-1", "ver-1", spec)
    op = _operator(
        kfp_conn_id, pipeline_file=None, pipeline_id="pipe-1", enable_caching=enable_caching
    )
    op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    [run] = _runs_named(kfp_server)
    assert not run.get("pipeline_version_reference")
    tasks = run["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks and all(
        t["cachingOptions"]["enableCache"] is enable_caching for t in tasks.values()
    )
    assert run["pipeline_spec"]["pipelineInfo"] == spec["pipelineInfo"]
    assert "carries pipeline pipe-1 version ver-1's spec inline" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("pipeline_id", "version_id", "named"),
    [("pipe-1", "ver-9", "'ver-9'"), ("pipe-9", None, "'pipe-9'")],
)
def test_missing_pipeline_or_version_fails_at_once_naming_it(
    kfp_server, kfp_conn_id, pipeline_id, version_id, named
):
    """The KFP API would answer the run with HTTP 500, which reads as worth retrying."""
    kfp_server.add_pipeline_version("pipe-1", "ver-1", _tiny_spec())
    op = _operator(
        kfp_conn_id, pipeline_file=None, pipeline_id=pipeline_id, pipeline_version_id=version_id
    )
    with pytest.raises(AirflowFailException, match=f"PipelineNotFoundError: .*{named}"):
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert _posts(kfp_server) == []


def test_a_kfp_1x_server_fails_at_once_and_is_named(kfp_server, kfp_conn_id):
    kfp_server.set_server_version("1.8.5")
    with pytest.raises(AirflowFailException, match=r"no v2beta1 endpoints \(KFP < 2\.0\?\)"):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))


def test_retry_tells_our_terminated_run_from_a_pipeline_failure(kfp_server, kfp_conn_id, capsys):
    """Both end FAILED on KFP; only the task state store knows which one the bridge stopped."""
    store = TaskStateStore()
    stopped = _a_run_the_bridge_terminated(kfp_server, kfp_conn_id, store)

    kfp_server.set_schedule(outcome="FAILED", error="KeyError: 'user_id'")
    capsys.readouterr()
    with pytest.raises(RunFailedError, match="task greet failed: KeyError: 'user_id'"):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    out = capsys.readouterr().out  # the operator's log (Airflow's structlog to stdout)
    assert (
        f"Earlier run {stopped['run_id']} ended FAILED after kfp-bridge terminated it "
        "(timed out after 0.3s)" in out
    )
    failed = next(r for r in _runs_named(kfp_server) if r["run_id"] != stopped["run_id"])

    kfp_server.set_schedule(outcome="SUCCEEDED")
    _operator(kfp_conn_id, on_retry="new_run").execute(
        task_context(TaskInstance(), store, LOGICAL_DATE)
    )
    out = capsys.readouterr().out
    assert (
        f"Earlier run {failed['run_id']} ended FAILED; starting a new run. "
        "Its error: task greet failed" in out
    )


def test_run_urls_in_the_task_log_end_at_whitespace(kfp_server, kfp_conn_id, capsys):
    """Airflow's log viewer links a URL up to the next whitespace: no `)` or `.` may stick."""
    from tests.bridge.test_waiting import assert_urls_stand_alone

    kfp_server.set_schedule(pending=1, running=2)
    kfp_server.inject("status", times=1, status=503, method="GET", path="/runs/[0-9a-f-]+$")
    result = _operator(kfp_conn_id).execute(task_context(TaskInstance(), None, LOGICAL_DATE))
    out = capsys.readouterr().out
    url = result["run_url"]
    assert url and out.count(url) >= 3, out  # submitted, each new state, succeeded
    assert_urls_stand_alone(out, url, times=out.count(url))


# -- resume instead of restart (issue 20) -------------------------------------------------------


def test_a_run_failing_once_in_predict_is_resumed_not_resubmitted(kfp_server, kfp_conn_id, capsys):
    store = TaskStateStore()
    failed = _a_try_failing_in(kfp_server, kfp_conn_id, store, "predict")
    capsys.readouterr()

    result = _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))

    [run] = _runs_named(kfp_server)  # one run on the server, same name
    assert result["run_id"] == failed["run_id"] == run["run_id"]
    assert run["state"] == "SUCCEEDED"
    assert "predict" in run["reruns"] and "predict-driver" not in run["reruns"]
    assert not any(name.startswith("features") for name in run["reruns"])
    out = capsys.readouterr().out
    assert f"Resumed run {failed['run_id']}" in out and "only its failed tasks rerun" in out


def test_a_run_we_terminated_is_never_resumed(kfp_server, kfp_conn_id):
    store = TaskStateStore()
    stopped = _a_run_the_bridge_terminated(kfp_server, kfp_conn_id, store)

    kfp_server.set_schedule(outcome="SUCCEEDED")
    result = _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))

    assert result["run_id"] != stopped["run_id"]
    assert not _api_calls(kfp_server, "POST", ":retry")
    assert len(_runs_named(kfp_server)) == 2


def test_a_refused_retry_falls_back_to_a_new_run_and_says_why(kfp_server, kfp_conn_id, capsys):
    store = TaskStateStore()
    failed = _a_try_failing_in(kfp_server, kfp_conn_id, store, "predict")
    kfp_server.inject(
        "status", status=500, path=":retry$", message="workflow not found (garbage-collected)"
    )
    kfp_server.set_schedule(outcome="SUCCEEDED")
    capsys.readouterr()

    result = _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))

    assert result["run_id"] != failed["run_id"]
    assert len(_runs_named(kfp_server)) == 2
    out = capsys.readouterr().out
    assert f"Not resuming run {failed['run_id']}: KFP refused to retry" in out
    assert "garbage-collected" in out and "starting a new run" in out


class _CreatedLongAgo:
    """The service as a retry hours after the first try sees it: KFP's ``:retry`` updates
    the run in place (``resource/resource_manager.go`` ``RetryRun``), so a resumed run
    keeps its ``created_at``. Here every run reads as created two hours ago."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.created_at = datetime.fromtimestamp(time.time() - 7200, UTC).isoformat()

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def _aged(self, status: RunStatus) -> RunStatus:
        return dataclasses.replace(status, created_at=self.created_at)

    def get_run(self, run_id: str) -> RunStatus:
        return self._aged(self._backend.get_run(run_id))

    def find_runs(self, display_name: str, experiment: str | None = None) -> list[RunStatus]:
        return [self._aged(r) for r in self._backend.find_runs(display_name, experiment)]


def _long_after_creation(op: KubeflowPipelineRunOperator) -> KubeflowPipelineRunOperator:
    op.__dict__["backend"] = _CreatedLongAgo(op.hook.get_conn())
    return op


def test_a_run_resumed_after_its_timeout_gets_the_full_timeout_from_the_resume(
    kfp_server, kfp_conn_id
):
    """A resumed run keeps its creation time: counting from it would time out the resume."""
    store = TaskStateStore()
    kfp_server.set_schedule(outcome="FAILED", failed_task="predict", running=8)
    with pytest.raises(RunFailedError):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = _runs_named(kfp_server)  # the resumed run is RUNNING for 8 polls, then ends

    op = _long_after_creation(_operator(kfp_conn_id, timeout=3600))
    result = op.execute(task_context(TaskInstance(try_number=2), store, LOGICAL_DATE))

    [run] = _runs_named(kfp_server)
    assert result["run_id"] == failed["run_id"] == run["run_id"]
    assert run["state"] == "SUCCEEDED" and run["created_at"] == failed["created_at"]
    assert not _api_calls(kfp_server, "POST", ":terminate")
    assert store.get(operator_module.TERMINATED_KEY) is None


def test_a_later_try_reattaching_to_a_resumed_run_counts_its_timeout_from_the_resume(
    kfp_server, kfp_conn_id
):
    """Try 2 resumes the run and defers, its worker is lost; try 3 reattaches and waits."""
    store = TaskStateStore()
    kfp_server.set_schedule(outcome="FAILED", failed_task="predict", running=8)
    with pytest.raises(RunFailedError):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = _runs_named(kfp_server)

    resuming = _long_after_creation(_operator(kfp_conn_id, timeout=3600, deferrable=True))
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        resuming.execute(task_context(TaskInstance(try_number=2), store, LOGICAL_DATE))
    assert deferred.value.trigger.deadline >= before + 3600  # the trigger's limit too
    resumed = store.get(operator_module.RESUMED_KEY)
    assert resumed["run_id"] == failed["run_id"]

    later = _long_after_creation(_operator(kfp_conn_id, timeout=3600))
    result = later.execute(task_context(TaskInstance(try_number=3), store, LOGICAL_DATE))

    [run] = _runs_named(kfp_server)
    assert result["run_id"] == run["run_id"] == failed["run_id"] and run["state"] == "SUCCEEDED"
    assert not _api_calls(kfp_server, "POST", ":terminate")
    assert len(_api_calls(kfp_server, "POST", ":retry")) == 1  # reattached, not resumed again


@pytest.mark.parametrize("ended", [False, True], ids=["running again", "already succeeded"])
def test_a_resume_whose_answer_was_lost_is_followed_not_duplicated(kfp_server, kfp_conn_id, ended):
    """The ``:retry`` reaches KFP but its answer is lost: the repeated call finds the run
    running again, or already SUCCEEDED, and is refused (only a FAILED run is retried).
    The try follows that run instead of starting a second one."""
    store = TaskStateStore()
    kfp_server.set_schedule(outcome="FAILED", failed_task="predict", running=1 if ended else 3)
    with pytest.raises(RunFailedError):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = _runs_named(kfp_server)

    op = _operator(kfp_conn_id)
    backend = op.backend
    real_retry, calls = backend.retry, []

    def retry_then_lose_the_answer(run_id: str) -> None:
        calls.append(run_id)
        real_retry(run_id)
        if len(calls) == 1:
            if ended:  # the rerun ends before the call is repeated (the stand-in moves on reads)
                for _ in range(50):
                    if backend.get_run(run_id).state.is_terminal:
                        break
                assert backend.get_run(run_id).state is RunState.SUCCEEDED
            raise TransientBackendError("retry run: 503 (the answer was lost)")

    backend.retry = retry_then_lose_the_answer
    result = op.execute(task_context(TaskInstance(try_number=2), store, LOGICAL_DATE))

    assert len(calls) == 2  # the waiter repeated the call after the transient error
    [run] = _runs_named(kfp_server)  # no second run
    assert result["run_id"] == run["run_id"] == failed["run_id"] and run["state"] == "SUCCEEDED"
    assert len(_api_calls(kfp_server, "POST", ":retry")) == 1


class _EndingPipelineService(RecordingPipelineServiceClient):
    """Vertex jobs that end at once: the first FAILED, later ones SUCCEEDED."""

    def create_pipeline_job(self, request, timeout=None):
        from google.cloud import aiplatform_v1

        job = super().create_pipeline_job(request, timeout)
        first = len(self.jobs) == 1
        job.state = aiplatform_v1.PipelineState[
            "PIPELINE_STATE_FAILED" if first else "PIPELINE_STATE_SUCCEEDED"
        ]
        return job


def test_vertex_has_no_retry_in_place_so_a_new_job_starts_and_the_log_says_so(capsys):
    """Issue 20: on Vertex the resume option falls back to a new job, said in the log."""
    gapic = _EndingPipelineService()
    store = TaskStateStore()

    def vertex_operator():
        op = _operator("unused")
        op.__dict__["backend"] = VertexBackend("my-proj", "asia-northeast1", client=gapic)
        return op

    assert vertex_operator().on_retry == "resume"
    with pytest.raises(RunFailedError):
        vertex_operator().execute(task_context(TaskInstance(), store, LOGICAL_DATE))
    [failed] = list(gapic.jobs)
    capsys.readouterr()

    vertex_operator().execute(task_context(TaskInstance(try_number=2), store, LOGICAL_DATE))

    assert len(gapic.jobs) == 2 and failed in gapic.jobs
    out = capsys.readouterr().out
    assert "the vertex backend cannot retry a run in place; starting a new run" in out


def test_the_try_history_keeps_each_tries_run_and_the_log_shows_it(kfp_server, kfp_conn_id, capsys):
    """Try 1's run fails in its second task; try 2 resumes it: two entries, one run."""
    store = TaskStateStore()
    failed = _a_try_failing_in(kfp_server, kfp_conn_id, store, "shout")
    capsys.readouterr()

    _operator(kfp_conn_id).execute(task_context(TaskInstance(try_number=2), store, LOGICAL_DATE))

    [run] = _runs_named(kfp_server)
    assert run["executions"] == {"greet": 1, "shout": 2}  # greet succeeded: not rerun
    history = store.get(try_history.HISTORY_KEY)
    assert [(e["try_number"], e["run_id"], e["state"], e["resumed"]) for e in history] == [
        (1, failed["run_id"], "FAILED", False),
        (2, failed["run_id"], "SUCCEEDED", True),
    ]
    assert history[0]["failed_tasks"] == ["shout"] and history[1]["failed_tasks"] == []
    assert all(e["start"] <= e["end"] and e["url"].endswith(failed["run_id"]) for e in history)
    json.dumps(history)  # data the state store can hold as it is
    logged = capsys.readouterr().out
    assert f"try 1: run {failed['run_id']}, FAILED at step shout (" in logged
    assert "try 2:" not in logged  # only earlier tries are listed at the start
    assert try_history.summary(history, 2, 3) == (
        f"try 2/3, resumed run {failed['run_id']} after FAILED at step shout"
    )


def test_the_try_history_survives_a_deferral(kfp_server, kfp_conn_id):
    """The worker that resumes after the trigger closes the entry the first one opened."""
    kfp_server.set_schedule(pending=0, running=2)
    store = TaskStateStore()
    context = task_context(TaskInstance(), store, LOGICAL_DATE)
    op = _operator(kfp_conn_id, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    [opened] = store.get(try_history.HISTORY_KEY)
    assert opened.get("end") is None
    assert opened["state"] in ("PENDING", "RUNNING")

    fresh = _operator(kfp_conn_id, deferrable=True)  # a new process after deferral
    fresh.execute_complete(context, _run_trigger(deferred.value.trigger))

    [entry] = store.get(try_history.HISTORY_KEY)
    assert entry["state"] == "SUCCEEDED" and entry["start"] == opened["start"]
    assert entry["end"] and entry["resumed"] is False


# -- reuse only for the same work (issue 21: a changed model, overlapping clears) ---------------


def _api_calls(server, method: str, suffix: str) -> list[int]:
    """Positions of the API requests ``method`` whose path ends with ``suffix``."""
    return [
        i
        for i, r in enumerate(server.requests())
        if r["method"] == method and r["path"].endswith(suffix)
    ]


def test_a_succeeded_run_with_other_parameters_is_not_reused(kfp_server, kfp_conn_id, capsys):
    """A new model digest (any changed parameter) means new work: never the old run."""
    first = _operator(kfp_conn_id).execute(
        task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    )
    store = TaskStateStore()
    changed = {"message": "2026-11-27", "repeat": "3"}
    second = _operator(kfp_conn_id, parameters=changed).execute(
        task_context(TaskInstance(), store, LOGICAL_DATE)
    )
    assert second["run_id"] != first["run_id"]
    assert "SUCCEEDED with other parameters (repeat): not reusing it" in capsys.readouterr().out
    # the same parameters again (a retry, or the stored run) reattach to the new run
    again = _operator(kfp_conn_id, parameters=changed).execute(
        task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    )
    assert again["run_id"] == second["run_id"]
    # the stored run of the first parameters is not taken by a try with the second
    stale = TaskStateStore()
    stale.set("kfp_run_id", first["run_id"])
    also = _operator(kfp_conn_id, parameters=changed).execute(
        task_context(TaskInstance(), stale, LOGICAL_DATE)
    )
    assert also["run_id"] == second["run_id"]
    assert len(_runs_named(kfp_server)) == 2


def test_numbers_as_the_service_returns_them_are_the_same_parameters():
    from kfp_bridge.backends.base import same_parameters

    assert same_parameters({"lookback_days": 28, "d": "x"}, {"lookback_days": 28.0, "d": "x"})
    assert not same_parameters({"lookback_days": 28}, {"lookback_days": 7.0})
    assert not same_parameters({"a": "1"}, {"a": "1", "b": "2"})
    assert same_parameters({"a": "1"}, None)  # a backend that cannot tell


def test_numbers_inside_lists_and_structs_compare_by_value_as_data():
    """Services make every number a float inside lists and structs too (protobuf Value)."""
    from kfp_bridge.backends.base import same_parameters

    assert same_parameters({"l": [1, 2]}, {"l": [1.0, 2.0]})
    assert same_parameters(
        {"o": {"k": [1, {"n": 2}], "z": "x"}}, {"o": {"z": "x", "k": (1.0, {"n": 2.0})}}
    )
    assert same_parameters({"l": [], "o": {}}, {"l": [], "o": {}})
    # bool is not a number, however Python ranks it
    assert not same_parameters({"f": True}, {"f": 1})
    assert not same_parameters({"l": [True, 0]}, {"l": [1.0, False]})
    assert not same_parameters({"o": {"f": False}}, {"o": {"f": 0.0}})
    # genuinely other values
    assert not same_parameters({"l": [1, 2]}, {"l": [2, 1]})
    assert not same_parameters({"l": [1, 2]}, {"l": [1, 2, 3]})
    assert not same_parameters({"l": [1.5]}, {"l": [1]})
    assert not same_parameters({"o": {"k": 1}}, {"o": {"k": 1, "j": 1}})
    assert not same_parameters({"o": {"k": [1]}}, {"o": {"k": ["1"]}})
    assert not same_parameters({"l": [1]}, {"l": {"0": 1}})
    assert not same_parameters({"a": None}, {"a": "None"})


def test_an_active_run_with_other_parameters_is_stopped_before_the_new_run(kfp_server, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000, canceling=2)
    with pytest.raises(TaskDeferred) as first:
        _operator(kfp_conn_id, deferrable=True).execute(
            task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
        )
    old_id = first.value.trigger.run_id
    with pytest.raises(TaskDeferred) as second:
        _operator(
            kfp_conn_id, deferrable=True, parameters={"message": "2026-11-27", "repeat": "5"}
        ).execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert second.value.trigger.run_id != old_id
    states = {r["run_id"]: r["state"] for r in _runs_named(kfp_server)}
    assert states[old_id] == "FAILED"  # terminated (KFP ends it FAILED), not left running
    [terminate] = _api_calls(kfp_server, "POST", f"{old_id}:terminate")
    creates = _api_calls(kfp_server, "POST", "/apis/v2beta1/runs")
    assert len(creates) == 2 and terminate < creates[1]


def test_a_clears_new_run_starts_only_after_the_earlier_run_ended(kfp_server, kfp_conn_id):
    """Cleared while deferred: the old run is CANCELING for a while; no overlap on the partition."""
    old_id, new_id = _killed_while_deferred(kfp_server, kfp_conn_id, canceling=3, clear_number=1)
    runs = {r["run_id"]: r for r in kfp_server.runs()}
    assert runs[new_id]["display_name"] == f"{RUN_NAME}__c1"
    assert runs[old_id]["state"] == "FAILED"
    assert runs[old_id]["finished_at"] <= runs[new_id]["created_at"]


def test_a_401_mid_wait_says_the_run_may_still_be_running_and_how_to_stop_it(
    kfp_server, kfp_conn_id
):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, deferrable=True, retries=3)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    run_id = deferred.value.trigger.run_id
    kfp_server.require_token("right-token")  # the token expired or was revoked mid-wait
    event = _run_trigger(deferred.value.trigger)
    with pytest.raises(AirflowFailException) as err:
        op.execute_complete(context, event)
    message = str(err.value)
    assert f"Kubeflow run {run_id} may still be running" in message
    assert f"Run page: {deferred.value.trigger.run_url}" in message
    assert "Terminate" in message
    terminates = [r for r in kfp_server.requests() if r["path"].endswith(f"{run_id}:terminate")]
    assert not terminates  # refused before it: nothing was sent beside the refused read
    [run] = _runs_named(kfp_server)
    assert run["state"] == "RUNNING"


def test_after_a_401_the_run_is_stopped_where_the_credentials_still_allow_it(
    kfp_server, kfp_conn_id
):
    kfp_server.set_schedule(pending=0, running=100000)
    op = _operator(kfp_conn_id, deferrable=True)
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    run_id = deferred.value.trigger.run_id
    event = RunEvent(
        Outcome.AUTH_ERROR, run_id, RUN_NAME, "http://ui/r", RunState.RUNNING, "HTTP 403"
    )
    with pytest.raises(AirflowFailException, match=rf"run {run_id} was stopped \(FAILED\)"):
        op.execute_complete(context, event.to_payload())
    [run] = _runs_named(kfp_server)
    assert run["state"] == "FAILED"  # terminated (KFP ends a terminated run FAILED)


# -- the UI server as host; permanent 500s (issue 17) ------------------------------------------
@pytest.fixture
def ui_conn_id(monkeypatch):
    from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json

    with KfpApiStandIn(profile="ui-proxy") as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_KFP_UI", airflow_connection_json(server.url, request_timeout=2)
        )
        yield server, "kfp_ui"


def test_a_succeeded_run_whose_report_log_cannot_be_read_succeeds(ui_conn_id, capsys):
    server, conn_id = ui_conn_id
    server.inject("status", times=-1, status=500, path="^/k8s/pod/logs")  # archive down too
    ti = TaskInstance()
    op = _operator(conn_id, report_task="greet")
    result = op.execute(task_context(ti, TaskStateStore(), LOGICAL_DATE))
    logged = "".join(capsys.readouterr())
    assert result["run_id"] and op.run_result is None
    assert f"the result report of task 'greet' is not available through {server.url}" in logged
    assert "the log of task greet is not available through" in logged
    assert result["run_url"] in logged and "v2beta1" not in logged
    assert "Transient error" not in logged  # a log read is never retried with backoff


def test_without_a_readable_report_on_result_is_told_why_and_checks_the_output(ui_conn_id):
    server, conn_id = ui_conn_id
    server.inject("status", times=-1, status=500, path="^/k8s/pod/logs")
    seen = []
    op = _operator(conn_id, report_task="greet", on_result=lambda r, c: seen.append(r) or [])
    result = op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    [told] = seen  # once: the mixin's get_job_result after the wait publishes nothing again
    assert told.run_id == result["run_id"] and told.task == "greet" and told.fields == {}
    assert f"not available through {server.url}" in told.unavailable


def test_a_succeeded_run_without_a_report_line_succeeds_through_the_ui(ui_conn_id, capsys):
    _, conn_id = ui_conn_id
    op = _operator(conn_id, report_task="greet")
    result = op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert result["run_id"] and op.run_result is None
    assert "holds no result report" in "".join(capsys.readouterr())


def test_a_report_read_through_the_ui_is_published(ui_conn_id):
    server, conn_id = ui_conn_id
    server.set_schedule(pending=0, running=2)
    op = _operator(conn_id, report_task="greet")
    original = op.backend.get_run

    def get_run(run_id):  # the component writes its report while the run is RUNNING
        status = original(run_id)
        if status.state is RunState.RUNNING:
            server.set_task_log(run_id, "greet", report_line("result", rows=5) + "\n")
        return status

    op.__dict__["backend"].get_run = get_run
    op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert op.run_result["rows"] == 5


def test_a_500_naming_bad_input_fails_the_task_at_once(kfp_server, kfp_conn_id):
    kfp_server.inject(
        "status", times=-1, status=500, method="POST", path="/runs$",
        message="Failed to create a new run: InternalServerError: Failed to create a run due to "
        "error fetching manifest: Failed to fetch a template with an invalid pipeline spec "
        "manifest",
    )  # fmt: skip
    with pytest.raises(AirflowFailException, match="invalid pipeline spec manifest"):
        _operator(kfp_conn_id).execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    posts = [r for r in kfp_server.requests() if r["method"] == "POST" and "/runs" in r["path"]]
    assert len(posts) == 1  # no retry backoff
