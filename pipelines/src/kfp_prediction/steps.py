"""The prediction step as plain Python (the KFP component is a thin wrapper around it).

``predict_and_write`` validates every input first (cheap checks: no feature query yet), then
builds features, scores and replaces the target date's partition. Nothing is written unless
every check passed and every user was scored.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import MissingSourceColumnError, NoSourceDataError
from kfp_prediction.features import build_candidates, candidate_columns
from kfp_prediction.model import linear_form, load_verified_model, model_feature_names
from kfp_prediction.schema import PREDICTIONS_SCHEMA, SOURCE_COLUMNS
from kfp_prediction.warehouse import Warehouse, open_warehouse

log = logging.getLogger(__name__)
SCORE_CHUNK_USERS = 200_000


def check_sources(warehouse: Warehouse, window: TargetWindow) -> dict[str, float]:
    """Columns present, and data for the day before the target date; returns row counts."""
    warehouse.check_reachable()
    for table, required in SOURCE_COLUMNS.items():
        missing = [c for c in required if c not in warehouse.columns(table)]
        if missing:
            raise MissingSourceColumnError(
                f"source table {table} is missing column(s) {', '.join(missing)} "
                f"in {warehouse.location}"
            )
    counts: dict[str, float] = {}
    for table in ("users", "contents"):
        counts[f"{table}_rows"] = warehouse.count_rows(table)
        if not counts[f"{table}_rows"]:
            raise NoSourceDataError(f"source table {table} has no rows in {warehouse.location}")
    last_day = warehouse.count_rows("page_views", window.last_day_start_utc, window.end_utc)
    if not last_day:
        raise NoSourceDataError(
            f"source table page_views has no rows for {window.last_day:%Y-%m-%d} (JST), the "
            f"last day before target_date {window.target_date:%Y-%m-%d}, in {warehouse.location}"
        )
    counts["page_views_last_day_rows"] = last_day
    return counts


def score_users(
    model: Any,
    feature_names: list[str],
    users: pd.DataFrame,
    contents: pd.DataFrame,
    chunk_users: int | None = SCORE_CHUNK_USERS,
) -> tuple[np.ndarray, np.ndarray]:
    """Best content index and its score per user (chunks bound memory; None = one call).

    A linear model (see ``model.linear_form``) is scored on the broadcast (user, content)
    grid with numpy; anything else through ``predict_proba`` on the candidate rows.
    """
    n_users, n_contents = len(users), len(contents)
    linear = linear_form(model, feature_names)
    best = np.empty(n_users, dtype=np.int64)
    best_score = np.empty(n_users, dtype=np.float64)
    step = chunk_users or max(n_users, 1)
    for start in range(0, n_users, step):
        part = users.iloc[start : start + step]
        if linear is None:
            matrix = build_candidates(part, contents, feature_names)
            grid = model.predict_proba(matrix)[:, 1].reshape(len(part), n_contents)
        else:
            columns = candidate_columns(part, contents, feature_names)
            grid = _linear_logits(linear, columns, (len(part), n_contents))
        chosen = grid.argmax(axis=1)
        top = np.take_along_axis(grid, chosen[:, None], axis=1)[:, 0]
        best[start : start + len(part)] = chosen
        # the logistic function is monotonic: the best logit is the best probability
        best_score[start : start + len(part)] = top if linear is None else _sigmoid(top)
    return best, best_score


def _linear_logits(
    linear: tuple[np.ndarray, float], columns: dict[str, np.ndarray], shape: tuple[int, int]
) -> np.ndarray:
    weights, bias = linear
    logits = np.full(shape, bias, dtype=np.float64)
    for weight, column in zip(weights, columns.values(), strict=True):
        logits += np.float64(weight) * column
    return logits


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-logit)) without overflow for large negative logits."""
    return np.exp(-np.logaddexp(0.0, -logit))


def predictions_table(
    window: TargetWindow,
    users: pd.DataFrame,
    contents: pd.DataFrame,
    best: np.ndarray,
    best_score: np.ndarray,
    model_sha256: str,
    run_id: str,
    run_name: str,
    created_at: dt.datetime,
) -> pa.Table:
    n = len(users)
    content_ids = pa.array(contents["content_id"].astype(str).tolist(), pa.string())

    def constant(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [value]).cast(pa.string())

    columns = [
        pa.array(np.full(n, np.datetime64(window.target_date, "D"))).cast(pa.date32()),
        pa.array(users["user_id"].to_numpy(np.int64)),
        pa.DictionaryArray.from_arrays(pa.array(best.astype(np.int32)), content_ids).cast(
            pa.string()
        ),
        pa.array(best_score),
        constant(model_sha256),
        constant(run_id),
        constant(run_name),
        pa.array(np.full(n, np.datetime64(created_at.replace(tzinfo=None), "us"))).cast(
            pa.timestamp("us", tz="UTC")
        ),
    ]
    return pa.Table.from_arrays(columns, schema=PREDICTIONS_SCHEMA)


def score_summary(best_score: np.ndarray, best: np.ndarray, n_contents: int) -> dict[str, float]:
    if not len(best_score):
        return {"users_scored": 0.0}
    chosen = np.bincount(best, minlength=n_contents)
    return {
        "users_scored": float(len(best_score)),
        "score_mean": float(best_score.mean()),
        "score_min": float(best_score.min()),
        "score_p50": float(np.median(best_score)),
        "score_max": float(best_score.max()),
        "contents_chosen": float((chosen > 0).sum()),
        "top_content_share": float(chosen.max() / len(best)),
    }


def predict_and_write(
    target_date: str,
    warehouse: str,
    model_uri: str,
    model_sha256: str,
    lookback_days: int,
    run_id: str = "",
    run_name: str = "",
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Features, scores and the new partition for one target date; returns metrics.

    Every check (dates, warehouse, columns, data, model digest and features) passes before
    the feature query runs; nothing is written unless every user was scored.
    """
    clock = _Clock()
    window = TargetWindow.build(target_date, lookback_days)
    wh = open_warehouse(warehouse)
    metrics: dict[str, Any] = dict(check_sources(wh, window))
    model, digest = load_verified_model(model_uri, model_sha256)
    feature_names = model_feature_names(model)
    clock.lap(metrics, "checks")
    users = wh.user_features(window)
    contents = wh.contents()
    metrics["page_views_window_rows"] = int(users["pv_count"].sum())
    metrics["purchases_window_rows"] = int(users["purchase_count"].sum())
    clock.lap(metrics, "query")
    if users.empty:
        raise NoSourceDataError(
            f"source table users has no user registered before target_date {target_date}"
        )
    best, best_score = score_users(model, feature_names, users, contents)
    created_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    rows = predictions_table(
        window, users, contents, best, best_score, digest, run_id, run_name, created_at
    )
    clock.lap(metrics, "predict")
    metrics.update(score_summary(best_score, best, len(contents)))
    metrics["rows_written"] = float(rows.num_rows)
    metrics["partition"] = wh.write_predictions(window.target_date, rows)
    clock.lap(metrics, "write")
    log.info("wrote %d predictions for %s to %s", rows.num_rows, target_date, metrics["partition"])
    return metrics


class _Clock:
    """Phase timings, reported as ``seconds_<phase>`` metrics."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, metrics: dict[str, Any], phase: str) -> None:
        now = time.perf_counter()
        metrics[f"seconds_{phase}"] = round(now - self._last, 3)
        self._last = now
