"""KubeflowPipelineRunTrigger against the stand-in KFP API server (real kfp-server-api client).

The trigger is driven the way the triggerer drives it: ``run()`` on an event
loop, and for kill/cancel, Airflow's own ``TriggerRunner.run_trigger``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import time

import pytest

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger
from kfp_bridge.waiting import WaitPolicy
from tests.bridge._helpers import local_connection_env

FAST = WaitPolicy(poll_interval=0.01, max_poll_interval=0.05)


def _submit(kfp_backend, name: str = "trigger-test") -> str:
    spec = {"pipelineInfo": {"name": "p"}, "root": {}, "schemaVersion": "2.1.0"}
    return kfp_backend.submit(RunRequest(display_name=name, pipeline_spec=spec)).run_id


def _first_event(trigger: KubeflowPipelineRunTrigger, timeout: float = 30.0) -> RunEvent:
    """The trigger's one event, decoded as the operator decodes it."""

    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("trigger ended without an event")

    return RunEvent.from_payload(asyncio.run(asyncio.wait_for(first(), timeout)))


def _trigger(kfp_conn_id: str, run_id: str, deadline=None, **policy) -> KubeflowPipelineRunTrigger:
    return KubeflowPipelineRunTrigger(
        kfp_conn_id=kfp_conn_id,
        run_id=run_id,
        run_name="trigger-test",
        deadline=deadline,
        policy=dataclasses.replace(FAST, **policy),
    )


def test_serialize_round_trip_rebuilds_an_equal_trigger():
    policy = WaitPolicy(poll_interval=15, max_poll_interval=120, max_transient_errors=4)
    trigger = KubeflowPipelineRunTrigger(
        kfp_conn_id="kfp_default",
        run_id="r-1",
        run_name="dag__task__2026-11-26T210000Z",
        run_url="http://ui/#/runs/details/r-1",
        deadline=1_900_000_000.5,
        policy=policy,
        gcp_conn_id="gcp_prod",
        impersonation_chain=("mid@p.iam.gserviceaccount.com", "run@p.iam.gserviceaccount.com"),
        cancel_on_kill=False,
    )
    classpath, kwargs = trigger.serialize()
    assert kwargs["impersonation_chain"] == [  # a list: it must survive JSON
        "mid@p.iam.gserviceaccount.com",
        "run@p.iam.gserviceaccount.com",
    ]
    assert (kwargs["gcp_conn_id"], kwargs["cancel_on_kill"]) == ("gcp_prod", False)
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.policy == policy
    assert kwargs["deadline"] == 1_900_000_000.5
    # what the triggerer stores must survive Airflow's trigger serialization
    from airflow.serialization.serialized_objects import BaseSerialization

    assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs


def test_succeeded_run_fires_success(kfp_server, kfp_backend, kfp_conn_id):
    run_id = _submit(kfp_backend)
    event = _first_event(_trigger(kfp_conn_id, run_id))
    assert (event.outcome, event.state) == (Outcome.SUCCEEDED, RunState.SUCCEEDED)
    assert event.run_id == run_id
    assert event.run_url.endswith(f"/#/runs/details/{run_id}")


@pytest.mark.parametrize("outcome", ["FAILED", "SKIPPED"])
def test_failed_or_skipped_run_fires_failed_with_the_run_error(
    kfp_server, kfp_backend, kfp_conn_id, outcome
):
    kfp_server.set_schedule(outcome=outcome, error="component predict: OOMKilled")
    run_id = _submit(kfp_backend)
    event = _first_event(_trigger(kfp_conn_id, run_id))
    assert (event.outcome, event.state) == (Outcome.FAILED, RunState(outcome))
    if outcome == "FAILED":  # the stand-in gives only FAILED runs an error
        assert "OOMKilled" in event.message


def test_canceled_is_terminal_unlike_kfp_client(kfp_server, kfp_backend, kfp_conn_id):
    kfp_server.set_schedule(pending=1, running=1000)
    run_id = _submit(kfp_backend)
    kfp_server.set_run_state(run_id, "CANCELED")
    event = _first_event(_trigger(kfp_conn_id, run_id))
    assert (event.outcome, event.state) == (Outcome.FAILED, RunState.CANCELED)


