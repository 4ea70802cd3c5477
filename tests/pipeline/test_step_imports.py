"""Each step, run in a fresh interpreter as its component runs it, loads only what it uses.

A component process pays for every library it imports (benchmarks/bench_pipeline.py prints
the start-up per phase): the features step needs no scikit-learn, no pandas (DuckDB's Python
client imports pandas on the first bound query parameter, so the local warehouse binds none)
and no pyarrow or numpy (DuckDB writes the partition itself); the predict step no DuckDB and
no sqlglot (it reads Parquet with pyarrow), and for the linear model no scikit-learn at all
(``linear_pickle``): scikit-learn, with pandas and scipy, comes with any other model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from kfp_prediction.demo_model import train, write_model
from pipeline_support import TARGET_DATE, Model

DAY = dt.date.fromisoformat(TARGET_DATE)

HEAVY = ("duckdb", "sqlglot", "pandas", "sklearn", "sklearn.ensemble", "scipy", "pyarrow", "numpy")

RUN_STEP = """
import json, sys
step, warehouse, model_uri, sha256, target_date = sys.argv[1:]
if step == "features":
    from kfp_prediction.feature_step import materialize_features
    materialize_features(target_date, warehouse, 28)
else:
    from kfp_prediction.predict_step import predict
    from kfp_prediction.warehouse import open_warehouse
    import datetime as dt
    features = open_warehouse(warehouse).features_partition(dt.date.fromisoformat(target_date))
    predict(target_date, warehouse, features, model_uri, sha256)
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
""".replace("HEAVY", repr(HEAVY))


def loaded_by(step: str, warehouse: Path, model: Model) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN_STEP, step, str(warehouse), str(model.path), model.sha256,
         TARGET_DATE],
        check=True, capture_output=True, text=True, env={**os.environ, "_KFP_RUNTIME": "true"},
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_features_step_loads_no_scikit_learn_pandas_or_arrow(warehouse: Path, model: Model) -> None:
    assert loaded_by("features", warehouse, model) == ["duckdb", "sqlglot"]


def test_predict_step_of_a_linear_model_loads_neither_duckdb_nor_scikit_learn(
    warehouse: Path, model: Model
) -> None:
    loaded_by("features", warehouse, model)
    # pandas: pyarrow imports it on its first numpy conversion (Array.to_numpy, pa.array)
    assert loaded_by("predict", warehouse, model) == ["numpy", "pandas", "pyarrow"]


def test_predict_step_of_another_model_unpickles_it_with_scikit_learn(
    warehouse: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree.pkl"
    digest = write_model(train(str(warehouse), DAY, kind="tree"), tree)
    loaded_by("features", warehouse, Model(tree, digest))
    # scikit-learn comes with the model's unpickling, and brings pandas and scipy itself
    assert loaded_by("predict", warehouse, Model(tree, digest)) == [
        "numpy", "pandas", "pyarrow", "scipy", "sklearn", "sklearn.ensemble"
    ]  # fmt: skip
