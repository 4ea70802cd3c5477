"""Waiting on a pipeline run: one policy, written once, with a sync and an async face.

The worker (a non-deferrable task, submit, reattach, ``on_kill``) and the triggerer
(a deferred task) wait by the same rules:

- **polling**: every ``poll_interval`` seconds at first; while the state does not
  change each pause grows by ``backoff_factor`` up to ``max_poll_interval``; a new
  state resets it;
- **transient errors** (``TransientBackendError``: 5xx, timeouts, refused
  connections) are retried after ``retry_base * 2**n`` seconds with a jitter of
  ``±jitter``; more than ``max_transient_errors`` in a row, or a burst of them lasting
  ``retry_deadline`` seconds, end the call or the wait, with an error that says how
  many tries over how long;
- **the cap**: no pause, back-off or jittered retry, ever exceeds ``max_poll_interval``;
- **recovery**: the first successful poll after transient errors resets the pause to
  ``poll_interval``, so a run that ended during a burst of errors is seen within one
  normal interval of the service answering again (not after a grown back-off);
- **deadline**: absolute (Unix time), counted from the run's creation
  (:meth:`WaitPolicy.deadline_for`), so a retry or a trigger moved to another
  triggerer keeps the same limit; no pause sleeps past it;
- **cancel and confirm**: read the run first (a finished run is never sent a
  cancel), ask the service to cancel it (transient errors retried), then poll
  until it has left the active states, all within ``cancel_within`` seconds.

The rules are generators that only *describe* their I/O (``_Sleep``, ``_Call``)
and receive the results; :class:`RunWaiter` runs them with ``time.sleep`` and
direct calls (:meth:`~RunWaiter.wait`, :meth:`~RunWaiter.cancel`) or with
``asyncio.sleep`` and ``asyncio.to_thread`` (:meth:`~RunWaiter.wait_async`,
:meth:`~RunWaiter.cancel_async`), so the two faces cannot drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from kfp_bridge.backends.base import RunState, RunStatus
from kfp_bridge.exceptions import BackendError, RunNotFoundError, TransientBackendError
from kfp_bridge.redaction import Redact, redact_error, redact_outcome
from kfp_bridge.run_event import Outcome, RunEvent

if TYPE_CHECKING:
    from kfp_bridge.backends.base import Backend, RunRequest

T = TypeVar("T")
log = logging.getLogger(__name__)

# While a cancel is being confirmed (or a CANCELING run waited for), polls start here.
SETTLE_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class WaitPolicy:
    """How long and how often to wait on a run. Plain numbers: it travels in trigger kwargs.

    :param poll_interval: seconds between polls at first, after a change of state and
        after the first successful poll that follows transient errors.
    :param max_poll_interval: the cap of every pause: unchanged-state back-off and
        (jittered) transient-error retries alike never wait longer; default four poll
        intervals, at most 300 s (never below ``poll_interval``).
    :param backoff_factor: growth of the pause per unchanged poll.
    :param max_transient_errors: consecutive transient errors tolerated per call or wait.
    :param retry_deadline: seconds a burst of consecutive transient errors may last before
        the call or wait gives up (``None``: only the count bounds it); no retry pause
        sleeps past it. With the default count and cap alone a burst could last 50 min.
    :param retry_base: base of the transient-error delay (at most ``poll_interval``).
    :param jitter: each transient-error delay is multiplied by ``1 ± jitter`` (then capped).
    :param timeout: seconds from the run's creation after which the wait times out.
    :param cancel_within: bound of "cancel and confirm", in seconds.
    """

    poll_interval: float = 30.0
    max_poll_interval: float | None = None
    backoff_factor: float = 1.5
    max_transient_errors: int = 10
    retry_deadline: float | None = 900.0
    retry_base: float = 5.0
    jitter: float = 0.5
    timeout: float | None = None
    cancel_within: float = 20.0

    def __post_init__(self) -> None:
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval!r}")
        if self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be >= 1, got {self.backoff_factor!r}")
        if self.max_transient_errors < 0:
            raise ValueError(f"max_transient_errors must be >= 0, got {self.max_transient_errors}")
        if self.retry_deadline is not None and not self.retry_deadline > 0:
            raise ValueError(
                f"retry_deadline must be positive or None, got {self.retry_deadline!r}"
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {self.timeout!r}")
        ceiling = self.max_poll_interval
        if ceiling is None:
            ceiling = min(300.0, 4 * self.poll_interval)
        object.__setattr__(self, "max_poll_interval", max(float(ceiling), self.poll_interval))

    # -- serialization (trigger kwargs) ---------------------------------------------------

    def to_kwargs(self) -> dict[str, Any]:
        """Plain numbers, for ``BaseTrigger.serialize``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | WaitPolicy | None) -> WaitPolicy:
        if kwargs is None:
            return cls()
        if isinstance(kwargs, WaitPolicy):
            return kwargs
        return cls(**kwargs)

    # -- the rules ---------------------------------------------------------------------------

    def next_interval(self, interval: float) -> float:
        """The pause after a poll that saw the same state as the one before."""
        return min(interval * self.backoff_factor, self.max_poll_interval)

    def retry_delay(self, errors: int, rng: random.Random | Any = random) -> float:
        """Pause after the ``errors``-th consecutive transient error: exponential, jittered,
        never above ``max_poll_interval``."""
        base = min(self.retry_base, self.poll_interval)
        # the exponent is bounded so a long burst cannot overflow the float
        delay = base * 2 ** min(errors, 64) * rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.max_poll_interval, delay)

    def deadline_for(self, created_at: str | None, now: float) -> float | None:
        """Unix time by which the run must end: ``timeout`` after its creation.

        An unknown, unparsable, unset (epoch) or future (clock skew) creation time
        counts from ``now``.
        """
        if self.timeout is None:
            return None
        started = now
        if created_at:
            try:
                created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
            except ValueError:
                log.warning(
                    "Unparsable run creation time %r; the timeout counts from now", created_at
                )
            else:
                if created.tzinfo is None:
                    created = created.replace(tzinfo=UTC)
                if 0 < created.timestamp() <= now:
                    started = created.timestamp()
        return started + self.timeout


