"""Fixtures for the e2e and browser tests: the metadata database of their Airflow stacks."""

from __future__ import annotations

from tests.e2e.metadata_db import metadata_db, postgres_server

__all__ = ["metadata_db", "postgres_server"]
