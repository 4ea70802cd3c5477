"""Permanent or retryable: the marker line a failing component prints, as each backend relays it."""

from __future__ import annotations

import pytest

from kfp_bridge.backends import _local_runner
from kfp_bridge.failures import MARKER, Failure, parse_failure

DIGEST = (
    "kfp-bridge-failure: permanent ModelDigestMismatchError: model /m/model.pkl has sha256 "
    "ab12, expected cd34 (model_sha256)"
)


def test_the_last_marker_line_wins_whatever_surrounds_it():
    text = "\n".join(
        [
            "Task 'predict-and-write' failed: ModelDigestMismatchError: ...",
            "    kfp-bridge-failure: retryable WarehouseUnavailableError: first attempt",
            f"    \x1b[31m{DIGEST}\x1b[0m",  # kfp.local indents and colours task output
            "Traceback (most recent call last):",
            "ModelDigestMismatchError: model /m/model.pkl has sha256 ab12, expected cd34",
        ]
    )
    assert parse_failure(text) == Failure(
        "permanent",
        "ModelDigestMismatchError",
        "model /m/model.pkl has sha256 ab12, expected cd34 (model_sha256)",
    )


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "task predict-and-write failed: MemoryError",
        "kfp-bridge-failure: fatal X: not a kind we know",
        "exited with a non-zero status of 1.",
        "exit code 650",
    ],
)
def test_no_marker_means_retryable(text):
    assert parse_failure(text) is None


@pytest.mark.parametrize(
    "text",
    [
        # Vertex: the job's task error carries the container's exit status, not its output
        "task predict-and-write: The replica workerpool0-0 exited with a non-zero status of 65. "
        "Termination reason: Error.",
        "predict-and-write: Error (exit code 65)",  # Argo's node message
    ],
)
def test_the_permanent_exit_status_counts_where_no_output_is_relayed(text):
    failure = parse_failure(text)
    assert failure is not None and failure.permanent
    assert "65" in failure.message


def test_marker_round_trip_and_the_runner_agrees_on_the_text():
    failure = Failure("retryable", "WarehouseUnavailableError", "BigQuery answered 503")
    assert parse_failure(failure.line()) == failure
    assert _local_runner.FAILURE_MARKER == MARKER  # the runner keeps the line whole


def test_the_local_runner_puts_the_marker_beside_the_traceback():
    log = "\n".join(
        [
            "    starting predict",
            f"    {DIGEST}",
            "    Traceback (most recent call last):",
            '      File "x.py", line 1, in <module>',
            "    ModelDigestMismatchError: model /m/model.pkl has sha256 ab12, expected cd34",
            "Task 'predict-and-write' finished with status FAILURE",
        ]
    )
    error = _local_runner.failing_task_error(log, "RuntimeError: Pipeline failed")
    lines = error.splitlines()
    assert lines[0].startswith("Task 'predict-and-write' failed: ModelDigestMismatchError")
    assert lines[1] == DIGEST
    assert parse_failure(error).permanent
