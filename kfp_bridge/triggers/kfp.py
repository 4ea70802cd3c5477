"""Trigger that waits for a pipeline run in the triggerer, so no worker slot is held.

Polls ``Backend.get_run`` in a thread (backends are synchronous and the
connection lookup must not block the triggerer's event loop), backs off while
the state does not change, retries transient API errors with jitter within a
budget, and fires one event when the run ends, the deadline passes, or the
service refuses us (401/403, 404).

``on_kill`` (Airflow 3.3) cancels the run when a user marks the deferred task
failed/success or clears it. ``cleanup`` deliberately does not: it also runs
when the triggerer restarts or hands the trigger to another triggerer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from kfp_bridge.exceptions import AuthError, BackendError, RunNotFoundError, TransientBackendError
from kfp_bridge.retry import backoff_delay

if TYPE_CHECKING:
    from kfp_bridge.backends.base import Backend, RunStatus

# on_kill must finish inside the triggerer's own bound ([triggerer] on_kill_timeout, 30 s).
ON_KILL_CANCEL_TIMEOUT = 20.0


class KubeflowPipelineRunTrigger(BaseTrigger):
    """Wait for one pipeline run to reach a terminal state.

    :param kfp_conn_id: connection of type ``kfp`` that selects the backend.
    :param run_id: the run to watch.
    :param run_name: its display name (for logs and the event).
    :param run_url: its page (passed through to the event).
    :param poll_interval: seconds between polls at first.
    :param max_poll_interval: polls slow down (x1.5) up to this while the state is unchanged.
    :param deadline: Unix time after which a ``timeout`` event fires (absolute, so a
        trigger restarted on another triggerer keeps the same limit).
    :param max_transient_errors: consecutive transient errors tolerated before giving up.

    Event payload: ``status`` ("success", "failed", "timeout", "error"), ``run_id``,
    ``run_name``, ``run_url``, ``state``, ``message`` and, for "error", ``error_type``.
    """

    def __init__(
        self,
        *,
        kfp_conn_id: str,
        run_id: str,
        run_name: str | None = None,
        run_url: str | None = None,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        deadline: float | None = None,
        max_transient_errors: int = 10,
    ) -> None:
        super().__init__()
        self.kfp_conn_id = kfp_conn_id
        self.run_id = run_id
        self.run_name = run_name
        self.run_url = run_url
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.deadline = deadline
        self.max_transient_errors = int(max_transient_errors)
        self._backend: Backend | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kfp_conn_id": self.kfp_conn_id,
                "run_id": self.run_id,
                "run_name": self.run_name,
                "run_url": self.run_url,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    # -- I/O, always in a thread ----------------------------------------------------------

    def _get_backend(self) -> Backend:
        if self._backend is None:
            from kfp_bridge.hooks.kfp import KubeflowPipelineHook

            self._backend = KubeflowPipelineHook(kfp_conn_id=self.kfp_conn_id).get_backend()
        return self._backend

    def _poll(self) -> RunStatus:
        return self._get_backend().get_run(self.run_id)

    def _cancel(self) -> None:
        self._get_backend().cancel(self.run_id)

    # -- trigger ---------------------------------------------------------------------------

    def _event(self, status: str, message: str, state: str | None = None, **extra: Any):
        payload = {
            "status": status,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "run_url": self.run_url,
            "state": state,
            "message": message,
            **extra,
        }
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        interval = self.poll_interval
        last_state: str | None = None
        transient_errors = 0
        # The operator polled the run just before deferring: the first poll waits one
        # interval. It also keeps an event from arriving while the worker is still
        # handing the task over to the triggerer, which Airflow 3.3 handles badly.
        await self._sleep_until_deadline(self.poll_interval)
        while True:
            try:
                status = await asyncio.to_thread(self._poll)
            except TransientBackendError as exc:
                transient_errors += 1
                if transient_errors > self.max_transient_errors:
                    yield self._event(
                        "error",
                        f"gave up on run {self.run_id} after {transient_errors} consecutive "
                        f"transient errors; last: {exc}",
                        last_state,
                        error_type="TransientBackendError",
                    )
                    return
                delay = backoff_delay(transient_errors, self.poll_interval, self.max_poll_interval)
                self.log.warning(
                    "Transient error polling run %s (%d/%d), retrying in %.1fs: %s",
                    self.run_id,
                    transient_errors,
                    self.max_transient_errors,
                    delay,
                    exc,
                )
                await self._sleep_until_deadline(delay)
                if self._deadline_passed():
                    yield self._timeout_event(last_state)
                    return
                continue
            except (AuthError, RunNotFoundError) as exc:
                yield self._event("error", str(exc), last_state, error_type=type(exc).__name__)
                return
            except BackendError as exc:
                yield self._event("error", str(exc), last_state, error_type=type(exc).__name__)
                return
            transient_errors = 0
            state = status.state.value
            if status.url:
                self.run_url = status.url
            if state != last_state:
                self.log.info(
                    "Run %s (%s) is %s%s",
                    self.run_name or "",
                    self.run_id,
                    state,
                    f" ({self.run_url})" if self.run_url else "",
                )
                last_state = state
                interval = self.poll_interval
            else:
                interval = min(interval * 1.5, self.max_poll_interval)
            if status.state.is_terminal:
                if status.state.is_success:
                    yield self._event("success", f"run {self.run_id} succeeded", state)
                else:
                    # the message names the state and carries the run's own error
                    message = f"run {self.run_id} ended {state}"
                    if status.error:
                        message = f"{message}: {status.error}"
                    yield self._event("failed", message, state, error=status.error)
                return
            if self._deadline_passed():
                yield self._timeout_event(state)
                return
            await self._sleep_until_deadline(interval)

    def _deadline_passed(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    async def _sleep_until_deadline(self, seconds: float) -> None:
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - time.time()))
        await asyncio.sleep(seconds)

    def _timeout_event(self, state: str | None) -> TriggerEvent:
        return self._event(
            "timeout",
            f"run {self.run_id} did not finish before the deadline (state {state})",
            state,
        )

    async def on_kill(self) -> None:
        """The user acted on the deferred task: stop the run so it does not go on unseen."""
        self.log.info(
            "Task killed by user action; canceling run %s (%s)", self.run_id, self.run_name
        )
        await asyncio.wait_for(self._cancel_retrying(), timeout=ON_KILL_CANCEL_TIMEOUT)
        self.log.info("Cancel requested for run %s", self.run_id)

    async def _cancel_retrying(self) -> None:
        for attempt in range(1, 4):
            try:
                await asyncio.to_thread(self._cancel)
                return
            except TransientBackendError as exc:
                if attempt == 3:
                    raise
                self.log.warning("Transient error canceling run %s, retrying: %s", self.run_id, exc)
                await asyncio.sleep(attempt * random.uniform(0.5, 1.5))
