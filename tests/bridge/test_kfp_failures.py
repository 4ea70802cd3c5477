"""The rules that turn a FAILED KFP run's task details and pod logs into a message."""

from __future__ import annotations

from types import SimpleNamespace as NS

from kfp_bridge.backends.kfp_failures import (
    FailedTask,
    failed_tasks,
    log_endpoint_error,
    summary,
    tail,
)


def _task(name, state, *pods):
    return NS(display_name=name, state=state, child_tasks=[NS(pod_name=p) for p in pods])


def test_failed_component_tasks_without_root_executor_or_succeeded_driver():
    details = [
        _task("daily-prediction-x7k2p", "FAILED", "daily-prediction-x7k2p-111"),
        _task("predict-driver", "SUCCEEDED", "daily-prediction-x7k2p-222"),
        _task("predict", "FAILED", "daily-prediction-x7k2p-333"),
        _task("executor", "FAILED"),
        _task("features", "SUCCEEDED", "daily-prediction-x7k2p-444"),
    ]
    assert failed_tasks(details) == [FailedTask("predict", ("daily-prediction-x7k2p-333",))]
    assert failed_tasks([]) == []


def test_tail_is_bounded_in_lines_and_bytes_whatever_the_chunking():
    log = b"".join(f"line {i}\n".encode() for i in range(10_000))
    for size in (1, 7, 4096, len(log)):
        text = tail(log[i : i + size] for i in range(0, len(log), size))
        assert text.splitlines() == [f"line {i}" for i in range(9950, 10_000)]
    long_line = tail([b"x" * 100_000, b"\nlast\n"])
    assert len(long_line.encode()) <= 8192 and long_line.endswith("last")
    assert tail([b"\xff\xfe broken utf-8\n"]).endswith("broken utf-8")


def test_log_endpoint_error_body_is_recognised():
    body = b'{"error_message":"Failed to read logs from pod p: pods \\"p\\" not found"}'
    assert "not found" in log_endpoint_error(body)
    assert log_endpoint_error(b"I1127 launcher started\n") is None
    assert log_endpoint_error(b'{"some": "json log line"}') is None


def test_summary_names_the_task_and_the_last_log_line_or_why_not():
    url = "https://kfp.example/#/runs/details/r1"
    ok = FailedTask("predict", log_tail="Traceback ...\nValueError: model_sha256 mismatch\n")
    gone = FailedTask("features", log_unavailable="pod gone")
    assert summary([ok], url) == "task predict failed: ValueError: model_sha256 mismatch"
    assert summary([gone], url) == f"task features failed (log unavailable: pod gone); see {url}"
    assert summary([gone, ok], url) == (
        "task features failed (log unavailable: pod gone); "
        f"task predict failed: ValueError: model_sha256 mismatch; see {url}"
    )
    # the URL ends the line: Airflow's log viewer links up to the next whitespace
    assert summary([], url).endswith(f" {url}")
    assert summary([ok], url).count("http") == 0
