"""Permanent or retryable: the failure report a component prints, as each backend relays it."""

from __future__ import annotations

import json

import pytest

from kfp_bridge.backends import _local_runner
from kfp_bridge.failures import Failure, parse_failure
from kfp_bridge.run_report import PREFIX, RunReport, last_report, parse_reports, report_line

DIGEST = report_line(
    "failure",
    step="predict",
    permanent=True,
    error="ModelDigestMismatchError",
    input="model_sha256",
    message="model /m/model.pkl has sha256 ab12, expected cd34",
)


def test_report_lines_round_trip_and_malformed_ones_are_skipped():
    text = "\n".join(
        [
            "kfp-bridge-report: {not json",
            'kfp-bridge-report: ["a list"]',
            f"    \x1b[32m{report_line('result', step='predict', rows=3)}\x1b[0m",
            DIGEST,
        ]
    )
    assert parse_reports(text) == [
        RunReport("result", "predict", {"kind": "result", "step": "predict", "rows": 3}),
        RunReport("failure", "predict", json.loads(DIGEST[len(PREFIX) :])),
    ]
    assert last_report(text, "result").fields["rows"] == 3
    with pytest.raises(ValueError, match="more than 4096"):
        report_line("failure", message="x" * 5000)


def test_the_last_failure_report_wins_whatever_surrounds_it():
    retry = report_line("failure", permanent=False, error="WarehouseUnavailableError", message="1")
    text = "\n".join(
        [
            "Task 'predict' failed: ModelDigestMismatchError: ...",
            f"    {retry}",
            f"    \x1b[31m{DIGEST}\x1b[0m",  # kfp.local indents and colours task output
            "Traceback (most recent call last):",
            "ModelDigestMismatchError: model /m/model.pkl has sha256 ab12, expected cd34",
        ]
    )
    assert parse_failure(text) == Failure(
        permanent=True,
        error_type="ModelDigestMismatchError",
        message="model /m/model.pkl has sha256 ab12, expected cd34",
        input="model_sha256",
        step="predict",
    )


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "task predict failed: MemoryError",
        report_line("result", rows=1),
        "exited with a non-zero status of 1.",
        "exit code 650",
    ],
)
def test_no_report_means_retryable(text):
    failure = parse_failure(text)
    assert failure is None or not failure.permanent


@pytest.mark.parametrize(
    "text",
    [
        # Vertex: the job's task error carries the container's exit status, not its output
        "task predict: The replica workerpool0-0 exited with a non-zero status of 65. "
        "Termination reason: Error.",
        "predict: Error (exit code 65)",  # Argo's node message
    ],
)
def test_the_permanent_exit_status_counts_where_no_output_is_relayed(text):
    failure = parse_failure(text)
    assert failure is not None and failure.permanent
    assert "65" in failure.message


def test_the_runner_keeps_the_report_beside_the_traceback():
    assert _local_runner.REPORT_PREFIX == PREFIX  # the runner's copy of the prefix
    log = "\n".join(
        [
            "    starting predict",
            f"    {DIGEST}",
            "    Traceback (most recent call last):",
            '      File "x.py", line 1, in <module>',
            "    ModelDigestMismatchError: model /m/model.pkl has sha256 ab12, expected cd34",
            "Task 'predict' finished with status FAILURE",
        ]
    )
    error = _local_runner.failing_task_error(log, "RuntimeError: Pipeline failed")
    lines = error.splitlines()
    assert lines[0].startswith("Task 'predict' failed: ModelDigestMismatchError")
    assert lines[1] == DIGEST
    assert parse_failure(error).permanent
