"""The waiting policy, run by the worker and by the triggerer: same script, same sleeps and outcome.

A scripted backend answers each call from a list (a state, or an exception to
raise); a fake clock records every sleep and moves time by it. Each scenario
runs the one async implementation as the worker does (``asyncio.run``, backend
calls in place) and as the triggerer does (awaited, real ``asyncio.to_thread``
calls) and must give exactly the same result.
Nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from dataclasses import replace
from functools import partial

import pytest

from kfp_bridge.backends.base import RunRequest, RunState, RunStatus
from kfp_bridge.exceptions import AuthError, RunNotFoundError, TransientBackendError
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.waiting import Clock, RunWaiter, WaitPolicy

P, R, S, F = RunState.PENDING, RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED
CANCELING, CANCELED = RunState.CANCELING, RunState.CANCELED
# No jitter unless a test asks for it: the expected sleeps are exact numbers.
POLICY = WaitPolicy(poll_interval=1.0, max_poll_interval=4.0, retry_base=1.0, jitter=0.0)
START = 1_000_000.0


def blip(n: int = 1) -> list[TransientBackendError]:
    return [TransientBackendError(f"HTTP 503 #{i}") for i in range(n)]


class ScriptedBackend:
    """Answers get_run / cancel / submit / find_runs from scripts; records every call."""

    def __init__(self, reads=(), cancels=(), submits=(), finds=()):
        self.scripts = {
            "get_run": list(reads),
            "cancel": list(cancels),
            "submit": list(submits),
            "find_runs": list(finds),
        }
        self.calls: list[str] = []

    def _next(self, call: str):
        self.calls.append(call)
        item = self.scripts[call].pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def get_run(self, run_id: str) -> RunStatus:
        item = self._next("get_run")  # a state, or a whole RunStatus
        return item if isinstance(item, RunStatus) else status(item, run_id)

    def cancel(self, run_id: str) -> None:
        self._next("cancel")

    def submit(self, request: RunRequest) -> RunStatus:
        return status(self._next("submit"))

    def find_runs(self, display_name: str, experiment=None) -> list[RunStatus]:
        # each a state, or a whole RunStatus
        return [s if isinstance(s, RunStatus) else status(s) for s in self._next("find_runs")]


def status(state: RunState, run_id: str = "r-1") -> RunStatus:
    error = "component failed" if state is F else None
    return RunStatus(run_id, "daily__predict", state, url=f"http://ui/{run_id}", error=error)


class FakeClock(Clock):
    def __init__(self) -> None:
        self.t = START
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(round(seconds, 6))
        self.t += seconds


def both_faces(operation: str, policy=POLICY, deadline=None, rng_seed=None, **script):
    """Run ``operation`` on each face with the same script: {face: (result, sleeps, calls)}."""
    results = {}
    for face in ("sync", "async"):
        backend, clock = ScriptedBackend(**script), FakeClock()
        rng = random.Random(rng_seed) if rng_seed is not None else random
        waiter = RunWaiter(
            lambda backend=backend: backend,
            policy,
            deadline=None if deadline is None else START + deadline,
            clock=clock,
            rng=rng,
        )
        if operation == "wait":
            sync_face, async_face = waiter.wait, waiter.wait_async
        else:
            sync_face = partial(waiter.cancel, reason="test")
            async_face = partial(waiter.cancel_async, reason="test")
        result = sync_face("r-1") if face == "sync" else asyncio.run(async_face("r-1"))
        results[face] = (result, clock.sleeps, backend.calls)
    assert results["sync"] == results["async"], "the two faces disagree"
    return results["sync"]


# -- waiting until the run ends ----------------------------------------------------------------


def test_polls_back_off_while_the_state_is_unchanged_and_reset_on_a_change():
    event, sleeps, _ = both_faces("wait", reads=[P, R, R, R, R, R, F])
    # first pause, PENDING (new) -> 1, RUNNING (new) -> 1, then x1.5 up to the 4 s ceiling
    assert sleeps == [1.0, 1.0, 1.0, 1.5, 2.25, 3.375, 4.0]
    assert event == RunEvent(
        Outcome.FAILED, "r-1", "daily__predict", "http://ui/r-1", F, "component failed"
    )


def test_transient_errors_back_off_exponentially_then_polling_resumes():
    event, sleeps, calls = both_faces("wait", reads=[R, *blip(3), R, S])
    # after an error: retry_base * 2**n (2, 4, 8 -> capped at 4); the first successful
    # poll resets the pause to the poll interval
    assert sleeps == [1.0, 1.0, 2.0, 4.0, 4.0, 1.0]
    assert event.outcome is Outcome.SUCCEEDED
    assert calls == ["get_run"] * 6


def test_more_transient_errors_than_the_budget_end_the_wait():
    policy = replace(POLICY, max_transient_errors=2)
    event, sleeps, _ = both_faces("wait", policy, reads=[R, *blip(3)])
    assert event.outcome is Outcome.GAVE_UP
    assert event.state is R  # the last state seen
    assert "after 3 consecutive transient errors over 6.0 s" in event.message
    assert event.message.endswith("; last: HTTP 503 #2")
    assert sleeps == [1.0, 1.0, 2.0, 4.0]


def test_the_error_budget_counts_consecutive_errors_only():
    policy = replace(POLICY, max_transient_errors=2)
    event, _, _ = both_faces("wait", policy, reads=[*blip(2), R, *blip(2), S])
    assert event.outcome is Outcome.SUCCEEDED


def test_the_deadline_caps_the_last_pause_and_ends_the_wait():
    event, sleeps, calls = both_faces("wait", deadline=5.0, reads=[R, R, R, R, R])
    # 1 + 1 + 1.5 = 3.5; the next pause (2.25) is cut to the 1.5 s left; poll; then time out
    assert sleeps == [1.0, 1.0, 1.5, 1.5]
    assert calls == ["get_run"] * 4
    assert (event.outcome, event.state) == (Outcome.TIMED_OUT, R)


def test_a_deadline_already_passed_times_out_without_sleeping_or_polling():
    event, sleeps, calls = both_faces("wait", deadline=-1.0, reads=[])
    assert (event.outcome, sleeps, calls) == (Outcome.TIMED_OUT, [], [])


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(AuthError("HTTP 401"), Outcome.AUTH_ERROR), (RunNotFoundError("404"), Outcome.NOT_FOUND)],
)
def test_refusals_end_the_wait_at_once_without_retries(error, outcome):
    event, _, calls = both_faces("wait", reads=[R, error])
    assert (event.outcome, event.message, event.state) == (outcome, str(error), R)
    assert calls == ["get_run", "get_run"]


def test_jitter_is_within_bounds_and_the_same_on_both_faces_for_the_same_seed():
    policy = replace(POLICY, jitter=0.5, max_poll_interval=100.0)
    _, sleeps, _ = both_faces("wait", policy, rng_seed=7, reads=[*blip(4), S])
    nominal = [2.0, 4.0, 8.0, 16.0]
    assert sleeps[0] == 1.0
    assert all(0.5 * n <= s <= 1.5 * n for s, n in zip(sleeps[1:], nominal, strict=True))
    assert sleeps[1:] != nominal  # jittered


def test_after_a_long_burst_of_503s_the_first_success_brings_back_the_normal_interval():
    # the operator's defaults: 30 s polls, cap 120 s, 5 s retry base, jitter ±50 %
    policy = WaitPolicy(poll_interval=30.0, max_transient_errors=40, retry_deadline=None)
    assert policy.max_poll_interval == 120.0
    burst = 30
    event, sleeps, calls = both_faces(
        "wait", policy, rng_seed=3, reads=[R, R, R, *blip(burst), R, R, S]
    )
    assert event.outcome is Outcome.SUCCEEDED
    assert calls == ["get_run"] * (burst + 6)
    # sleeps[i] is the pause before poll i; polls 3 .. 3 + burst - 1 are the 503s
    assert sleeps[:4] == [30.0, 30.0, 45.0, 67.5]  # grown before the burst
    retries = sleeps[4 : 4 + burst]
    assert max(retries) == 120.0  # the back-off reached the cap, jittered or not ...
    assert max(sleeps) <= policy.max_poll_interval  # ... and never went beyond it
    after_success = sleeps[4 + burst]
    assert after_success == policy.poll_interval  # not the grown back-off
    assert sleeps[4 + burst + 1] == 45.0  # then the unchanged-state back-off starts afresh


def test_no_pause_exceeds_the_cap_whatever_the_jitter():
    policy = WaitPolicy(poll_interval=10.0, max_poll_interval=25.0, retry_base=5.0, jitter=0.9)
    for seed in range(50):
        rng = random.Random(seed)
        delays = [policy.retry_delay(n, rng) for n in range(1, 200)]
        assert max(delays) <= 25.0 and min(delays) > 0
    interval = 10.0
    for _ in range(20):
        interval = policy.next_interval(interval)
        assert interval <= 25.0


def test_state_lines_end_with_the_run_url(caplog):
    """Airflow's log viewer links a URL up to the next whitespace: nothing may stick to it."""
    backend = ScriptedBackend(reads=[P, R, *blip(1), R, S])
    waiter = RunWaiter(lambda: backend, POLICY, clock=FakeClock(), rng=random.Random(0))
    with caplog.at_level("INFO", logger="kfp_bridge.waiting"):
        waiter.wait("r-1")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Run daily__predict (r-1) is SUCCEEDED: http://ui/r-1" in text
    assert_urls_stand_alone(text, "http://ui/r-1", times=3)


