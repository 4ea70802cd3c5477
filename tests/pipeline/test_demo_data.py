"""Demo data is deterministic and has the documented tables; the demo model round-trips."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
from kfp_prediction.demo_data import generate
from kfp_prediction.model import load_verified_model, model_feature_names
from kfp_prediction.schema import SOURCE_COLUMNS
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


def test_demo_model_file_and_digest(model: Model) -> None:
    assert Path(f"{model.path}.sha256").read_text() == f"{model.sha256}  {model.path.name}\n"
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == model.sha256
    loaded, _ = load_verified_model(model.uri, model.sha256)
    assert model_feature_names(loaded)
