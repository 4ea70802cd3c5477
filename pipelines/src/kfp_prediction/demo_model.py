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

import duckdb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kfp_prediction.dates import JST, TargetWindow
from kfp_prediction.features import MODEL_FEATURES, build_candidates
from kfp_prediction.warehouse import open_warehouse, resolve_local_path

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


def train(warehouse: str, target_date: dt.date, seed: int = 7) -> Pipeline:
    """Standardised logistic regression: one matrix product per call, so scoring 1M users x
    every content stays a small part of the run (a tree ensemble took ~40 s here)."""
    wh = open_warehouse(warehouse)
    users = wh.user_features(TargetWindow.build(target_date.isoformat(), 28))
    rng = np.random.default_rng(seed)
    if len(users) > TRAIN_USERS:
        users = users.take(np.sort(rng.choice(len(users), TRAIN_USERS, replace=False)))
    x = build_candidates(users, wh.contents(), MODEL_FEATURES)
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))])
    model.fit(x, simulated_response(x, rng))
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
    args = parser.parse_args(argv)
    target = args.target_date or latest_event_date(args.warehouse)
    out = resolve_local_path(args.out)
    digest = write_model(train(args.warehouse, target), out)
    print(f"model {out} sha256 {digest}")


if __name__ == "__main__":
    main()
