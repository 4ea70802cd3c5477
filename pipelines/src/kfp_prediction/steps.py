"""The prediction step as plain Python (the KFP component is a thin wrapper around it).

``predict_and_write`` validates every input first (cheap checks: no feature query yet), then
runs the feature query and streams its result through scoring into the new partition: batches
of users are fetched, scored and encoded in three threads at once (``streaming.read_ahead``).
The partition is swapped in only after the last batch, so nothing is written unless every
check passed and every user was scored.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import (
    InvalidSourceDataError,
    MissingSourceColumnError,
    NoSourceDataError,
)
from kfp_prediction.features import build_candidates, candidate_columns
from kfp_prediction.model import linear_form, load_verified_model, model_feature_names
from kfp_prediction.schema import PREDICTIONS_SCHEMA, SOURCE_COLUMNS
from kfp_prediction.streaming import read_ahead
from kfp_prediction.warehouse import Warehouse, open_warehouse

log = logging.getLogger(__name__)
BATCH_USERS = 200_000  # users fetched, scored and written together


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
    model: Any, feature_names: list[str], users: pa.Table, contents: pa.Table
) -> tuple[np.ndarray, np.ndarray]:
    """Best content index and its score for each user of ``users`` (one batch, or all).

    A linear model (see ``model.linear_form``) is scored on the broadcast (user, content)
    grid with numpy; anything else through ``predict_proba`` on the candidate rows. Memory
    is bounded by the caller's batch size (``BATCH_USERS`` in ``predict_and_write``).
    """
    linear = linear_form(model, feature_names)
    shape = (len(users), len(contents))
    if linear is None:
        matrix = build_candidates(users, contents, feature_names)
        grid = model.predict_proba(matrix)[:, 1].reshape(shape)
    else:
        grid = _linear_logits(linear, candidate_columns(users, contents, feature_names), shape)
    best = grid.argmax(axis=1)
    top = np.take_along_axis(grid, best[:, None], axis=1)[:, 0]
    # the logistic function is monotonic: the best logit is the best probability
    return best, top if linear is None else _sigmoid(top)


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
    users: pa.Table,
    contents: pa.Table,
    best: np.ndarray,
    best_score: np.ndarray,
    model_sha256: str,
    run_id: str,
    run_name: str,
    created_at: dt.datetime,
) -> pa.Table:
    n = len(users)
    content_ids = contents.column("content_id").cast(pa.string()).combine_chunks()

    def constant(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [value]).cast(pa.string())

    columns = [
        pa.array(np.full(n, np.datetime64(window.target_date, "D"))).cast(pa.date32()),
        users.column("user_id").cast(pa.int64()),
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


@dataclass
class _Tally:
    """What the streamed batches add up to: row counts and every user's best score."""

    users: int = 0
    page_views: int = 0
    purchases: int = 0
    best: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def add(self, users: pa.Table, best: np.ndarray, scores: np.ndarray) -> None:
        self.users += users.num_rows
        self.page_views += _column_total(users, "pv_count")
        self.purchases += _column_total(users, "purchase_count")
        self.best.append(best)
        self.scores.append(scores)

    def metrics(self, n_contents: int) -> dict[str, float]:
        best = np.concatenate(self.best) if self.best else np.empty(0, np.int64)
        scores = np.concatenate(self.scores) if self.scores else np.empty(0)
        return {
            "page_views_window_rows": float(self.page_views),
            "purchases_window_rows": float(self.purchases),
            **score_summary(scores, best, n_contents),
            "rows_written": float(self.users),
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
    contents = wh.contents()
    users = wh.user_feature_batches(window, BATCH_USERS)
    clock.lap(metrics, "query")
    created_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    tally = _Tally()

    def scored(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
        for batch in batches:
            part = pa.Table.from_batches([batch])
            if part.column("user_id").null_count:
                raise InvalidSourceDataError(
                    f"source table users has {part.column('user_id').null_count} row(s) with "
                    f"a NULL user_id in {wh.location}"
                )
            best, best_score = score_users(model, feature_names, part, contents)
            tally.add(part, best, best_score)
            yield predictions_table(
                window, part, contents, best, best_score, digest, run_id, run_name, created_at
            )
        if not tally.users:  # raised inside the write: the previous partition stays
            raise NoSourceDataError(
                f"source table users has no user registered before target_date {target_date}"
            )

    # closing(): on any failure both threads finish their current batch and stop before this
    # returns, rather than whenever the traceback holding these generators is released.
    with (
        closing(read_ahead(users, name="fetch-features")) as fetched,
        closing(read_ahead(scored(fetched), name="score")) as parts,
    ):
        metrics["partition"] = wh.write_predictions(window.target_date, parts)
    clock.lap(metrics, "score_and_write")
    metrics.update(tally.metrics(len(contents)))
    log.info("wrote %d predictions for %s to %s", tally.users, target_date, metrics["partition"])
    return metrics


def _column_total(table: pa.Table, name: str) -> int:
    return int(pc.sum(table.column(name)).as_py() or 0)


class _Clock:
    """Phase timings, reported as ``seconds_<phase>`` metrics."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, metrics: dict[str, Any], phase: str) -> None:
        now = time.perf_counter()
        metrics[f"seconds_{phase}"] = round(now - self._last, 3)
        self._last = now
