"""Fixtures for the pipeline side: small generated warehouses and a demo model in tmp dirs.

Runs in .venv-pipeline (``.venv-pipeline/bin/python -m pytest tests/pipeline``).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_support import Emulator, running_emulator
from kfp_prediction.demo_data import generate
from kfp_prediction.demo_model import train, write_model
from pipeline_support import SMALL, TARGET_DATE, Model


@pytest.fixture(scope="session")
def source_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated source tables; never written to by tests (copy it with ``warehouse``)."""
    root = tmp_path_factory.mktemp("source-warehouse")
    generate(root, SMALL)
    return root


@pytest.fixture(scope="session")
def model(source_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("model") / "demo_model.pkl"
    digest = write_model(train(str(source_warehouse), dt.date.fromisoformat(TARGET_DATE)), path)
    return Model(path, digest)


@pytest.fixture
def warehouse(source_warehouse: Path, tmp_path: Path) -> Path:
    """A private copy of the small warehouse for one test."""
    root = tmp_path / "warehouse"
    shutil.copytree(source_warehouse, root)
    return root


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """local-bigquery on loopback for the whole session (skipped when not built, not in CI)."""
    with running_emulator(tmp_path_factory.mktemp("bigquery-emulator")) as emulator:
        yield emulator
