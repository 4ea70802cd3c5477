"""Demo data is deterministic and has the documented tables; the demo model round-trips."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from kfp_prediction.demo_data import EVENT_TABLES, generate, generate_with_duckdb
from kfp_prediction.model import load_verified_model
from kfp_prediction.schema import SOURCE_COLUMNS
from kfp_prediction.scoring import MODEL_FEATURES
from pipeline_support import SMALL, Model

TINY = dataclasses.replace(SMALL, users=50, page_views=800)


def test_same_seed_same_rows(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    counts = generate(a, TINY)
    generate(b, TINY)
    for table, columns in SOURCE_COLUMNS.items():
        left, right = pq.read_table(a / table), pq.read_table(b / table)
        assert left.equals(right), table
        assert set(columns) <= set(left.schema.names)
        assert left.num_rows == counts[table]
    other = generate(tmp_path / "c", dataclasses.replace(TINY, seed=TINY.seed + 1))
    assert other == counts
    assert not pq.read_table(tmp_path / "c" / "page_views").equals(pq.read_table(a / "page_views"))


def test_duckdb_engine_writes_events_in_time_order_as_a_warehouse_holds_them(
    tmp_path: Path,
) -> None:
    """Not clustered by user: bench_scale measures the aggregation real event tables meet."""
    spec = dataclasses.replace(SMALL, users=2_000, page_views=40_000)
    counts = generate_with_duckdb(tmp_path, spec, memory_limit="256MB")
    for table, columns in SOURCE_COLUMNS.items():
        rows = pq.read_table(tmp_path / table)
        assert set(columns) <= set(rows.schema.names) and rows.num_rows == counts[table]
    for table in EVENT_TABLES:
        rows = pq.read_table(tmp_path / table)
        times = rows.column("event_time").to_numpy()
        assert (np.diff(times) >= np.timedelta64(0)).all(), table
        users = rows.column("user_id").to_numpy()
        assert (np.diff(users) != 0).mean() > 0.9, table  # consecutive rows: other users
    assert not (tmp_path / ".generate-spill").exists()


def test_demo_model_file_and_digest(model: Model) -> None:
    assert Path(f"{model.path}.sha256").read_text() == f"{model.sha256}  {model.path.name}\n"
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == model.sha256
    loaded, _ = load_verified_model(model.uri, model.sha256)
    assert list(loaded.feature_names_in_) == list(MODEL_FEATURES)


TRAIN_TWICE = """
import datetime as dt, sys
from kfp_prediction.demo_model import train, write_model
from pathlib import Path
model = train(sys.argv[1], dt.date(2026, 11, 27), kind=sys.argv[3])
print(write_model(model, Path(sys.argv[2])))
"""


def _shuffled_copy(source: Path, target: Path) -> Path:
    """The same rows in another physical order (DuckDB may hand them over in any order)."""
    shutil.copytree(source, target)
    for table in ("users", "page_views", "purchases"):
        path = next((target / table).glob("*.parquet"))
        rows = pq.read_table(path)
        order = np.random.default_rng(1).permutation(rows.num_rows)
        pq.write_table(rows.take(order), path)
    return target


@pytest.mark.parametrize("kind", ["linear", "tree"])
def test_demo_model_is_reproducible(source_warehouse: Path, tmp_path: Path, kind: str) -> None:
    """Two trainings in two processes, the second on the same rows shuffled: the same
    pickle bytes and digest."""
    digests, blobs = [], []
    shuffled = _shuffled_copy(source_warehouse, tmp_path / "shuffled")
    for name, warehouse in (("first", source_warehouse), ("second", shuffled)):
        out = tmp_path / f"{name}.pkl"
        run = subprocess.run(
            [sys.executable, "-c", TRAIN_TWICE, str(warehouse), str(out), kind],
            check=True,
            capture_output=True,
            text=True,
        )
        digests.append(run.stdout.split()[-1])
        blobs.append(out.read_bytes())
    assert digests[0] == digests[1] == hashlib.sha256(blobs[0]).hexdigest()
    assert blobs[0] == blobs[1]
