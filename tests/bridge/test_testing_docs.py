"""The ``kfp_bridge.testing`` docs page, followed literally: its test file runs as a user's.

The page's ``python`` block that starts with ``# test_NAME.py`` is written to an empty
folder and run by a fresh ``pytest``, which finds the ``kfp_api`` fixture only through the
installed plugin (the ``pytest11`` entry point), as in a user's CI.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"^```python\n(# (test_\w+\.py)\n.*?)^```$", re.M | re.S)


def _test_files() -> dict[str, str]:
    return {name: code for code, name in BLOCK.findall(PAGE.read_text())}


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_page_holds_a_test_file():
    files = _test_files()
    assert list(files) == ["test_my_kfp_dag.py"]
    assert "def test_" in files["test_my_kfp_dag.py"]


def test_the_pages_test_file_passes_with_the_installed_plugin(tmp_path):
    [(name, code)] = _test_files().items()
    (tmp_path / name).write_text(code)
    result = _pytest(tmp_path, name)
    tests = code.count("\ndef test_")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tests} passed" in result.stdout, result.stdout


def test_an_unknown_marker_option_is_named(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.kfp_api(port=80)\ndef test_x(kfp_api):\n    pass\n"
    )
    result = _pytest(tmp_path, "test_x.py")
    assert result.returncode != 0
    assert "kfp_api marker: unknown option(s) ['port']" in result.stdout + result.stderr


@pytest.mark.kfp_api(conn_id="kfp_probe", extra={"request_timeout": 3})
def test_the_marker_sets_the_connection_the_fixture_defines(kfp_api):
    import json
    import os

    from airflow.sdk import Connection

    assert kfp_api.url.startswith("http://127.0.0.1:")
    value = json.loads(os.environ["AIRFLOW_CONN_KFP_PROBE"])
    assert value == {
        "conn_type": "kfp",
        "host": kfp_api.url,
        "extra": {"backend": "kfp", "request_timeout": 3},
    }
    conn = Connection.get("kfp_probe")
    assert (conn.conn_type, conn.host) == ("kfp", kfp_api.url)
    assert kfp_api.connection().extra_dejson == value["extra"]
