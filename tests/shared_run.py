"""What one test run shares across its pytest-xdist workers (imported by conftest and fixtures)."""

from __future__ import annotations

# The environment variable naming a folder of the whole run, pytest-xdist workers included
# (they inherit the environment): what the run starts once and shares, such as the e2e
# tests' PostgreSQL server. Set and removed by tests/conftest.py.
SHARED_FOLDER = "KFP_BRIDGE_TESTS_SHARED"