def assert_urls_stand_alone(text: str, url: str, times: int) -> None:
    """Each ``url`` in ``text`` is preceded and followed by whitespace or an end of line."""
    found = [m.start() for m in re.finditer(re.escape(url), text)]
    assert len(found) == times, text
    for start in found:
        before, after = text[start - 1 : start], text[start + len(url) : start + len(url) + 1]
        assert before in ("", " ", "\n", "\t") and after in ("", " ", "\n", "\t"), (
            f"{url!r} touches {before!r}/{after!r} in: {text}"
        )


# -- cancel and confirm -------------------------------------------------------------------------


def test_a_finished_run_is_never_sent_a_cancel():
    result, sleeps, calls = both_faces("cancel", reads=[S])
    assert (result.state, sleeps, calls) == (S, [], ["get_run"])


def test_a_run_that_is_gone_is_not_canceled():
    result, _, calls = both_faces("cancel", reads=[RunNotFoundError("404")])
    assert (result, calls) == (None, ["get_run"])


def test_cancel_rides_out_transient_errors_and_confirms_the_run_stopped():
    result, sleeps, calls = both_faces(
        "cancel", reads=[R, *blip(1), CANCELING, CANCELING, CANCELED], cancels=[*blip(2), None]
    )
    assert result.state is CANCELED
    assert calls == ["get_run"] + ["cancel"] * 3 + ["get_run"] * 4
    assert sleeps == [2.0, 4.0, 2.0, 1.0, 1.5]


