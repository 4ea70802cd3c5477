"""Which metadata database an Airflow stack of the tests runs on.

PostgreSQL (what Cloud Composer runs) when a server can be started here; under
``CI`` its absence fails the run. Elsewhere the stacks fall back to SQLite and
say so in one line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from tests.e2e.postgres import PostgresServer, unavailable_reason
from tests.shared_run import SHARED_FOLDER


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def postgres_server(request) -> Iterator[PostgresServer | None]:
    """The run's one server (each stack gets its own database), or None.

    One for the whole run, pytest-xdist workers included: the first worker that asks starts
    it, the others attach to it, and the run's own process stops it at the end
    (``tests/conftest.py``).
    """
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
        _say(request.config, f"e2e: PostgreSQL not available ({reason}); using SQLite")
        yield None
        return
    shared = os.environ.get(SHARED_FOLDER)
    if shared is None:  # not started by this suite's pytest (tests/conftest.py): our own
        with PostgresServer() as server:
            yield server
        return
    state = Path(shared) / "postgres.json"
    with FileLock(Path(shared) / "postgres.lock"):
        if state.exists():
            server = PostgresServer.attach(json.loads(state.read_text()))
        else:
            server = PostgresServer().start()
            state.write_text(json.dumps(server.describe()))
    yield server


def stop_shared_server(shared: Path) -> None:
    """Stop the run's server, if a worker started one (the run's own process, at its end)."""
    state = shared / "postgres.json"
    if state.exists():
        PostgresServer.attach(json.loads(state.read_text())).stop()


@pytest.fixture(scope="module")
def metadata_db(postgres_server, request) -> str | None:
    """SQLAlchemy URL of a fresh database for this module's stack (None: SQLite)."""
    if postgres_server is None:
        return None
    name = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    return postgres_server.create_database(name)