class Clock:
    """Wall-clock time and sleeps (tests pass a fake one; nothing asserts real time)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Call:
    fn: Callable[[], Any]


Plan = Generator[_Sleep | _Call, Any, T]


class _Feed:
    """Steps a plan, handing it the outcome (value or exception) of its last call.

    Every outcome is redacted on its way in (:mod:`kfp_bridge.redaction`): what the
    plans log, return or raise never holds a secret the service echoed.
    """

    def __init__(self, plan: Plan[Any], redact: Redact | None) -> None:
        self.plan = plan
        self.redact = redact
        self.value: Any = None
        self._result: Any = None
        self._error: BaseException | None = None

    def next_step(self) -> _Sleep | _Call | None:
        """The plan's next step; None once it returned (its value is then ``self.value``)."""
        result, error, self._result, self._error = self._result, self._error, None, None
        try:
            return self.plan.throw(error) if error is not None else self.plan.send(result)
        except StopIteration as done:
            self.value = done.value
            return None

    def give(self, result: Any) -> None:
        self._result = redact_outcome(result, self.redact) if self.redact else result

    def fail(self, error: BaseException) -> None:
        self._error = redact_error(error, self.redact) if self.redact else error


def _sync_face(plan: Callable[..., Plan[T]]) -> Callable[..., T]:
    """The plan method run with ``time.sleep`` and direct calls (the worker's face)."""

    @functools.wraps(plan)
    def face(self: RunWaiter, *args: Any, **kwargs: Any) -> T:
        return self._run(plan(self, *args, **kwargs))

    return face


def _async_face(plan: Callable[..., Plan[T]]) -> Callable[..., Awaitable[T]]:
    """The plan method run with ``asyncio.sleep`` and calls in a thread (the triggerer's face)."""

    @functools.wraps(plan)
    async def face(self: RunWaiter, *args: Any, **kwargs: Any) -> T:
        return await self._run_async(plan(self, *args, **kwargs))

    return face


