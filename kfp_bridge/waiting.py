"""Waiting on a pipeline run: one policy, written once as async code.

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
- **deadline**: absolute (Unix time), counted from the run's creation (or its latest
  resume, which the operator passes as the start)
  (:meth:`WaitPolicy.deadline_for`), so a retry or a trigger moved to another
  triggerer keeps the same limit; no pause sleeps past it;
- **cancel and confirm**: read the run first (a finished run is never sent a
  cancel), ask the service to cancel it (transient errors retried), then poll
  until it has left the active states, all within ``cancel_within`` seconds.

The rules are written once, as coroutines of :class:`RunWaiter`
(:meth:`~RunWaiter.wait_async`, :meth:`~RunWaiter.cancel_async`, ...). The triggerer
awaits them, backend calls in a thread; the worker runs the same coroutines with
``asyncio.run`` (:meth:`~RunWaiter.wait`, :meth:`~RunWaiter.cancel`, ...), backend
calls in place. One implementation, so the two paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from kfp_bridge.backends.base import RunState, RunStatus, same_parameters
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
    :param timeout: seconds from the run's creation (or latest resume) after which the
        wait times out.
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

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def guarding(self) -> contextlib.AbstractContextManager[None]:
        """Around a blocking call the worker makes in place (the supervised clock watches it)."""
        return contextlib.nullcontext()


# Set while a worker runs a wait with ``asyncio.run``: backend calls are made in place
# (the loop is the worker's own) instead of in a thread, as the triggerer must.
_CALL_IN_PLACE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "kfp_bridge_call_in_place", default=False
)


def _run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a wait to its end from synchronous code (the worker).

    From inside a running event loop (``on_kill``, a signal handler that interrupts a
    wait of this same worker) ``asyncio.run`` is refused: the coroutine then runs on its
    own loop in a helper thread, and this thread blocks until it ends.
    """

    def run() -> T:
        _CALL_IN_PLACE.set(True)
        return asyncio.run(make())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return contextvars.copy_context().run(run)
    with ThreadPoolExecutor(1, thread_name_prefix="kfp-bridge-wait") as pool:
        return pool.submit(contextvars.copy_context().run, run).result()


