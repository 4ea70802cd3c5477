"""Which metadata database an Airflow stack of the tests runs on.

PostgreSQL (what Cloud Composer runs) when a server can be started here; under
``CI`` its absence fails the run. Elsewhere the stacks fall back to SQLite and
say so in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.e2e.postgres import PostgresServer, unavailable_reason


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def postgres_server(request) -> Iterator[PostgresServer | None]:
    """One server for the session (each stack gets its own database), or None."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
        _say(request.config, f"e2e: PostgreSQL not available ({reason}); using SQLite")
        yield None
        return
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def metadata_db(postgres_server, request) -> str | None:
    """SQLAlchemy URL of a fresh database for this module's stack (None: SQLite)."""
    if postgres_server is None:
        return None
    name = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    return postgres_server.create_database(name)