class RunWaiter:
    """The waits on one backend under one policy.

    Faces (same arguments as the plan each runs): ``call``, ``read``, ``submit``,
    ``wait``/``wait_async``, ``settle``, ``cancel``/``cancel_async``.

    :param get_backend: returns the backend; called inside each I/O step (in a
        thread on the async face), so a connection lookup never blocks an event loop.
    :param policy: the rules.
    :param deadline: Unix time after which waits time out and retries stop (None: no limit).
    :param log: where to log (the operator's or trigger's logger).
    :param clock: time and sleeps; :class:`Clock` unless a test passes a fake one.
    :param rng: source of jitter (``random`` unless a test seeds one).
    :param redact: applied to every backend outcome (messages, run errors); the operator
        and the trigger pass Airflow's secrets masker.
    """

    def __init__(
        self,
        get_backend: Callable[[], Backend],
        policy: WaitPolicy,
        *,
        deadline: float | None = None,
        log: logging.Logger | logging.LoggerAdapter | Any | None = None,
        clock: Clock | None = None,
        rng: random.Random | Any = random,
        redact: Redact | None = None,
    ) -> None:
        self.get_backend = get_backend
        self.redact = redact
        self.policy = policy
        self.deadline = deadline
        self.log = log or logging.getLogger(__name__)
        self.clock = clock or Clock()
        self.rng = rng

    # -- drivers -----------------------------------------------------------------------------

    def _run(self, plan: Plan[T]) -> T:
        feed = _Feed(plan, self.redact)
        while (step := feed.next_step()) is not None:
            if isinstance(step, _Sleep):
                self.clock.sleep(step.seconds)
                continue
            try:
                feed.give(step.fn())
            except Exception as exc:
                feed.fail(exc)
        return feed.value

    async def _run_async(self, plan: Plan[T]) -> T:
        feed = _Feed(plan, self.redact)
        while (step := feed.next_step()) is not None:
            if isinstance(step, _Sleep):
                await self.clock.sleep_async(step.seconds)
                continue
            try:
                feed.give(await asyncio.to_thread(step.fn))
            except Exception as exc:
                feed.fail(exc)
        return feed.value

    # -- the rules, as plans -----------------------------------------------------------------

    def _left(self, until: float | None) -> float | None:
        return None if until is None else until - self.clock.now()

    def _capped(self, seconds: float, until: float | None) -> float:
        left = self._left(until)
        return seconds if left is None else max(0.0, min(seconds, left))

    def _burst_spent(self, since: float) -> tuple[float, bool]:
        """Seconds since a burst of transient errors began; whether ``retry_deadline`` passed."""
        elapsed = self.clock.now() - since
        limit = self.policy.retry_deadline
        return elapsed, limit is not None and elapsed >= limit

    def _retry_until(self, since: float, until: float | None) -> float | None:
        """The earlier of the wait's deadline and the burst's ``retry_deadline``."""
        if self.policy.retry_deadline is None:
            return until
        burst_end = since + self.policy.retry_deadline
        return burst_end if until is None else min(until, burst_end)

    def _gave_up(self, what: str, errors: int, elapsed: float, exc: Exception) -> str:
        limit = self.policy.retry_deadline
        within = "" if limit is None else f" within {limit:g} s"
        return (
            f"{what}: gave up after {errors} tries over {elapsed:.1f} s of transient errors "
            f"(at most {self.policy.max_transient_errors + 1} tries{within}); last: {exc}"
        )

    def _ride_out(
        self,
        exc: TransientBackendError,
        errors: int,
        what: str,
        until: float | None,
        since: float | None = None,
    ) -> Plan[None]:
        """Sleep before the next attempt, or raise when the budget or the time is spent.

        ``since``: when the burst of errors began (default: now, a first error).
        """
        since = self.clock.now() if since is None else since
        left = self._left(until)
        elapsed, spent = self._burst_spent(since)
        if errors > self.policy.max_transient_errors or spent or (left is not None and left <= 0):
            # (from None: ``exc`` is in the message, already redacted; no chain to leak)
            raise TransientBackendError(self._gave_up(what, errors, elapsed, exc)) from None
        delay = self._capped(
            self.policy.retry_delay(errors, self.rng), self._retry_until(since, until)
        )
        self.log.warning(
            "Transient error (%s, %d/%d), retrying in %.1fs: %s",
            what,
            errors,
            self.policy.max_transient_errors,
            delay,
            exc,
        )
        yield _Sleep(delay)

    def _retrying(self, what: str, fn: Callable[[], T], until: float | None) -> Plan[T]:
        errors, since = 0, 0.0
        while True:
            try:
                return (yield _Call(fn))
            except TransientBackendError as exc:
                errors += 1
                since = self.clock.now() if errors == 1 else since
                yield from self._ride_out(exc, errors, what, until, since)

    def _call(self, what: str, fn: Callable[[], T]) -> Plan[T]:
        """``fn()``, riding out transient errors within the budget and the deadline."""
        return (yield from self._retrying(what, fn, self.deadline))

    def _submit(self, request: RunRequest) -> Plan[RunStatus]:
        """Submit; after a transient error re-submit only when no run with its name exists."""
        # The error may hide a run the service did create (response lost): the
        # deterministic name finds it, so riding out the error cannot make a duplicate.
        name = request.display_name
        errors, since = 0, 0.0
        while True:
            try:
                status = yield _Call(lambda: self.get_backend().submit(request))
            except TransientBackendError as exc:
                errors += 1
                since = self.clock.now() if errors == 1 else since
                yield from self._ride_out(exc, errors, f"submit run {name}", self.deadline, since)
                runs = yield from self._retrying(
                    f"find runs named {name}",
                    lambda: self.get_backend().find_runs(name, request.experiment),
                    self.deadline,
                )
                created = [r for r in runs if r.state.is_reattachable]
                if not created:
                    continue
                status = created[0]
                self.log.info("Run %s was created despite the error: %s", name, status.run_id)
            self.log.info(
                "Submitted run %s (%s), state %s: %s",
                status.run_id,
                name,
                status.state.value,
                status.url,
            )
            return status

    def _wait(
        self,
        run_id: str,
        *,
        run_name: str | None = None,
        run_url: str | None = None,
        last_state: RunState | None = None,
    ) -> Plan[RunEvent]:
        """Poll until the run ends, the deadline passes or the service refuses us.

        Starts with a pause: the caller has just read the run (``last_state``).
        """
        policy = self.policy
        interval = pause = policy.poll_interval
        errors, since = 0, 0.0
        while True:
            left = self._left(self.deadline)
            if left is not None and left <= 0:
                return RunEvent(
                    Outcome.TIMED_OUT,
                    run_id,
                    run_name,
                    run_url,
                    last_state,
                    f"run {run_id} did not finish before the deadline (state {_name(last_state)})",
                )
            yield _Sleep(self._capped(pause, self.deadline))
            try:
                status = yield _Call(lambda: self.get_backend().get_run(run_id))
            except TransientBackendError as exc:
                errors += 1
                since = self.clock.now() if errors == 1 else since
                elapsed, spent = self._burst_spent(since)
                if errors > policy.max_transient_errors or spent:
                    return RunEvent.from_error(
                        run_id,
                        exc,
                        run_name=run_name,
                        run_url=run_url,
                        state=last_state,
                        message=f"gave up on run {run_id} after {errors} consecutive transient "
                        f"errors over {elapsed:.1f} s (at most {policy.max_transient_errors} "
                        f"in a row{_within(policy.retry_deadline)}); last: {exc}",
                    )
                pause = self._capped(
                    policy.retry_delay(errors, self.rng), self._retry_until(since, None)
                )
                self.log.warning(
                    "Transient error reading run %s (%d/%d), retrying in %.1fs: %s",
                    run_id,
                    errors,
                    policy.max_transient_errors,
                    pause,
                    exc,
                )
                continue
            except BackendError as exc:  # 401/403, 404, anything else the service refused
                return RunEvent.from_error(
                    run_id, exc, run_name=run_name, run_url=run_url, state=last_state
                )
            recovered, errors = errors > 0, 0
            run_url = status.url or run_url
            run_name = status.display_name or run_name
            if status.state is not last_state or recovered:
                if status.state is not last_state:
                    # the URL ends the line: the log viewer links up to the next whitespace
                    self.log.info(
                        "Run %s (%s) is %s%s",
                        run_name or "",
                        run_id,
                        status.state.value,
                        f": {run_url}" if run_url else "",
                    )
                last_state = status.state
                # a new state, or the service answering again after errors: poll normally
                interval = policy.poll_interval
            else:
                interval = policy.next_interval(interval)
            if status.state.is_terminal:
                return RunEvent.ended(status)
            pause = interval

    def _settle_within(self, status: RunStatus, within: float) -> Plan[RunStatus]:
        """Poll a run until it is terminal or ``within`` seconds passed; its last status."""
        return (yield from self._settle(status, self.clock.now() + within))

    def _settle(self, status: RunStatus, until: float) -> Plan[RunStatus]:
        run_id = status.run_id
        pause = min(self.policy.poll_interval, SETTLE_POLL_SECONDS)
        while not status.state.is_terminal and self._left(until) > 0:
            yield _Sleep(self._capped(pause, until))
            status = yield from self._retrying(
                f"read run {run_id}", lambda: self.get_backend().get_run(run_id), until
            )
            pause = self.policy.next_interval(pause)
        return status

    def _cancel(
        self, run_id: str, *, reason: str, within: float | None = None
    ) -> Plan[RunStatus | None]:
        """Cancel and confirm (see the module doc); the last status, None if the run is gone.

        ``reason`` starts the log lines ("Task killed", ...); ``within`` defaults to the
        policy's ``cancel_within``.
        """
        # Bounded by its own clock, not the wait's deadline: a timed-out run is canceled too.
        until = self.clock.now() + (self.policy.cancel_within if within is None else within)
        backend = self.get_backend
        try:
            status = yield from self._retrying(
                f"read run {run_id}", lambda: backend().get_run(run_id), until
            )
        except RunNotFoundError:
            self.log.info("%s, but run %s no longer exists: nothing to cancel", reason, run_id)
            return None
        if status.state.is_terminal:
            self.log.info(
                "%s, but run %s already ended %s: not sending a cancel",
                reason,
                run_id,
                status.state.value,
            )
            return status
        self.log.info("%s; canceling run %s (%s)", reason, run_id, status.state.value)
        yield from self._retrying(f"cancel run {run_id}", lambda: backend().cancel(run_id), until)
        status = yield from self._retrying(
            f"read run {run_id}", lambda: backend().get_run(run_id), until
        )
        status = yield from self._settle(status, until)
        if status.state.is_terminal:
            self.log.info("Run %s is %s", run_id, status.state.value)
        else:
            self.log.warning(
                "Run %s is still %s after the cancel; the service may stop it later",
                run_id,
                status.state.value,
            )
        return status

    def read(self, run_id: str) -> RunStatus:
        """``get_run`` through :meth:`call`."""
        return self.call(f"read run {run_id}", lambda: self.get_backend().get_run(run_id))

    # -- the faces: each plan, run by the worker (sync) or the triggerer (async) ---------------
    call = _sync_face(_call)
    submit = _sync_face(_submit)
    wait = _sync_face(_wait)
    wait_async = _async_face(_wait)
    settle = _sync_face(_settle_within)
    cancel = _sync_face(_cancel)
    cancel_async = _async_face(_cancel)


def _name(state: RunState | None) -> str:
    return state.value if state is not None else "unknown"


def _within(seconds: float | None) -> str:
    return "" if seconds is None else f", within {seconds:g} s"
