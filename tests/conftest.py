"""Suite-wide markers and what a run shares (both environments load this file, so it
imports nothing of theirs at import time).

``e2e``: the test runs real processes end to end (an Airflow stack, ``airflow dags test``,
a browser, a fresh virtualenv, the comparison) and takes seconds to minutes. ``make
test-fast`` leaves these out; ``make test`` (what CI runs) runs everything. Marked here:
whole folders of them, and every test using a fixture that sets up an Airflow home for
CLI runs. Elsewhere a module carries the mark itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.shared_run import SHARED_FOLDER

_TESTS = Path(__file__).resolve().parent
_E2E_FOLDERS = {"e2e", "browser", "compare", "package"}
_E2E_FIXTURES = {"airflow_env", "airflow_home", "failing_dag_env"}
# Longest first, so that the two pytest-xdist workers (make test) finish together: the
# comparison, the browser stack, the Airflow stacks, other e2e modules, then the rest.
_FIRST = ("compare", "browser", "e2e")


def _rank(item: pytest.Item, folder: str) -> int:
    if folder in _FIRST:
        return _FIRST.index(folder)
    return len(_FIRST) if item.get_closest_marker("e2e") else len(_FIRST) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    folders = {}
    for item in items:
        folders[item] = folder = item.path.relative_to(_TESTS).parts[0]
        if folder in _E2E_FOLDERS or _E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: _rank(item, folders[item]))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the run's own process, not an xdist worker
        os.environ[SHARED_FOLDER] = tempfile.mkdtemp(prefix="kfp-bridge-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    shared = os.environ.pop(SHARED_FOLDER, None)
    if shared is None:
        return
    if (Path(shared) / "postgres.json").exists():  # only on the Airflow side
        from tests.e2e.metadata_db import stop_shared_server

        stop_shared_server(Path(shared))
    shutil.rmtree(shared, ignore_errors=True)
