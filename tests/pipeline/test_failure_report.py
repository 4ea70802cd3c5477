"""A failing step tells the bridge whether another try can help, and which input is at fault.

The report line is parsed by the bridge's own parser (``kfp_bridge/run_report.py`` and
``kfp_bridge/failures.py`` are standard library only; loaded here by path, since this is
the pipeline environment), so both sides of the format are checked together.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kfp_prediction import errors
from kfp_prediction.dates import TargetWindow
from kfp_prediction.model import load_verified_model
from kfp_prediction.report import PERMANENT_EXIT_CODE, PREFIX, failure_fields, report_line

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bridge():
    """kfp_bridge.run_report and kfp_bridge.failures: standard library only, so importable
    here from the repository (the package's __init__ imports nothing)."""
    sys.path.insert(0, str(REPO))
    try:
        run_report = importlib.import_module("kfp_bridge.run_report")
        failures = importlib.import_module("kfp_bridge.failures")
    finally:
        sys.path.remove(str(REPO))
    return run_report, failures


@pytest.mark.parametrize(
    ("error", "permanent", "input"),
    [
        (errors.TargetDateError("target_date '2026-13-45' is not a calendar date"), True,
         "target_date"),
        (errors.LookbackDaysError("lookback_days must be between 1 and 365, got 0"), True,
         "lookback_days"),
        (errors.WarehouseUnreachableError("warehouse location '/x' is not a directory"), True,
         "warehouse"),
        (errors.MissingSourceColumnError("users lacks registered_at"), True, "warehouse"),
        (errors.ModelUnreadableError("model_uri '/m.pkl' cannot be read"), True, "model_uri"),
        (errors.ModelDigestMismatchError("model '/m.pkl' has sha256 ab, expected cd"), True,
         "model_sha256"),
        (errors.ModelLoadError("model '/m.pkl' cannot be unpickled"), True, "model_uri"),
        (errors.NoSourceDataError("source table users has no rows in /x"), True, "warehouse"),
        (errors.LateSourceDataError("page_views has no rows for 2026-11-26 (JST)"), False,
         "warehouse"),
        (errors.SourceUnavailableError("BigQuery answered 503", input="warehouse"), False,
         "warehouse"),
        (MemoryError(), False, None),
    ],
)  # fmt: skip
def test_every_error_says_whether_it_is_permanent_and_names_its_input(
    bridge, error, permanent, input
):
    fields = failure_fields(error)
    assert (fields["permanent"], fields["input"]) == (permanent, input)
    _, failures = bridge
    failure = failures.parse_failure(
        f"Traceback ...\n{report_line('failure', 'predict', **fields)}"
    )
    assert (failure.permanent, failure.input, failure.error_type) == (
        permanent, input, type(error).__name__
    )  # fmt: skip


def test_the_format_and_the_exit_status_agree_with_the_bridge(bridge):
    run_report, failures = bridge
    assert PREFIX == run_report.PREFIX
    assert PERMANENT_EXIT_CODE == failures.PERMANENT_EXIT_CODE


STEP = """
import sys
from kfp_prediction.errors import ModelDigestMismatchError, SourceUnavailableError
from kfp_prediction.report import reporting_failures
error = {error}
with reporting_failures("predict"):
    raise error
"""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("ModelDigestMismatchError(\"model '/m.pkl' has sha256 ab, expected cd\")", 65),
        ('SourceUnavailableError("BigQuery answered 503", input="warehouse")', 1),
    ],
)
def test_a_failing_step_reports_then_exits_65_only_for_bad_input(bridge, error, status):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STEP.format(error=error))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr  # the error is in the log
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith(PREFIX)]
    _, failures = bridge
    assert failures.parse_failure(line).permanent is (status == 65)


def test_a_truncated_pickle_names_the_model_file(tmp_path: Path):
    model = tmp_path / "truncated.pkl"
    data = pickle.dumps({"weights": list(range(1000))})[:-40]
    model.write_bytes(data)
    import hashlib

    with pytest.raises(errors.ModelLoadError) as err:
        load_verified_model(str(model), hashlib.sha256(data).hexdigest())
    assert str(model) in str(err.value) and "truncated" in str(err.value)
    assert failure_fields(err.value)["permanent"] is True


def test_a_bad_lookback_is_named():
    with pytest.raises(errors.LookbackDaysError, match="lookback_days"):
        TargetWindow.build("2026-11-27", 0)
