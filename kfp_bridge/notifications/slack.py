"""Slack messages for failed pipeline tasks: one per failed task try, one per failed DAG run.

Built on the Slack provider's ``SlackWebhookNotifier`` (the webhook URL and the
HTTP call are the provider's), created when a message is sent: importing the
provider pulls in slack_sdk and aiohttp (about 0.6 s), which would otherwise be
paid on every parse of every DAG file that attaches these callbacks.

What this adds: the message (try count, scrubbed first
line of the error, the Airflow log link and the Kubeflow run link), and the
rule that notification never changes a task's outcome: a missing connection is
one log line, a webhook that errors or hangs (bounded by ``timeout``) is one
warning, and the task's own error stays where Airflow put it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

from kfp_bridge import try_history
from kfp_bridge.links.kfp import RUN_URL_XCOM_KEY
from kfp_bridge.notifications import reported_tries
from kfp_bridge.redaction import airflow_redact

DEFAULT_CONN_ID = "slack_default"
DEFAULT_TIMEOUT = 10
MAX_ERROR_CHARS = 300


def scrub(text: str) -> str:
    """Remove registered secrets and secret shapes from ``text`` (one rule: redaction.py)."""
    return airflow_redact(text)


def first_error_line(error: BaseException | str | None) -> str:
    """First non-empty line of an error, scrubbed and shortened, with its type name."""
    if error is None:
        return "(no error recorded)"
    if isinstance(error, BaseException):
        message = str(error).strip()
        kind = type(error).__name__
        text = f"{kind}: {message}" if message else kind
    else:
        text = str(error)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(empty error)")
    line = scrub(line)
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 1] + "…"
    return line


def _register_kfp_secrets(context: Any) -> None:
    """Mask the secrets of the task's (or DAG's) kfp connections in this process.

    A callback may run where the connection was never read (the dag-processor, a
    resumed worker), and the error it reports may be the service's text.
    """
    tasks = [context.get("task")]
    dag = context.get("dag")
    tasks += list(getattr(dag, "tasks", None) or [])
    conn_ids = {getattr(t, "kfp_conn_id", None) for t in tasks} - {None}
    if not conn_ids:
        return
    from kfp_bridge.hooks.kfp import KubeflowPipelineHook

    for conn_id in sorted(conn_ids):
        try:
            KubeflowPipelineHook(kfp_conn_id=conn_id).register_secrets()
        except Exception:  # a missing connection must not stop the message
            continue


def _kubeflow_run_url(ti: Any) -> str | None:
    try:
        url = ti.xcom_pull(task_ids=ti.task_id, key=RUN_URL_XCOM_KEY)
    except Exception:  # the link is a courtesy; the message goes out without it
        return None
    return url if isinstance(url, str) and url else None


def _base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")


class _SafeSlackNotifier(BaseNotifier):
    """Posts ``build_text(context)`` through ``SlackWebhookNotifier``; failures are logged."""

    template_fields = ("slack_webhook_conn_id",)

    def __init__(
        self,
        *,
        slack_webhook_conn_id: str = DEFAULT_CONN_ID,
        timeout: int = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.slack_webhook_conn_id = slack_webhook_conn_id
        self.timeout = timeout

    def build_text(self, context: Any) -> str:
        raise NotImplementedError

    def describe_run(self, dag_run: Any) -> list[str]:
        """Lines about the DAG run that the application adds (none here).

        Override in a subclass for what your DAGs mean by a run, such as the
        business date it is for; ``dag_run`` is a DAG run, or the JSON mapping
        deadline callbacks get. An error here drops the message's build, so keep
        it total: return a fallback rather than raise.
        """
        return []

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # `airflow dags test` (3.3.2) hands DAG callbacks a SerializedDAG, which has no
        # Jinja environment; the base class would crash before sending anything.
        if jinja_env is None and not hasattr(context.get("dag"), "get_template_env"):
            jinja_env = self.get_template_env(dag=None)
        super().render_template_fields(context, jinja_env=jinja_env)

    def _connection_configured(self) -> bool:
        from airflow.providers.common.compat.sdk import BaseHook

        try:
            BaseHook.get_connection(self.slack_webhook_conn_id)
        except Exception:
            self.log.info(
                "Slack connection %r is not configured; no Slack message sent.",
                self.slack_webhook_conn_id,
            )
            return False
        return True

    def _webhook_notifier(self, text: str) -> Any:
        # The text is passed as built, never rendered as a template: an error message may
        # contain "{{" and must reach Slack as written.
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(
            slack_webhook_conn_id=self.slack_webhook_conn_id, text=text, timeout=self.timeout
        )

    def _prepare(self, context: Any) -> Any:
        """The provider's notifier holding the message, or None when nothing is to be sent."""
        _register_kfp_secrets(context)
        try:
            text = self.build_text(context)
        except Exception:
            self.log.exception("Could not build the Slack message; nothing sent.")
            return None
        if not self._connection_configured():
            return None
        return self._webhook_notifier(text)

    def _failed(self, err: Exception) -> None:
        self.log.warning(
            "Slack notification via %r failed (the task's outcome is unchanged): %s",
            self.slack_webhook_conn_id,
            scrub(str(err)),
        )

    def notify(self, context: Any) -> None:
        webhook = self._prepare(context)
        if webhook is None:
            return
        try:
            webhook.notify(context)
        except Exception as err:
            self._failed(err)
        else:
            self.log.info("Slack notification sent via %r.", self.slack_webhook_conn_id)


