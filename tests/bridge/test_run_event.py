"""RunEvent: the trigger's event as a typed value, and the one decoder the operator uses."""

from __future__ import annotations

import json

import pytest

from kfp_bridge.backends.base import FailedTask, RunState, RunStatus
from kfp_bridge.exceptions import (
    AuthError,
    BackendError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.failures import Failure
from kfp_bridge.redaction import redact_data
from kfp_bridge.run_event import Outcome, RunEvent


def test_payload_round_trip_is_plain_json():
    """Strings, and the failed tasks' names as a list of strings (issue 20: try history)."""
    event = RunEvent(
        Outcome.FAILED, "r-1", "name", "http://ui/r-1", RunState.FAILED, "why", ("predict",)
    )
    payload = event.to_payload()
    assert payload["failed_tasks"] == ["predict"]
    assert all(
        v is None or isinstance(v, str)
        for k, v in payload.items()
        if k not in ("failed_tasks", "failure")
    )
    assert RunEvent.from_payload(json.loads(json.dumps(payload))) == event
    older = {
        k: v for k, v in payload.items() if k != "failed_tasks"
    }  # an event stored before the field existed
    assert RunEvent.from_payload(older).failed_tasks == ()


@pytest.mark.parametrize(
    ("state", "outcome", "message"),
    [
        (RunState.SUCCEEDED, Outcome.SUCCEEDED, None),
        (RunState.FAILED, Outcome.FAILED, "boom"),
        (RunState.CANCELED, Outcome.FAILED, "boom"),
        (RunState.SKIPPED, Outcome.FAILED, "boom"),
    ],
)
def test_ended_runs(state, outcome, message):
    status = RunStatus("r-1", "name", state, url="u", error="boom")
    assert RunEvent.ended(status) == RunEvent(outcome, "r-1", "name", "u", state, message)


def test_an_active_run_has_not_ended():
    with pytest.raises(ValueError, match="RUNNING"):
        RunEvent.ended(RunStatus("r-1", "name", RunState.RUNNING))


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (AuthError("401"), Outcome.AUTH_ERROR),
        (RunNotFoundError("404"), Outcome.NOT_FOUND),
        (TransientBackendError("503"), Outcome.GAVE_UP),
        (BackendError("400"), Outcome.BACKEND_ERROR),
    ],
)
def test_errors_pick_the_outcome_by_their_class(error, outcome):
    event = RunEvent.from_error("r-1", error, state=RunState.RUNNING)
    assert (event.outcome, event.message, event.state) == (outcome, str(error), RunState.RUNNING)


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "failed", "run_id": "r-1", "message": "Bearer s3cret"},  # an older format
        {"outcome": "exploded", "run_id": "r-1"},
        {"outcome": "failed"},
        {"outcome": "failed", "run_id": "r-1", "state": "MELTED"},
    ],
)
def test_foreign_payloads_are_refused_without_echoing_their_text(payload):
    with pytest.raises(ValueError, match="not a kfp_bridge run event") as err:
        RunEvent.from_payload(payload)
    assert "s3cret" not in str(err.value)


FAILURE = Failure(
    permanent=True,
    error_type="ModelDigestMismatchError",
    message="model has sha256 ab12, expected cd34",
    input="model_sha256",
    step="predict",
)


def test_a_failed_runs_failure_and_failed_tasks_survive_the_trigger_event():
    """Status -> event -> JSON (Airflow's ``next_kwargs``, through the trigger's redaction)
    -> event: the parsed failure and the failed tasks arrive as data, not as text."""
    status = RunStatus(
        "r-1",
        "name",
        RunState.FAILED,
        url="http://ui/r-1",
        error="task predict failed",
        failed_tasks=(FailedTask("predict", pods=("p-1",), log_tail="..."),),
        failure=FAILURE,
    )
    event = RunEvent.ended(status)
    assert (event.failed_tasks, event.failure) == (("predict",), FAILURE)
    stored = json.loads(json.dumps(redact_data(event.to_payload())))
    assert stored["failure"] == {
        "permanent": True,
        "error_type": "ModelDigestMismatchError",
        "message": "model has sha256 ab12, expected cd34",
        "input": "model_sha256",
        "step": "predict",
    }
    assert RunEvent.from_payload(stored) == event


def test_a_succeeded_run_carries_no_failure():
    status = RunStatus("r-1", "name", RunState.SUCCEEDED, failure=FAILURE)
    assert RunEvent.ended(status).failure is None


def test_a_foreign_failure_in_a_payload_is_refused_naming_it():
    payload = RunEvent(Outcome.FAILED, "r-1", state=RunState.FAILED).to_payload()
    payload["failure"] = {"permanent": "yes"}
    with pytest.raises(ValueError, match="not a failure"):
        RunEvent.from_payload(payload)
