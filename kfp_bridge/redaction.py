"""Service text without secrets: redact what a backend hands back before anyone prints it.

A service may echo the credentials it was sent (an error body quoting
``Authorization: Bearer ...``, a run error with a URL and its token). Airflow's
secrets masker hides registered secrets in the files it writes, but not
everywhere text travels: LocalExecutor also forwards task logs to the
scheduler's stdout unmasked, exceptions carry their causes, and an event
becomes ``next_kwargs`` in the database. So every outcome of a backend call
(:class:`~kfp_bridge.waiting.RunWaiter` is the one place they pass) is redacted
at once, with the secrets this process registered: the connection's password
and secret-like extras (the hook registers them) and each bearer token sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from kfp_bridge.backends.base import RunStatus

Redact = Callable[[str], str]


def airflow_redact(text: str) -> str:
    """Airflow's secrets masker applied to ``text`` (``***`` for every registered secret)."""
    from airflow.sdk.log import redact

    redacted = redact(text)
    return redacted if isinstance(redacted, str) else text


def redact_outcome(value: Any, redact: Redact) -> Any:
    """A backend call's result with the service's text redacted (run statuses, messages)."""
    if isinstance(value, RunStatus):
        if value.error:
            return dataclasses.replace(value, error=redact(value.error))
        return value
    if isinstance(value, list):
        return [redact_outcome(item, redact) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


def redact_error(error: BaseException, redact: Redact) -> BaseException:
    """The same exception with its message redacted; a cause that holds a secret is dropped.

    The cause (e.g. the HTTP client's exception, whose text is the whole response
    body) would be printed with the traceback; our message already says what it said.
    """
    error.args = tuple(redact(a) if isinstance(a, str) else a for a in error.args)
    for attribute in ("problem", "message"):
        value = getattr(error, attribute, None)
        if isinstance(value, str):
            with suppress(AttributeError):
                setattr(error, attribute, redact(value))
    for linked in (error.__cause__, error.__context__):
        if linked is not None and redact(str(linked)) != str(linked):
            error.__cause__ = None
            error.__context__ = None
            error.__suppress_context__ = True
            break
    return error