def test_cancel_confirmation_is_bounded():
    policy = replace(POLICY, cancel_within=3.0)
    result, sleeps, _ = both_faces("cancel", policy, reads=[R, *[CANCELING] * 10], cancels=[None])
    assert result.state is CANCELING  # given up on confirming, not on the run
    assert sum(sleeps) == pytest.approx(3.0)


def test_cancel_ignores_the_wait_deadline():
    """A run canceled because it timed out is canceled and confirmed all the same."""
    result, _, calls = both_faces(
        "cancel", deadline=-10.0, reads=[R, *blip(1), CANCELED], cancels=[None]
    )
    assert result.state is CANCELED and calls.count("get_run") == 3


# -- the sync-only calls (submit, reattach look-ups) --------------------------------------------


def _waiter(backend, policy=POLICY, deadline=None):
    clock = FakeClock()
    waiter = RunWaiter(lambda: backend, policy, deadline=deadline, clock=clock)
    return waiter, clock


def test_submit_after_a_lost_response_adopts_the_run_instead_of_submitting_again():
    backend = ScriptedBackend(submits=[*blip(1)], finds=[[R]])
    waiter, clock = _waiter(backend)
    request = RunRequest(display_name="daily__predict", pipeline_spec={})
    assert waiter.submit(request).state is R
    assert backend.calls == ["submit", "find_runs"]
    assert clock.sleeps == [2.0]


