"""Trigger that waits for a pipeline run in the triggerer, so no worker slot is held.

The waiting rules (polling with back-off, transient errors, the deadline) are
:mod:`kfp_bridge.waiting`'s, awaited here: backend calls go to a thread
(backends are synchronous and the connection lookup must not block the
triggerer's event loop). The trigger fires one event, a
:class:`~kfp_bridge.run_event.RunEvent` payload, when the run ends, the deadline
passes, or the service refuses us (401/403, 404).

``on_kill`` (Airflow 3.3) cancels the run when a user marks the deferred task
failed/success or clears it, unless the run already ended or ``cancel_on_kill``
is false (the name the Google provider's BigQuery and Dataproc triggers use). ``cleanup``
deliberately does not: it also runs when the triggerer restarts or hands the
trigger to another triggerer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from kfp_bridge.hooks.kfp import DEFAULT_GCP_CONN_ID
from kfp_bridge.redaction import airflow_redact, redact_data
from kfp_bridge.waiting import RunWaiter, WaitPolicy

if TYPE_CHECKING:
    from kfp_bridge.backends.base import Backend

# on_kill must finish inside the triggerer's own bound ([triggerer] on_kill_timeout, 30 s):
# cancel and confirm within 15 s; 20 s is the hard stop for a call that hangs.
ON_KILL_CONFIRM_SECONDS = 15.0
ON_KILL_CANCEL_TIMEOUT = 20.0


class KubeflowPipelineRunTrigger(BaseTrigger):
    """Wait for one pipeline run to reach a terminal state.

    :param kfp_conn_id: connection of type ``kfp`` that selects the backend.
    :param run_id: the run to watch.
    :param run_name: its display name (for logs and the event).
    :param run_url: its page (passed through to the event).
    :param deadline: Unix time after which the wait times out (absolute, so a
        trigger restarted on another triggerer keeps the same limit).
    :param policy: a :class:`~kfp_bridge.waiting.WaitPolicy` or its ``to_kwargs()``.
    :param gcp_conn_id: Google Cloud connection (``auth=google``, vertex backend).
    :param impersonation_chain: as given to the operator (a string or a list), so the
        triggerer builds the same identity from the same connections, never from
        credentials carried in the trigger's kwargs.
    :param cancel_on_kill: cancel the run when the user kills the deferred task.

    Event payload: :meth:`kfp_bridge.run_event.RunEvent.to_payload`.
    """

    def __init__(
        self,
        *,
        kfp_conn_id: str,
        run_id: str,
        run_name: str | None = None,
        run_url: str | None = None,
        deadline: float | None = None,
        policy: WaitPolicy | Mapping[str, Any] | None = None,
        gcp_conn_id: str = DEFAULT_GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.kfp_conn_id = kfp_conn_id
        self.run_id = run_id
        self.run_name = run_name
        self.run_url = run_url
        self.deadline = deadline
        self.policy = WaitPolicy.from_kwargs(policy)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = (
            impersonation_chain
            if impersonation_chain is None or isinstance(impersonation_chain, str)
            else list(impersonation_chain)
        )
        self.cancel_on_kill = cancel_on_kill
        self._backend: Backend | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kfp_conn_id": self.kfp_conn_id,
                "run_id": self.run_id,
                "run_name": self.run_name,
                "run_url": self.run_url,
                "deadline": self.deadline,
                "policy": self.policy.to_kwargs(),
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _get_backend(self) -> Backend:
        """Built on first use, inside the waiter's thread (the connection lookup blocks)."""
        if self._backend is None:
            from kfp_bridge.hooks.kfp import KubeflowPipelineHook

            self._backend = KubeflowPipelineHook(
                kfp_conn_id=self.kfp_conn_id,
                gcp_conn_id=self.gcp_conn_id,
                impersonation_chain=self.impersonation_chain,
            ).get_conn()
        return self._backend

    def _waiter(self) -> RunWaiter:
        return RunWaiter(
            self._get_backend,
            self.policy,
            deadline=self.deadline,
            log=self.log,
            redact=airflow_redact,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The operator read the run just before deferring, so the wait starts with a
        # pause. That also keeps an event from arriving while the worker is still
        # handing the task over to the triggerer, which Airflow 3.3 handles badly.
        event = await self._waiter().wait_async(
            self.run_id, run_name=self.run_name, run_url=self.run_url
        )
        # The payload is stored as the task's next_kwargs and logged by the worker and the
        # scheduler, none of which may know the connection: no secret leaves this process.
        yield TriggerEvent(redact_data(event.to_payload()))

    async def on_kill(self) -> None:
        """The user acted on the deferred task: stop the run so it does not go on unseen."""
        if not self.cancel_on_kill:
            self.log.info(
                "Task killed; run %s keeps running (cancel_on_kill=False): %s",
                self.run_id,
                self.run_url,
            )
            return
        await asyncio.wait_for(
            self._waiter().cancel_async(
                self.run_id,
                reason="Task killed by user action",
                within=ON_KILL_CONFIRM_SECONDS,
            ),
            timeout=ON_KILL_CANCEL_TIMEOUT,
        )