@pytest.mark.parametrize("state", ["SKIPPED", "FAILED", "CANCELED"])
def test_unsuccessful_event_names_the_state_and_carries_the_run_error(tmp_path, monkeypatch, state):
    """Every unsuccessful end state, with the run's own error (local backend's run files)."""
    for name, value in local_connection_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    run_id = "ended-run"
    run_dir = tmp_path / run_id
    run_dir.mkdir()
    error = "component predict: OOMKilled"
    (run_dir / "request.json").write_text(json.dumps({"run_id": run_id, "display_name": "x"}))
    (run_dir / "state.json").write_text(json.dumps({"state": state, "error": error}))
    event = _first_event(
        KubeflowPipelineRunTrigger(
            kfp_conn_id="kfp_local", run_id=run_id, run_name="x", policy=FAST
        )
    )
    assert (event.outcome, event.state, event.message) == (Outcome.FAILED, RunState(state), error)


def test_paused_is_not_success_and_times_out(kfp_server, kfp_backend, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=1000)
    run_id = _submit(kfp_backend)
    kfp_server.set_run_state(run_id, "PAUSED")
    event = _first_event(_trigger(kfp_conn_id, run_id, deadline=time.time() + 0.5))
    assert (event.outcome, event.state) == (Outcome.TIMED_OUT, RunState.PAUSED)


def test_transient_errors_are_retried_within_the_budget(kfp_server, kfp_backend, kfp_conn_id):
    run_id = _submit(kfp_backend)
    kfp_server.inject("status", times=2, status=503, path="/runs/")
    kfp_server.inject("status", times=1, status=500, path="/runs/")
    kfp_server.inject("drop", times=1, path="/runs/")
    event = _first_event(_trigger(kfp_conn_id, run_id, max_transient_errors=5))
    assert event.outcome is Outcome.SUCCEEDED
    gets = [r for r in kfp_server.requests() if r["method"] == "GET" and run_id in r["path"]]
    assert len(gets) >= 4 + 3  # four failed polls, then PENDING, RUNNING, SUCCEEDED


def test_transient_errors_beyond_the_budget_fail_clearly(kfp_server, kfp_backend, kfp_conn_id):
    run_id = _submit(kfp_backend)
    kfp_server.inject("status", times=-1, status=503, path="/runs/")
    event = _first_event(_trigger(kfp_conn_id, run_id, max_transient_errors=2))
    assert event.outcome is Outcome.GAVE_UP
    assert "3 consecutive transient errors" in event.message


def test_401_fails_at_once_as_auth_error(kfp_server, kfp_backend, kfp_conn_id):
    run_id = _submit(kfp_backend)
    kfp_server.require_token("the-right-token")  # the connection sends none
    event = _first_event(_trigger(kfp_conn_id, run_id, max_transient_errors=50))
    assert event.outcome is Outcome.AUTH_ERROR
    polls = [r for r in kfp_server.requests() if r["method"] == "GET" and run_id in r["path"]]
    assert len(polls) == 1  # not retried


def test_run_that_disappears_fails_as_not_found(kfp_server, kfp_backend, kfp_conn_id):
    kfp_server.set_schedule(pending=1, running=1000)
    run_id = _submit(kfp_backend)
    kfp_server.delete_run(run_id)
    event = _first_event(_trigger(kfp_conn_id, run_id))
    assert event.outcome is Outcome.NOT_FOUND
    assert run_id in event.message