def test_submit_after_a_lost_response_adopts_only_a_run_with_the_requested_parameters():
    """A run under the name with other parameters was set aside by the operator: never adopted.

    Yesterday's SUCCEEDED run (another target date) must not pass for today's, and
    among runs with our parameters the newest is taken.
    """
    today = {"target_date": "2026-01-02", "lookback_days": 28}
    yesterday = replace(status(S, "r-old"), parameters={**today, "target_date": "2026-01-01"})
    ours_new = replace(status(R, "r-new"), parameters={**today, "lookback_days": 28.0})
    ours_older = replace(status(P, "r-older"), parameters=today)
    request = RunRequest(display_name="daily__predict", pipeline_spec={}, parameters=today)

    backend = ScriptedBackend(submits=[*blip(1), P], finds=[[yesterday]])
    waiter, _ = _waiter(backend)
    submitted = waiter.submit(request)
    assert (submitted.run_id, submitted.state) == ("r-1", P)  # a new run, not yesterday's
    assert backend.calls == ["submit", "find_runs", "submit"]

    backend = ScriptedBackend(submits=[*blip(1)], finds=[[yesterday, ours_new, ours_older]])
    waiter, _ = _waiter(backend)
    assert waiter.submit(request).run_id == "r-new"
    assert backend.calls == ["submit", "find_runs"]


def test_submit_again_when_the_look_up_finds_no_live_run():
    backend = ScriptedBackend(submits=[*blip(1), P], finds=[[F]])
    waiter, _ = _waiter(backend)
    assert waiter.submit(RunRequest(display_name="x", pipeline_spec={})).state is P
    assert backend.calls == ["submit", "find_runs", "submit"]


def test_calls_stop_retrying_at_the_deadline():
    backend = ScriptedBackend(reads=blip(5))
    waiter, clock = _waiter(backend, deadline=START + 3.0)
    with pytest.raises(TransientBackendError):
        waiter.read("r-1")
    assert sum(clock.sleeps) == pytest.approx(3.0)  # 2, then the 1 s left; never past it
    assert backend.calls == ["get_run"] * 3


def test_settle_waits_for_a_canceling_run_within_a_bound():
    backend = ScriptedBackend(reads=[CANCELING, CANCELED])
    waiter, clock = _waiter(backend)
    assert waiter.settle(status(CANCELING), within=60).state is CANCELED
    assert clock.sleeps == [1.0, 1.5]


# -- the policy itself --------------------------------------------------------------------------


def test_policy_round_trips_through_trigger_kwargs_and_airflow_serialization():
    from airflow.serialization.serialized_objects import BaseSerialization

    policy = WaitPolicy(poll_interval=15, max_transient_errors=4, timeout=3600)
    kwargs = policy.to_kwargs()
    assert WaitPolicy.from_kwargs(kwargs) == policy
    assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs
    assert policy.max_poll_interval == 60.0  # four poll intervals by default
    assert WaitPolicy(poll_interval=120).max_poll_interval == 300.0  # at most 5 minutes


