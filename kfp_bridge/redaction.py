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

A process only knows the secrets of connections it read: the triggerer never
reads the Slack connection, yet a service may echo that webhook too. So text is
also stripped of shapes that are secrets whoever owns them (:data:`SECRET_SHAPES`:
Slack webhook paths and tokens, Google access tokens and API keys, JWTs,
``Authorization:``/``Cookie:`` values, ``password=``, ``user:password@``).

Airflow's masker is reached through its public ``airflow.sdk.log.redact`` (the
module providers use for ``mask_secret``), here and nowhere else in the package.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from kfp_bridge.backends.base import RunStatus

Redact = Callable[[str], str]

# Secrets by their shape; a pattern with a group keeps the group (the label) and masks the rest.
SECRET_SHAPES = [
    # header values as services echo them: "Authorization: Bearer x", "cookie: a=b; c=d"
    re.compile(
        r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:bearer|basic|token|negotiate)\s+)?)[^\s\"',;]+"
    ),
    re.compile(r"(?i)((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)[^\s\"';]+(?:;\s*[^\s\"';]+)*"),
    re.compile(r"(?i)\b((?:bearer|token|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+"),  # Slack webhook paths
    re.compile(r"\bya29\.[A-Za-z0-9._-]{10,}"),  # Google OAuth access tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"(?i)((?:password|passwd|secret|api[_-]?key|access[_-]?token)\s*[=:]\s*)\S+"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in URLs
]


def redact_shapes(text: str) -> str:
    """``text`` with every :data:`SECRET_SHAPES` match masked as ``***``."""
    for pattern in SECRET_SHAPES:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "***", text)
        else:
            text = pattern.sub("***", text)
    return text


def airflow_redact(text: str) -> str:
    """Airflow's secrets masker (every secret this process registered), then the shapes."""
    from airflow.sdk.log import redact

    redacted = redact(text)
    return redact_shapes(redacted if isinstance(redacted, str) else text)


def redact_data(value: Any) -> Any:
    """JSON-like data (a trigger event, run parameters) through Airflow's public ``redact``.

    Values under secret-looking keys (``password``, ``token``, ...) are hidden, as
    Airflow's REST API hides them; every string in it is then stripped of registered
    secrets and secret shapes (:func:`airflow_redact`).
    """
    from airflow.sdk.log import redact

    return _strings(redact(value), redact_shapes)


def _strings(value: Any, redact: Redact) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _strings(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strings(v, redact) for v in value]
    return value


def redact_outcome(value: Any, redact: Redact) -> Any:
    """A backend call's result with the service's text redacted (run statuses, messages)."""
    if isinstance(value, RunStatus):
        if value.error:
            value = dataclasses.replace(value, error=redact(value.error))
        if value.failure:
            failure = value.failure
            value = dataclasses.replace(
                value,
                failure=dataclasses.replace(
                    failure,
                    message=redact(failure.message),
                    input=redact(failure.input) if failure.input else failure.input,
                ),
            )
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