def test_deadline_fires_timeout_with_the_last_state(kfp_server, kfp_backend, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    run_id = _submit(kfp_backend)
    event = _first_event(_trigger(kfp_conn_id, run_id, deadline=time.time() + 0.3))
    assert (event.outcome, event.state) == (Outcome.TIMED_OUT, RunState.RUNNING)


def test_polling_backs_off_while_the_state_does_not_change(kfp_server, kfp_backend, kfp_conn_id):
    kfp_server.set_schedule(pending=0, running=100000)
    run_id = _submit(kfp_backend)
    trigger = _trigger(
        kfp_conn_id, run_id, poll_interval=0.02, max_poll_interval=0.4, deadline=time.time() + 2.0
    )
    _first_event(trigger)
    polls = [r for r in kfp_server.requests() if r["method"] == "GET" and run_id in r["path"]]
    # at a fixed 0.02 s interval two seconds would take ~100 polls
    assert len(polls) < 30


def _run_in_airflow_trigger_runner(trigger, cancel_msg: str | None) -> None:
    """Run ``trigger`` in Airflow's TriggerRunner.run_trigger and cancel it like the triggerer."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    async def scenario():
        runner = TriggerRunner()
        runner.triggers[1] = {"task": None, "name": "t", "events": 0, "is_watcher": False}
        task = asyncio.create_task(runner.run_trigger(1, trigger, None, None))
        await asyncio.sleep(0.5)  # polling by now
        if cancel_msg is None:
            task.cancel()
        else:
            task.cancel(cancel_msg)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_user_action_in_the_triggerer_cancels_the_run(kfp_server, kfp_backend, kfp_conn_id):
    """Mark failed/success or clear while deferred: the triggerer calls on_kill -> run canceled."""
    from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG

    kfp_server.set_schedule(pending=0, running=100000)
    run_id = _submit(kfp_backend)
    _run_in_airflow_trigger_runner(_trigger(kfp_conn_id, run_id), _USER_ACTION_CANCEL_MSG)
    assert kfp_backend.get_run(run_id).state.value in ("CANCELING", "FAILED")  # KFP: no CANCELED
    assert any(
        r["method"] == "POST" and r["path"].endswith(f"/runs/{run_id}:terminate")
        for r in kfp_server.requests()
    )


def test_triggerer_shutdown_leaves_the_run_alone(kfp_server, kfp_backend, kfp_conn_id):
    """A restart/redistribution cancels the trigger without the user-action message."""
    kfp_server.set_schedule(pending=0, running=100000)
    run_id = _submit(kfp_backend)
    _run_in_airflow_trigger_runner(_trigger(kfp_conn_id, run_id), None)
    assert kfp_backend.get_run(run_id).state.value == "RUNNING"
    assert not any(
        r["method"] == "POST" and "terminate" in r["path"] for r in kfp_server.requests()
    )


def test_user_action_on_a_finished_run_sends_no_cancel(
    kfp_server, kfp_backend, kfp_conn_id, capsys
):
    """A trigger row left behind (``airflow dags test``) is picked up and killed after the
    run succeeded: on_kill reads the run first and leaves a finished run alone."""
    from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG

    run_id = _submit(kfp_backend)
    while not kfp_backend.get_run(run_id).state.is_terminal:
        pass  # the stand-in moves one state per read
    trigger = _trigger(kfp_conn_id, run_id, poll_interval=30)  # still in its first pause
    _run_in_airflow_trigger_runner(trigger, _USER_ACTION_CANCEL_MSG)
    assert kfp_backend.get_run(run_id).state.value == "SUCCEEDED"
    assert not any("terminate" in r["path"] for r in kfp_server.requests())
    logged = capsys.readouterr().out  # the triggerer's structured log
    [line] = [line for line in logged.splitlines() if "not sending a cancel" in line]
    assert f"run {run_id} already ended SUCCEEDED" in line


def test_cancel_on_kill_false_lets_the_run_outlive_the_task(kfp_server, kfp_backend, kfp_conn_id):
    """The Google provider's name and meaning: a user action ends the wait, not the run."""
    from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG

    kfp_server.set_schedule(pending=0, running=100000)
    run_id = _submit(kfp_backend)
    trigger = KubeflowPipelineRunTrigger(
        kfp_conn_id=kfp_conn_id, run_id=run_id, policy=FAST, cancel_on_kill=False
    )
    assert trigger.serialize()[1]["cancel_on_kill"] is False
    _run_in_airflow_trigger_runner(trigger, _USER_ACTION_CANCEL_MSG)
    assert kfp_backend.get_run(run_id).state.value == "RUNNING"
    assert not any("terminate" in r["path"] for r in kfp_server.requests())


def test_the_triggerer_log_prints_the_run_url_before_whitespace(
    kfp_server, kfp_backend, kfp_conn_id, capsys, caplog
):
    """Airflow's log viewer links a URL up to the next whitespace: no `)` may stick to it."""
    from tests.bridge.test_waiting import assert_urls_stand_alone

    kfp_server.set_schedule(pending=1, running=1)
    run_id = _submit(kfp_backend)
    with caplog.at_level("INFO"):
        event = _first_event(_trigger(kfp_conn_id, run_id))
    text = capsys.readouterr().out + "\n".join(r.getMessage() for r in caplog.records)
    assert event.run_url and f"is SUCCEEDED: {event.run_url}" in text, text
    assert_urls_stand_alone(text, event.run_url, times=text.count(event.run_url))