class RunWaiter:
    """The waits on one backend under one policy.

    Each rule is one coroutine (``call_async``, ``wait_async``, ``cancel_async``, ...):
    the triggerer awaits it, its backend calls in a thread; the worker runs it to the
    end with ``asyncio.run`` through the synchronous method of the same name
    (``call``, ``read``, ``submit``, ``wait``, ``settle``, ``cancel``), its backend
    calls in place.

    :param get_backend: returns the backend; called inside each I/O step (in a
        thread in the triggerer), so a connection lookup never blocks an event loop.
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

    # -- I/O: the one place a backend is called and time passes ---------------------------

    async def _io(self, fn: Callable[[], T]) -> T:
        """``fn()`` (in a thread unless the worker runs this wait); its outcome redacted.

        Every outcome is redacted on its way in (:mod:`kfp_bridge.redaction`): what the
        rules log, return or raise never holds a secret the service echoed.
        """
        try:
            if _CALL_IN_PLACE.get():
                with self.clock.guarding():
                    result = fn()
            else:
                result = await asyncio.to_thread(fn)
        except Exception as exc:
            if self.redact:
                redact_error(exc, self.redact)
            raise
        return redact_outcome(result, self.redact) if self.redact else result

    async def _sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    # -- the rules -------------------------------------------------------------------------------

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

    async def _ride_out(
        self,
        exc: TransientBackendError,
        errors: int,
        what: str,
        until: float | None,
        since: float | None = None,
    ) -> None:
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
        await self._sleep(delay)

    async def _retrying(self, what: str, fn: Callable[[], T], until: float | None) -> T:
        errors, since = 0, 0.0
        while True:
            try:
                return await self._io(fn)
            except TransientBackendError as exc:
                errors += 1
                since = self.clock.now() if errors == 1 else since
                await self._ride_out(exc, errors, what, until, since)

    async def call_async(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, riding out transient errors within the budget and the deadline."""
        return await self._retrying(what, fn, self.deadline)

    async def submit_async(self, request: RunRequest) -> RunStatus:
        """Submit; after a transient error re-submit only when no run of this request exists.

        The error may hide a run the service did create (response lost): the
        deterministic name finds it, so riding out the error cannot make a duplicate.
        Only a run with the request's parameters is adopted (the newest): one under
        the name with other parameters was set aside by the caller and is not ours.
        """
        name = request.display_name
        errors, since = 0, 0.0
        while True:
            try:
                status = await self._io(lambda: self.get_backend().submit(request))
            except TransientBackendError as exc:
                errors += 1
                since = self.clock.now() if errors == 1 else since
                await self._ride_out(exc, errors, f"submit run {name}", self.deadline, since)
                runs = await self._retrying(
                    f"find runs named {name}",
                    lambda: self.get_backend().find_runs(name, request.experiment),
                    self.deadline,
                )
                created = [
                    r
                    for r in runs
                    if r.state.is_reattachable and same_parameters(request.parameters, r.parameters)
                ]
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

    async def wait_async(
        self,
        run_id: str,
        *,
        run_name: str | None = None,
        run_url: str | None = None,
        last_state: RunState | None = None,
    ) -> RunEvent:
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
            await self._sleep(self._capped(pause, self.deadline))
            try:
                status = await self._io(lambda: self.get_backend().get_run(run_id))
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

    async def settle_async(self, status: RunStatus, within: float) -> RunStatus:
        """Poll a run until it is terminal or ``within`` seconds passed; its last status."""
        return await self._settle(status, self.clock.now() + within)

    async def _settle(self, status: RunStatus, until: float) -> RunStatus:
        run_id = status.run_id
        pause = min(self.policy.poll_interval, SETTLE_POLL_SECONDS)
        while not status.state.is_terminal and self._left(until) > 0:
            await self._sleep(self._capped(pause, until))
            status = await self._retrying(
                f"read run {run_id}", lambda: self.get_backend().get_run(run_id), until
            )
            pause = self.policy.next_interval(pause)
        return status

    async def cancel_async(
        self, run_id: str, *, reason: str, within: float | None = None
    ) -> RunStatus | None:
        """Cancel and confirm (see the module doc); the last status, None if the run is gone.

        ``reason`` starts the log lines ("Task killed", ...); ``within`` defaults to the
        policy's ``cancel_within``.
        """
        # Bounded by its own clock, not the wait's deadline: a timed-out run is canceled too.
        until = self.clock.now() + (self.policy.cancel_within if within is None else within)
        backend = self.get_backend
        try:
            status = await self._retrying(
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
        await self._retrying(f"cancel run {run_id}", lambda: backend().cancel(run_id), until)
        status = await self._retrying(
            f"read run {run_id}", lambda: backend().get_run(run_id), until
        )
        status = await self._settle(status, until)
        if status.state.is_terminal:
            self.log.info("Run %s is %s", run_id, status.state.value)
        else:
            self.log.warning(
                "Run %s is still %s after the cancel; the service may stop it later",
                run_id,
                status.state.value,
            )
        return status

    # -- the worker: the same coroutines, run to their end ------------------------------------

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """:meth:`call_async`, in the worker."""
        return _run_blocking(lambda: self.call_async(what, fn))

    def read(self, run_id: str) -> RunStatus:
        """``get_run`` through :meth:`call`."""
        return self.call(f"read run {run_id}", lambda: self.get_backend().get_run(run_id))

    def submit(self, request: RunRequest) -> RunStatus:
        """:meth:`submit_async`, in the worker."""
        return _run_blocking(lambda: self.submit_async(request))

    def wait(self, run_id: str, **names: Any) -> RunEvent:
        """:meth:`wait_async` (same keyword arguments), in the worker."""
        return _run_blocking(lambda: self.wait_async(run_id, **names))

    def settle(self, status: RunStatus, within: float) -> RunStatus:
        """:meth:`settle_async`, in the worker."""
        return _run_blocking(lambda: self.settle_async(status, within))

    def cancel(self, run_id: str, *, reason: str, within: float | None = None) -> RunStatus | None:
        """:meth:`cancel_async`, in the worker."""
        return _run_blocking(lambda: self.cancel_async(run_id, reason=reason, within=within))


def _name(state: RunState | None) -> str:
    return state.value if state is not None else "unknown"


def _within(seconds: float | None) -> str:
    return "" if seconds is None else f", within {seconds:g} s"
