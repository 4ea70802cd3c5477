"""The KFP-only variants: what they compile to, and what kfp.local 2.17 does with them.

The comparison in the README rests on these facts, so each is checked here against the
real kfp.local rather than assumed: ExitHandler and PipelineTaskFinalStatus run locally (with
the handler group, not the failed component, in the status), the time placeholders crash
a local run before any task, and fed explicitly they give the JST date.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kfp import compiler, components, dsl, local
from kfp_prediction.compile import COMPILED_DIR
from kfp_prediction.dates import jst_date_of_run_time
from kfp_prediction.errors import TargetDateError
from kfp_prediction.warehouse.local import partition_path
from pipeline_support import Model

from benchmarks.kfp_only.compile import KFP_ONLY_FILE, NAIVE_FILE
from benchmarks.kfp_only.local import main as local_main
from benchmarks.kfp_only.local import run_variant
from benchmarks.kfp_only.pipeline import (
    NAIVE_COMPILE_CLOCK,
    RETRIES,
    VARIANT_PARAMETERS,
    build_kfp_only_pipeline,
    build_naive_pipeline,
    notify_slack,
)

DATE_LIKE = re.compile(r"(19|20)\d\d-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
pytestmark = [
    # The comparison's KFP-only pipelines (make compare), run under kfp.local: not the inner loop.
    pytest.mark.e2e,
    # kfp.local says that resource requests are cluster settings; they are.
    pytest.mark.filterwarnings("ignore:.*no effect in the current local runner"),
]


def spec_of(path: Path) -> dict:
    return next(yaml.safe_load_all(path.read_text()))


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[str]]]:
    """A Slack incoming webhook on loopback: (url, texts received)."""
    texts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            texts.append(json.loads(body)["text"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/test", texts
    server.shutdown()
    server.server_close()


# -- compiled files ---------------------------------------------------------------------------
def _run(pipeline: Path, tmp_path: Path, url: str, warehouse: Path, model: Model, **times: str):
    """Run a compiled variant on this warehouse and model, posting to the test's webhook."""
    return run_variant(
        pipeline,
        pipeline_root=tmp_path / "root",
        slack_webhook_url=url,
        warehouse=str(warehouse),
        model_uri=model.uri,
        model_sha256=model.sha256,
        **times,
    )


