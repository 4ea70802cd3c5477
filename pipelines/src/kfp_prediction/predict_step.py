"""The predict step: stream one features partition through the model into the predictions.

Checks first (warehouse, the features partition is the target date's, contents, model digest,
model contract); then batches of users are read ahead in one thread, scored side by side in
``SCORE_THREADS`` others and encoded into the new partition (``streaming``). The predictions
partition is swapped in only after the last batch, so nothing is written unless every check
passed, every user was scored and there are at least ``min_rows`` of them (the workflow's
row floor): a re-run or backfill on short sources keeps the date's previous partition.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_prediction.dates import parse_target_date
from kfp_prediction.errors import InvalidSourceDataError, NoSourceDataError
from kfp_prediction.linear_pickle import read_linear_model
from kfp_prediction.metrics import Clock
from kfp_prediction.model import read_verified_model, unpickle_model
from kfp_prediction.parameters import check_min_rows
from kfp_prediction.schema import FEATURE_COLUMNS, PREDICTIONS_TABLE, predictions_schema
from kfp_prediction.scoring import ScoringModel
from kfp_prediction.streaming import ordered_map, read_ahead
from kfp_prediction.warehouse import Warehouse, open_warehouse

log = logging.getLogger(__name__)
BATCH_USERS = 50_000  # users read, scored and written together (several per scoring thread)
# Batches scored side by side, one OpenMP thread each: scikit-learn's tree ensembles then run
# no parallel region (a barrier per tree, costly on a busy machine) and the batches still
# use every core; numpy's linear scoring gains the same way.
SCORE_THREADS = max(1, min(4, len(os.sched_getaffinity(0))))


def one_openmp_thread() -> None:
    """Worker initializer: OpenMP's thread count is per calling thread (its own ICV)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="openmp")


def prediction_rows(
    target_date: dt.date,
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
        pa.array(np.full(n, np.datetime64(target_date, "D"))).cast(pa.date32()),
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
    return pa.Table.from_arrays(columns, schema=predictions_schema())


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


def check_features_reference(wh: Warehouse, features: str, target_date: dt.date) -> None:
    """The hand-off must name this warehouse's partition for this target date."""
    expected = wh.features_partition(target_date)
    if features != expected:
        raise InvalidSourceDataError(
            f"features {features!r} is not the features partition of target_date "
            f"{target_date:%Y-%m-%d} in {wh.location} (expected {expected!r})"
        )


def predict(
    target_date: str,
    warehouse: str,
    features: str,
    model_uri: str,
    model_sha256: str,
    run_id: str = "",
    run_name: str = "",
    *,
    predictions_table: str = PREDICTIONS_TABLE,
    min_rows: int = 1,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Scores for every user of the features partition into the predictions partition.

    ``predictions_table`` is the output table (``schema.check_predictions_table``); the
    features must be that table's own partition. Fewer than ``min_rows`` rows (and never
    none) raise ``TooFewRowsError`` before the partition is replaced. Returns metrics and
    ``partition`` (where the predictions went).
    """
    clock = Clock()
    day = parse_target_date(target_date)
    check_min_rows(min_rows)
    wh = open_warehouse(warehouse, predictions_table=predictions_table)
    wh.check_reachable()
    check_features_reference(wh, features, day)
    contents = wh.contents()
    if not contents.num_rows:
        raise NoSourceDataError(f"source table contents has no rows in {wh.location}")
    data, digest = read_verified_model(model_uri, model_sha256)
    scoring = read_linear_model(data, contents)  # numpy only: scikit-learn is not imported
    if scoring is None:
        scoring = ScoringModel.check(unpickle_model(data, model_uri, digest), contents)
    users = wh.feature_batches(features, BATCH_USERS)
    missing = [c for c in FEATURE_COLUMNS if c not in users.schema.names]
    if missing:
        raise InvalidSourceDataError(
            f"features partition {features} is missing column(s) {', '.join(missing)}"
        )
    # What the step reports (kfp_prediction.report): the verified digest, the parsed date.
    metrics: dict[str, Any] = {"contents_rows": float(contents.num_rows)}
    # ... and the run id written into every row: the Airflow side checks the partition it
    # reads back holds this run's rows only (prediction_app.partition_check).
    metrics.update(target_date=f"{day:%Y-%m-%d}", model_sha256=digest, run_id=run_id)
    clock.lap(metrics, "checks")
    created_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    tally = _Tally()

    def score(batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray, np.ndarray, pa.Table]:
        part = pa.Table.from_batches([batch])
        if part.column("user_id").null_count:
            raise InvalidSourceDataError(
                f"features partition {features} has {part.column('user_id').null_count} "
                "row(s) with a NULL user_id"
            )
        best, best_score = scoring.score(part, contents)
        rows = prediction_rows(
            day, part, contents, best, best_score, digest, run_id, run_name, created_at
        )
        return part, best, best_score, rows

    def scored(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
        results = ordered_map(score, batches, SCORE_THREADS, "score", one_openmp_thread)
        with closing(results):
            for part, best, best_score, rows in results:
                tally.add(part, best, best_score)
                yield rows
        if not tally.users:  # raised inside the write: the previous partition stays
            raise NoSourceDataError(f"features partition {features} has no rows")

    # closing(): on any failure every thread finishes its current batch and stops before this
    # returns, rather than whenever the traceback holding these generators is released.
    with (
        closing(read_ahead(users, name="read-features")) as fetched,
        closing(scored(fetched)) as parts,
    ):
        metrics["partition"] = wh.write_predictions(day, parts, min_rows=min_rows)
    clock.lap(metrics, "score_and_write")
    metrics.update(tally.metrics(len(contents)))
    log.info("wrote %d predictions for %s to %s", tally.users, target_date, metrics["partition"])
    return metrics


def _column_total(table: pa.Table, name: str) -> int:
    return int(pc.sum(table.column(name)).as_py() or 0)
