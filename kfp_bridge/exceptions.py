"""Errors the bridge raises, so callers can tell retryable from final."""

from __future__ import annotations


class KfpBridgeError(Exception):
    """Base of every kfp_bridge error."""


class PipelineSpecError(KfpBridgeError, ValueError):
    """The compiled pipeline file is missing, unreadable or not a KFP v2 spec."""


class ParameterError(KfpBridgeError, ValueError):
    """Run parameters do not match the pipeline's inputs (names the parameter)."""


class BackendError(KfpBridgeError):
    """The execution service refused or failed a call; not worth retrying."""


class BackendConfigError(BackendError, ValueError):
    """A backend setting is missing or malformed; ``setting`` names it (e.g. ``ui_host``).

    Each backend validates its own settings once, when it is built; the hook
    turns ``setting`` into the connection field a person edits.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem


class AuthError(BackendError):
    """401/403 from the service: credentials are missing, expired or lack access."""


class RunNotFoundError(BackendError):
    """The service does not know the run (404): deleted, or never existed."""


class PipelineNotFoundError(BackendError):
    """The pipeline or pipeline version named for the run does not exist (checked before submit)."""


class BadInputError(BackendError):
    """The service refused the request's content (even as an HTTP 500): retries cannot fix it."""


class ApiVersionError(BackendError):
    """The service does not speak the API the bridge needs (a KFP 1.x server: no v2beta1)."""


class RetryRefusedError(BackendError):
    """The service will not retry (resume) this run: it has no retry, or refused this one.

    The caller submits a new run instead and says why (the message).
    """


class TransientBackendError(KfpBridgeError):
    """A failure worth retrying with backoff: 5xx, refused connection, timeout."""


class RunFailedError(KfpBridgeError):
    """The run ended FAILED, CANCELED or SKIPPED; carries the service's message."""