def test_placeholder_variant_compiles_no_date_and_whole_placeholders() -> None:
    path = COMPILED_DIR / KFP_ONLY_FILE
    assert not DATE_LIKE.search(path.read_text())
    spec = spec_of(path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {p.name for p in VARIANT_PARAMETERS}
    assert "target_date" not in params
    assert "defaultValue" not in params["slack_webhook_url"]  # required, a run parameter
    root = spec["root"]["dag"]["tasks"]
    exit_task = root["notify-slack"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["inputs"]["parameters"]["status"]["taskFinalStatus"] == {
        "producerTask": "exit-handler-1"
    }
    body = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    date_inputs = body["jst-target-date"]["inputs"]["parameters"]
    # KFP resolves a placeholder only when it is the whole constant (driver resolve.go).
    assert date_inputs["scheduled_time_utc"]["runtimeValue"]["constant"] == (
        dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER
    )
    assert date_inputs["create_time_utc"]["runtimeValue"]["constant"] == (
        dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER
    )
    assert body["features"]["inputs"]["parameters"]["target_date"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "jst-target-date",
    }
    for step in ("features", "predict"):
        assert body[step]["retryPolicy"]["maxRetryCount"] == RETRIES
        assert body[step]["retryPolicy"]["backoffDuration"] == "300s"


def test_naive_variant_holds_its_compile_day(tmp_path: Path) -> None:
    compiled_day = NAIVE_COMPILE_CLOCK.strftime("%Y-%m-%d")
    spec = spec_of(COMPILED_DIR / NAIVE_FILE)
    body = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    for step in ("features", "predict"):
        date = body[step]["inputs"]["parameters"]["target_date"]["runtimeValue"]["constant"]
        assert date == compiled_day
    assert "compile" in spec["pipelineInfo"]["description"]
    # The trap itself: whatever now() says while the compiler runs becomes the date.
    path = tmp_path / "naive.yaml"
    later = build_naive_pipeline(now=lambda: dt.datetime(2031, 2, 3, 6, 0))
    compiler.Compiler().compile(later, str(path))
    assert "'2031-02-03'" in path.read_text() and compiled_day not in path.read_text()


# -- kfp.local --------------------------------------------------------------------------------
def test_kfp_local_cannot_resolve_the_time_placeholders(tmp_path: Path, webhook) -> None:
    """kfp.local 2.17: an IndexError before any task runs; the exit task never posts."""
    url, texts = webhook
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    pipeline = components.load_component_from_file(str(COMPILED_DIR / KFP_ONLY_FILE))
    with pytest.raises(IndexError):
        pipeline(slack_webhook_url=url, model_sha256="0" * 64)
    assert texts == []
    code = local_main(["--pipeline", str(COMPILED_DIR / KFP_ONLY_FILE),
                       "--slack-webhook-url", url, "--model-sha256", "0" * 64])  # fmt: skip
    assert code == 2  # the local runner says so instead of crashing


def test_fed_scheduled_time_gives_the_jst_date_and_one_success_message(
    warehouse: Path, model: Model, tmp_path: Path, webhook
) -> None:
    url, texts = webhook
    slot = "2026-11-26T21:00:00Z"  # the 06:00 JST slot of 2026-11-27
    pipeline = COMPILED_DIR / KFP_ONLY_FILE
    result = _run(pipeline, tmp_path, url, warehouse, model, scheduled_time=slot)
    assert result["state"] == "SUCCEEDED"
    assert partition_path(warehouse, dt.date(2026, 11, 27)).is_file()
    assert sorted(p.name for p in (warehouse / "predictions").iterdir()) == ["2026-11-27.parquet"]
    (text,) = texts
    assert text.splitlines()[0] == ":large_green_circle: *daily-prediction-kfp-only* SUCCEEDED"
    assert "Target date (JST): 2026-11-27" in text


def test_failure_posts_once_at_exit_without_the_component_or_the_try(
    warehouse: Path, model: Model, tmp_path: Path, webhook, capfd: pytest.CaptureFixture
) -> None:
    url, texts = webhook
    fast = tmp_path / KFP_ONLY_FILE
    compiler.Compiler().compile(build_kfp_only_pipeline(retry_backoff_seconds=1), str(fast))
    slot = "2026-11-28T21:00:00Z"  # target 2026-11-29: no page views on 11-28
    result = _run(fast, tmp_path, url, warehouse, model, scheduled_time=slot)
    assert result["state"] == "FAILED"
    assert "'features' inside 'exit-handler-1'" in result["error"]
    log = ANSI.sub("", capfd.readouterr().out)
    assert log.count("Executing task 'features'") == RETRIES + 1  # set_retry works locally
    assert "LateSourceDataError" in log
    (text,) = texts  # one message for the whole run, not one per try
    assert text.splitlines()[0] == ":red_circle: *daily-prediction-kfp-only* FAILED"
    assert "Target date (JST): 2026-11-29" in text
    # All an exit task learns: the ExitHandler group failed.
    assert "Error: Task exit-handler-1 failed." in text
    assert "features" not in text and "try" not in text.lower()
    assert not (warehouse / "predictions").exists()


def test_naive_variant_writes_the_compile_day_whatever_the_day(
    warehouse: Path, model: Model, tmp_path: Path, webhook
) -> None:
    url, texts = webhook
    result = _run(COMPILED_DIR / NAIVE_FILE, tmp_path, url, warehouse, model)
    assert result["state"] == "SUCCEEDED" and result["fed"] == {}
    compiled_day = NAIVE_COMPILE_CLOCK.date()
    assert [p.name for p in (warehouse / "predictions").iterdir()] == [
        partition_path(warehouse, compiled_day).name
    ]
    (text,) = texts
    assert f"Target date (JST): {compiled_day}" in text


# -- the small pieces -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scheduled", "created", "date"),
    [
        ("2026-11-26T21:00:00Z", "", "2026-11-27"),  # 06:00 JST
        ("2026-11-26T14:59:59Z", "", "2026-11-26"),  # 23:59:59 JST
        ("", "2026-11-26T15:00:00Z", "2026-11-27"),  # backend 2.16: empty schedule time
        ("{{$.pipeline_job_schedule_time_utc}}", "2026-11-26T15:00:00+00:00", "2026-11-27"),
    ],
)
def test_jst_date_of_run_time(scheduled: str, created: str, date: str) -> None:
    assert jst_date_of_run_time(scheduled, created) == date


@pytest.mark.parametrize("values", [("", ""), ("2026-11-26", ""), ("{{$.x}}", "2026-11-26T21:00")])
def test_unresolved_or_zoneless_run_times_are_refused(values: tuple[str, str]) -> None:
    with pytest.raises(TargetDateError, match=r"2\.17\.0"):
        jst_date_of_run_time(*values)


def _exit_task(url: str, state: str, *, kfp_ui_host: str = "", target_date: str = "2026-11-27",
               times: tuple[str, str] = ("", "")) -> None:  # fmt: skip
    """The exit task's body, called as KFP calls it (the status as KFP fills it)."""
    status = SimpleNamespace(state=state, pipeline_task_name="exit-handler-1", error_message="")
    notify_slack(status, url, "p", "r", "u", kfp_ui_host, target_date, *times)


def test_an_unresolved_run_time_is_said_in_the_message(webhook) -> None:
    url, texts = webhook
    _exit_task(url, "SUCCEEDED", target_date="", times=("{{$.x}}", "2026-11-26T21:00"))
    (text,) = texts
    assert "Target date (JST): unknown (" in text


def test_message_reads_kfp_backend_states_too(webhook) -> None:
    # KFP backend 2.17: MLMD state COMPLETE and no error text (resolve.go TODO).
    url, texts = webhook
    _exit_task(url, "COMPLETE", kfp_ui_host="https://kfp/")
    _exit_task(url, "FAILED")
    ok, failed = texts
    assert ok.startswith(":large_green_circle: *p* COMPLETE") and "Error" not in ok
    assert ok.endswith("Run link: https://kfp/#/runs/details/u")
    assert "Error: (none given by KFP)" in failed and "Run link" not in failed


def test_a_failing_post_is_reported_not_raised(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _exit_task(f"http://127.0.0.1:{port}/services/T/B/secret-token", "SUCCEEDED")
    out = capsys.readouterr().out
    assert "Slack notification failed" in out and "secret-token" not in out