# Said when a try failed without an exception: only the scheduler saw it end.
NO_EXCEPTION = (
    "none from the task: its process stopped without reporting (killed, out of memory, or "
    "its heartbeat was lost), so the scheduler failed this try; see the Airflow log"
)


class KfpSlackNotifier(_SafeSlackNotifier):
    """Task-failure message: one per failed try, whichever Airflow path reports it.

    Attach one with ``will_retry=True`` as ``on_retry_callback`` and one with
    ``will_retry=False`` as ``on_failure_callback``: Airflow picks the callback by
    whether the try will be retried, also when a worker died and the dag-processor
    runs it (the task instance's state is not set yet there). ``will_retry=None``
    reads the state, for callbacks the task runner calls. A try reported already
    (the scheduler's heartbeat-timeout and executor-event paths both report a dead
    worker's try) is not posted again (:mod:`kfp_bridge.notifications.reported_tries`).
    """

    def __init__(self, *, will_retry: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.will_retry = will_retry

    def _prepare(self, context: Any) -> Any:
        webhook = super()._prepare(context)
        ti = context.get("ti") or context.get("task_instance")
        if webhook is not None and ti is not None and not reported_tries.claim(ti):
            self.log.info(
                "Try %s of %s.%s was reported already; no second Slack message.",
                getattr(ti, "try_number", "?"),
                getattr(ti, "dag_id", "?"),
                getattr(ti, "task_id", "?"),
            )
            return None
        return webhook

    def build_text(self, context: Any) -> str:
        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(ti, "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        try_number = getattr(ti, "try_number", None)
        max_tries = getattr(ti, "max_tries", None)
        task = context.get("task")
        if max_tries is None and task is not None:
            max_tries = getattr(task, "retries", 0)
        total_tries = (max_tries or 0) + 1
        will_retry = self.will_retry
        if will_retry is None:  # the task runner sets the state before the callbacks
            will_retry = str(getattr(ti, "state", "")).lower().endswith("up_for_retry")
        outcome = "failed, will retry" if will_retry else "failed"
        exception = context.get("exception")
        error = first_error_line(exception) if exception is not None else NO_EXCEPTION
        lines = [
            f":red_circle: *{dag_id}.{task_id}* {outcome} "
            f"(try {try_number if try_number is not None else '?'} of {total_tries})",
            *self.describe_run(context.get("dag_run")),
            f"Run: {context.get('run_id') or getattr(ti, 'run_id', '?')}",
            f"Error: {error}",
        ]
        log_url = getattr(ti, "log_url", None)
        if log_url:
            lines.append(f"Airflow log: {log_url}")
        run_url = _kubeflow_run_url(ti) if ti is not None else None
        if run_url:
            lines.append(f"Kubeflow run: {run_url}")
        history = self._try_history(context)
        if history and isinstance(try_number, int):
            lines += self.describe_tries(history, try_number, total_tries)
        return "\n".join(lines)

    def _try_history(self, context: Any) -> list[try_history.TryEntry]:
        """The task's try history (:mod:`kfp_bridge.try_history`), as the operator holds it.

        The callback of a try that ended in the task's own process runs there, after the
        try's end was recorded on the operator. The task state store is not read: by then
        Airflow has given the next try a new task instance id, which the store answers,
        and the dag-processor (which runs the callbacks of a worker that died) does not
        serve state-store requests at all (Airflow 3.3 refuses ``GetTaskStateStore``
        there), so asking would only stall the message.
        """
        held = getattr(context.get("task"), "try_history", None)
        return list(held) if isinstance(held, list) else []

    def describe_tries(
        self, history: list[try_history.TryEntry], try_number: int, total_tries: int
    ) -> list[str]:
        """Lines from the task's try history (:mod:`kfp_bridge.try_history`).

        Default: what this try did (``try 2/3, resumed run R after FAILED at step
        predict``), then one line per try so far, this one included. Override to say
        it another way; keep it total, as :meth:`describe_run`.
        """
        lines = []
        now = try_history.summary(history, try_number, total_tries)
        if now:
            lines.append(f"This try: {now}")
        tries = [e for e in history if e.get("try_number", 0) <= try_number]
        if tries:
            lines.append("Tries:")
            lines += [f"- {try_history.line(e)}" for e in tries]
        return lines


class KfpSlackRunSummaryNotifier(_SafeSlackNotifier):
    """DAG-run-failure summary; use as the DAG's ``on_failure_callback``."""

    def build_text(self, context: Any) -> str:
        dag = context.get("dag")
        dag_id = getattr(dag, "dag_id", "?")
        run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?")
        ti = context.get("ti") or context.get("task_instance")
        lines = [
            f":rotating_light: *{dag_id}* run failed",
            *self.describe_run(context.get("dag_run")),
            f"Run: {run_id}",
            f"Reason: {scrub(str(context.get('reason') or 'task failure'))}",
        ]
        if ti is not None:
            lines.append(f"Last task: {getattr(ti, 'task_id', '?')}")
            run_url = _kubeflow_run_url(ti)
            if run_url:
                lines.append(f"Kubeflow run: {run_url}")
        lines.append(f"Airflow run: {_base_url()}/dags/{dag_id}/runs/{quote(str(run_id), safe='')}")
        return "\n".join(lines)


class KfpSlackDeadlineNotifier(_SafeSlackNotifier):
    """Deadline-miss message, run by the triggerer through an ``AsyncCallback``.

    Airflow 3.3 hands deadline callbacks a small context: the DAG run as JSON
    (``dag_run``) and the deadline (``deadline``), not a task instance.
    """

    def build_text(self, context: Any) -> str:
        dag_run = context.get("dag_run") or {}
        dag_id = dag_run.get("dag_id", "?")
        run_id = dag_run.get("dag_run_id") or dag_run.get("run_id") or "?"
        deadline = (context.get("deadline") or {}).get("deadline_time")
        return "\n".join(
            [
                f":hourglass: *{dag_id}* not finished by its deadline ({deadline or '?'})",
                *self.describe_run(dag_run),
                f"Run: {run_id} (state: {dag_run.get('state', '?')})",
                f"Airflow run: {_base_url()}/dags/{dag_id}/runs/{quote(str(run_id), safe='')}",
            ]
        )

    async def async_notify(self, context: Any) -> None:
        webhook = self._prepare(context)
        if webhook is None:
            return
        try:
            await webhook.async_notify(context)
        except Exception as err:
            self._failed(err)
        else:
            self.log.info("Slack notification sent via %r.", self.slack_webhook_conn_id)
