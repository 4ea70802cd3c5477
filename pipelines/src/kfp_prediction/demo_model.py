"""Train the demo model once on generated data; write the pickle and its sha256.

    python -m kfp_prediction.demo_model --warehouse var/warehouse --out var/models/demo_model.pkl

Writes ``demo_model.pkl`` and ``demo_model.pkl.sha256`` (``sha256sum`` format: digest, two
spaces, file name). The pipeline never trains; it only loads this file after checking the
digest. Labels are simulated responses from a known rule, so scores are meaningful.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import pickle
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kfp_prediction.dates import JST, TargetWindow
from kfp_prediction.paths import resolve_local_path
from kfp_prediction.scoring import MODEL_FEATURES, candidate_matrix
from kfp_prediction.warehouse import open_warehouse

TRAIN_USERS = 20_000


def simulated_response(x: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    logit = (
        -2.2
        + 3.0 * x["category_view_share"] * (x["channel_coupon"] + 0.3)
        + 4.0 * x["discount_rate"]
        + 0.3 * x["member_rank_level"]
        + x["channel_push"] * (1.5 * x["pv_app_share"] - 0.6)
        + x["channel_newsletter"] * (0.25 * x["age_band_level"] - 0.5)
        - 0.04 * x["days_since_last_view"]
        + 0.4 * np.minimum(x["category_purchase_count"], 3)
    )
    return (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.int8)


MODEL_KINDS = ("linear", "tree")


def train(warehouse: str, target_date: dt.date, seed: int = 7, kind: str = "linear") -> Any:
    """The demo model, the same bytes from the same data on every run.

    ``linear`` (the default, the demo model): standardised logistic regression, scored by the
    pipeline with numpy. ``tree``: a 75-iteration ``HistGradientBoostingClassifier`` scored
    through its own ``predict_proba`` (the benchmark's second model). Reproducible: the
    feature rows are put in ``user_id`` order (DuckDB returns them in any order), fitted in
    float64 on one thread, and the fitted floats are rounded to 12 significant digits, so
    the pickle and its sha256 do not depend on the order rows arrived in or on a last-bit
    difference between CPUs.
    """
    from threadpoolctl import threadpool_limits

    wh = open_warehouse(warehouse)
    users = wh.user_features(TargetWindow.build(target_date.isoformat(), 28)).sort_by("user_id")
    rng = np.random.default_rng(seed)
    if len(users) > TRAIN_USERS:
        users = users.take(np.sort(rng.choice(len(users), TRAIN_USERS, replace=False)))
    matrix = candidate_matrix(users, wh.contents(), MODEL_FEATURES, dtype=np.float64)
    x = pd.DataFrame(matrix, columns=list(MODEL_FEATURES), copy=False)
    y = simulated_response(x, rng)
    if kind == "linear":
        model: Any = Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
        )
    elif kind == "tree":
        model = HistGradientBoostingClassifier(max_iter=75, early_stopping=False, random_state=seed)
    else:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    with threadpool_limits(1), threadpool_limits(1, user_api="openmp"):
        model.fit(x, y)
    return canonical(model)


def canonical(model: Any) -> Any:
    """Round every fitted float array of the model (and its steps) to 12 significant digits."""
    parts = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    for part in parts:
        for name, value in vars(part).items():
            if name.endswith("_") and isinstance(value, np.ndarray) and value.dtype == np.float64:
                setattr(
                    part,
                    name,
                    np.array([float(f"{v:.11e}") for v in value.ravel()]).reshape(value.shape),
                )
    return model


def latest_event_date(warehouse: str) -> dt.date:
    """The JST date after the newest page view: the latest target date the data supports."""
    files = str(resolve_local_path(warehouse) / "page_views" / "*.parquet")
    newest = duckdb.execute("SELECT MAX(event_time) FROM read_parquet(?)", [files]).fetchone()[0]
    return newest.astimezone(JST).date() + dt.timedelta(days=1)


def write_model(model: object, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(data).hexdigest()
    out.write_bytes(data)
    Path(f"{out}.sha256").write_text(f"{digest}  {out.name}\n")
    return digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default="var/warehouse")
    parser.add_argument("--out", default="var/models/demo_model.pkl")
    parser.add_argument(
        "--target-date",
        type=dt.date.fromisoformat,
        default=None,
        help="date whose features train the model (default: newest data + 1)",
    )
    parser.add_argument("--kind", choices=MODEL_KINDS, default="linear")
    args = parser.parse_args(argv)
    target = args.target_date or latest_event_date(args.warehouse)
    out = resolve_local_path(args.out)
    digest = write_model(train(args.warehouse, target, kind=args.kind), out)
    print(f"model {out} sha256 {digest}")


if __name__ == "__main__":
    main()