def test_deadline_counts_from_the_run_creation():
    policy = WaitPolicy(timeout=600)
    now = 1_900_000_000.0
    assert policy.deadline_for("2030-03-17T17:46:40Z", now) == 1_900_000_000.0 + 600
    assert policy.deadline_for("2030-03-17T17:36:40+00:00", now) == now  # 10 min old: due now
    assert policy.deadline_for(None, now) == now + 600
    assert policy.deadline_for("1970-01-01T00:00:00Z", now) == now + 600  # unset (epoch)
    assert policy.deadline_for("2099-01-01T00:00:00Z", now) == now + 600  # clock skew
    assert policy.deadline_for("yesterday", now) == now + 600
    assert WaitPolicy().deadline_for("2030-03-17T17:46:40Z", now) is None


@pytest.mark.parametrize(
    "bad",
    [{"poll_interval": 0}, {"backoff_factor": 0.5}, {"jitter": 1.0}, {"timeout": -1}],
)
def test_policy_refuses_nonsense(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        WaitPolicy(**bad)


# -- redaction: no outcome of a backend call reaches a plan with a secret in it -------------------

SECRET = "tok-3f9a1c77e2"


def _hide(text: str) -> str:
    return text.replace(SECRET, "***")


def _echo(message: str) -> TransientBackendError:
    """An error whose message and cause (the HTTP client's, with the body) echo the secret."""
    try:
        raise RuntimeError(f"HTTP 500 body: Authorization: Bearer {SECRET}")
    except RuntimeError as cause:
        error = TransientBackendError(f"{message}: Bearer {SECRET}")
        error.__cause__ = cause
        return error


@pytest.mark.parametrize("face", ["sync", "async"])
def test_echoed_secrets_are_redacted_in_events_statuses_and_errors(face):
    def wait(*reads, **policy):
        backend = ScriptedBackend(reads=reads)
        waiter = RunWaiter(
            lambda: backend,
            replace(POLICY, **policy),
            clock=FakeClock(),
            redact=_hide,
        )
        return waiter.wait("r-1") if face == "sync" else asyncio.run(waiter.wait_async("r-1"))

    event = wait(_echo("first"), _echo("second"), max_transient_errors=1)
    assert event.outcome is Outcome.GAVE_UP
    assert SECRET not in event.message and "Bearer ***" in event.message

    failed = RunStatus("r-1", "n", F, error=f"task predict: token={SECRET}")
    assert wait(failed).message == "task predict: token=***"


def test_a_raised_error_is_redacted_and_loses_a_tainted_cause():
    backend = ScriptedBackend(reads=[_echo("read run r-1")])
    policy = replace(POLICY, max_transient_errors=0)
    waiter = RunWaiter(lambda: backend, policy, clock=FakeClock(), redact=_hide)
    with pytest.raises(TransientBackendError) as raised:
        waiter.read("r-1")
    assert str(raised.value) == (
        "read run r-1: gave up after 1 tries over 0.0 s of transient errors "
        "(at most 1 tries within 900 s); last: read run r-1: Bearer ***"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# -- retries bounded in time as well as in count (issue 17) -----------------------------------


def test_a_burst_longer_than_retry_deadline_ends_the_wait_saying_how_long():
    policy = replace(POLICY, max_transient_errors=1000, retry_deadline=10.0)
    event, sleeps, calls = both_faces("wait", policy, reads=[R, *blip(100)])
    assert event.outcome is Outcome.GAVE_UP and event.state is R
    # pauses after the first error: 2, 4, then the cap 4 ... never past the 10 s budget
    assert sleeps == [1.0, 1.0, 2.0, 4.0, 4.0]
    assert calls == ["get_run"] * 5  # 4 errors, the last one at 10 s
    assert "after 4 consecutive transient errors over 10.0 s" in event.message
    assert "within 10 s" in event.message and event.message.endswith("HTTP 503 #3")


def test_calls_give_up_at_the_retry_deadline_naming_tries_and_seconds():
    backend = ScriptedBackend(reads=blip(100))
    waiter, clock = _waiter(backend, replace(POLICY, max_transient_errors=1000, retry_deadline=5.0))
    with pytest.raises(TransientBackendError) as raised:
        waiter.read("r-1")
    assert clock.sleeps == [2.0, 3.0]  # 2, then the 3 s left of the 5 s budget
    assert backend.calls == ["get_run"] * 3
    message = str(raised.value)
    assert message.startswith("read run r-1: gave up after 3 tries over 5.0 s")
    assert "(at most 1001 tries within 5 s); last: HTTP 503 #2" in message


def test_the_count_still_bounds_a_short_burst_and_says_so():
    backend = ScriptedBackend(reads=blip(100))
    waiter, _ = _waiter(backend, replace(POLICY, max_transient_errors=2))
    with pytest.raises(TransientBackendError, match=r"gave up after 3 tries over 6.0 s"):
        waiter.read("r-1")
    assert backend.calls == ["get_run"] * 3


def test_retry_deadline_resets_with_the_first_success():
    policy = replace(POLICY, max_transient_errors=1000, retry_deadline=5.0)
    event, _, _ = both_faces("wait", policy, reads=[*blip(2), R, *blip(2), R, S])
    assert event.outcome is Outcome.SUCCEEDED  # two 6 s bursts would not fit in 5 s together


def test_a_stand_in_answering_503_forever_is_given_up_by_tries_not_by_the_clock():
    """The real client against the stand-in; only the clock is fake (no real sleeps)."""
    from kfp_bridge.backends.kfp_api import KfpApiBackend
    from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

    policy = replace(POLICY, max_transient_errors=1000, retry_deadline=12.0)
    with KfpApiStandIn() as server:
        server.inject("status", times=-1, status=503, path="/runs/")  # never runs out
        backend = KfpApiBackend(server.url, request_timeout=2.0)
        clock = FakeClock()
        waiter = RunWaiter(lambda: backend, policy, clock=clock)
        try:
            with pytest.raises(TransientBackendError) as raised:
                waiter.read("r-1")
        finally:
            backend.close()
        tries = [r for r in server.requests() if r["method"] == "GET" and "/runs/" in r["path"]]
    assert clock.sleeps == [2.0, 4.0, 4.0, 2.0]  # capped pauses, the last cut to the budget
    assert len(tries) == 5
    assert "gave up after 5 tries over 12.0 s" in str(raised.value)
    assert "HTTP 503" in str(raised.value)


# -- how the worker runs the coroutines -----------------------------------------------------------


def test_the_worker_calls_the_backend_in_place_and_the_triggerer_in_a_thread():
    threads = []
    backend = ScriptedBackend(reads=[R, S, S])

    def get_backend():
        threads.append(threading.get_ident())
        return backend

    waiter = RunWaiter(get_backend, POLICY, clock=FakeClock())
    waiter.read("r-1")
    assert threads == [threading.get_ident()]
    assert asyncio.run(waiter.wait_async("r-1", last_state=R)).outcome is Outcome.SUCCEEDED
    assert threading.get_ident() not in threads[1:] and len(threads) == 2


def test_a_worker_wait_started_inside_a_running_event_loop_still_runs_to_its_end():
    """``on_kill`` can interrupt a wait of the same worker (a signal handler): its cancel
    then starts while that wait's loop runs, where ``asyncio.run`` alone is refused."""
    backend = ScriptedBackend(reads=[R, CANCELED], cancels=[None])
    waiter, _ = _waiter(backend)

    async def interrupted_wait():
        return waiter.cancel("r-1", reason="Task killed")

    assert asyncio.run(interrupted_wait()).state is CANCELED
    assert backend.calls == ["get_run", "cancel", "get_run"]
