"""Scoring: user feature rows and contents in, each user's best content and its score out.

One module for everything between the feature partition and the predictions table: the model
inputs the pipeline produces (``PAIR_FEATURES``, ``USER_FEATURES``), the (user, content) grid
they form, the model contract (``ScoringModel.check``) and the scoring itself.

Two model shapes are accepted (pipelines/README.md, "Model contract"):

* a **pair model**: a binary classifier over one row per (user, content) pair; the score of a
  pair is the probability of the second class, the best content the one with the top score;
* a **content model**: a classifier whose ``classes_`` are content ids and whose features are
  the user's own; one ``predict_proba`` row per user scores every content at once.

A ``StandardScaler`` -> binary ``LogisticRegression`` pair model (the demo model) is folded
into one weight vector and scored on the broadcast grid with numpy; any other model goes
through its own ``predict_proba``, one call per batch, on a float matrix built once per batch
in the model's feature order and input dtype, so scikit-learn converts and copies nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_prediction.errors import ModelContractError, ModelFeatureMismatchError
from kfp_prediction.schema import AGE_BANDS, CATEGORIES, CHANNELS, MEMBER_RANKS

# Features of the user alone (a content model may ask for these).
USER_FEATURES: tuple[str, ...] = (
    "member_rank_level",
    "age_band_level",
    "tenure_days",
    "pv_count",
    "pv_app_share",
    "days_since_last_view",
    "purchase_count",
    "purchase_amount",
    "days_since_last_purchase",
)
# Features of a (user, content) pair, in this order (a pair model may ask for these).
PAIR_FEATURES: tuple[str, ...] = (
    *USER_FEATURES,
    "category_view_share",
    "category_purchase_count",
    "discount_rate",
    "channel_coupon",
    "channel_newsletter",
    "channel_push",
    "push_x_app_share",
    "coupon_x_view_share",
)
MODEL_FEATURES = PAIR_FEATURES  # the demo model's inputs
# Rows per predict_proba call: a bound on memory, not a tuning knob. One call per batch of
# users (BATCH_USERS x contents rows) is fastest here: scikit-learn's tree ensembles open an
# OpenMP parallel region per tree and call, and on a busy 2-core machine each one costs a
# barrier (chunks of 32,768 rows made a 75-tree HistGradientBoosting model 1.7-3.6x slower).
PREDICT_ROWS = 1 << 21


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float32; a NULL becomes NaN (the feature query COALESCEs its own)."""
    return table.column(name).to_numpy().astype(np.float32, copy=False)


def _levels(values: pa.ChunkedArray, order: tuple[str, ...]) -> np.ndarray:
    """Ordinal level of each value in ``order``; -1 for NULL or a value not in it."""
    index = pc.fill_null(pc.index_in(values, value_set=pa.array(order)), -1)
    return index.to_numpy().astype(np.float32)


def candidate_columns(
    users: pa.Table, contents: pa.Table, feature_names: Sequence[str] = PAIR_FEATURES
) -> dict[str, np.ndarray]:
    """Each feature as a float32 array that broadcasts to shape (users, contents).

    User features have shape (U, 1), content attributes (1, C), pair features (U, C): the
    (user, content) grid without materialising U x C copies of every column.
    """
    n_users, n_contents = len(users), len(contents)

    def user(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(n_users, 1)

    def content(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(1, n_contents)

    pv_count = _floats(users, "pv_count")
    category_index = {c: i for i, c in enumerate(CATEGORIES)}
    content_cat = [category_index.get(c) for c in contents.column("category").to_pylist()]

    def per_category(prefix: str, total: np.ndarray) -> np.ndarray:
        """Each content's category column of the user (the total for "all" contents)."""
        return np.column_stack(
            [
                total if i is None else _floats(users, f"{prefix}_{CATEGORIES[i]}")
                for i in content_cat
            ]
        ).astype(np.float32, copy=False)

    app_share = user(_floats(users, "pv_app") / np.maximum(pv_count, 1.0))
    channels = contents.column("channel").to_pylist()
    channel = {c: content(np.array([ch == c for ch in channels])) for c in CHANNELS}

    def view_share() -> np.ndarray:
        return per_category("pv", pv_count) / np.maximum(pv_count, 1.0)[:, None]

    columns = {
        "member_rank_level": lambda: user(_levels(users.column("member_rank"), MEMBER_RANKS)),
        "age_band_level": lambda: user(_levels(users.column("age_band"), AGE_BANDS)),
        "tenure_days": lambda: user(_floats(users, "tenure_days")),
        "pv_count": lambda: user(pv_count),
        "pv_app_share": lambda: app_share,
        "days_since_last_view": lambda: user(_floats(users, "days_since_last_view")),
        "purchase_count": lambda: user(_floats(users, "purchase_count")),
        "purchase_amount": lambda: user(_floats(users, "purchase_amount")),
        "days_since_last_purchase": lambda: user(_floats(users, "days_since_last_purchase")),
        "category_view_share": view_share,
        "category_purchase_count": lambda: per_category("buy", _floats(users, "purchase_count")),
        "discount_rate": lambda: content(_floats(contents, "discount_rate")),
        **{f"channel_{c}": (lambda c=c: channel[c]) for c in CHANNELS},
        # Interactions, so a linear model can tell which channel suits which user.
        "push_x_app_share": lambda: channel["push"] * app_share,
        "coupon_x_view_share": lambda: channel["coupon"] * view_share(),
    }
    return {name: columns[name]() for name in feature_names}


def candidate_matrix(
    users: pa.Table,
    contents: pa.Table,
    feature_names: Sequence[str] = PAIR_FEATURES,
    dtype: type = np.float32,
) -> np.ndarray:
    """One row per (user, content) pair, user-major, in ``feature_names`` order (C-ordered).

    Rows ``i*C .. i*C+C-1`` belong to user row ``i``, where C is ``len(contents)``. Filled
    column by column into one block: at a batch of users x every content this is the
    largest object of the run.
    """
    n_users, n_contents = len(users), len(contents)
    columns = candidate_columns(users, contents, feature_names)
    matrix = np.empty((n_users, n_contents, len(feature_names)), dtype=dtype)
    for j, name in enumerate(feature_names):
        matrix[:, :, j] = columns[name]
    return matrix.reshape(n_users * n_contents, len(feature_names))


def user_matrix(users: pa.Table, feature_names: Sequence[str], dtype: type) -> np.ndarray:
    """One row per user: the user-level features a content model reads."""
    one = pa.table({"category": ["all"], "channel": ["none"], "discount_rate": [0.0]})
    columns = candidate_columns(users, one, feature_names)
    matrix = np.empty((len(users), len(feature_names)), dtype=dtype)
    for j, name in enumerate(feature_names):
        matrix[:, j] = columns[name][:, 0]
    return matrix


# The classes the numpy path folds, by where scikit-learn defines them: compared by path, not
# with isinstance, so that neither this check nor ``linear_pickle`` has to import scikit-learn.
PIPELINE = "sklearn.pipeline.Pipeline"
STANDARD_SCALER = "sklearn.preprocessing._data.StandardScaler"
LOGISTIC_REGRESSION = "sklearn.linear_model._logistic.LogisticRegression"
# LogisticRegression.predict_proba of a binary model is 1 / (1 + exp(-logit)) with these;
# "multinomial" is a softmax over (-logit, logit), i.e. 1 / (1 + exp(-2 logit)).
SIGMOID_MULTI_CLASS = ("auto", "deprecated", "ovr", "warn")


def class_path(obj: Any) -> str:
    """``module.QualifiedName`` of ``obj``'s class; of the class a ``linear_pickle.StandIn``
    stands in for."""
    stand_in_for = getattr(type(obj), "stand_in_for", None)
    return stand_in_for or f"{type(obj).__module__}.{type(obj).__qualname__}"


def linear_form(model: Any, feature_names: Sequence[str]) -> tuple[np.ndarray, float] | None:
    """Weights ``w`` and bias ``b`` with ``logit = x @ w + b``, when the model is linear.

    Covers the demo model's shape: a scikit-learn ``Pipeline`` of ``StandardScaler`` steps
    ending in a binary ``LogisticRegression`` (or that classifier alone). Folding the scaler
    into the weights lets the pipeline score the (user, content) grid with broadcasting numpy
    instead of materialising U x C feature rows for ``predict_proba``; the probability of the
    second class is ``1 / (1 + exp(-logit))``, exactly what ``predict_proba`` computes (a
    ``multi_class="multinomial"`` model's is not, so it is not folded). Any other model
    returns None and is scored with ``predict_proba``.
    """
    steps = [step for _, step in model.steps] if class_path(model) == PIPELINE else [model]
    steps = [step for step in steps if step is not None and step != "passthrough"]
    if not steps:
        return None
    *scalers, final = steps
    if class_path(final) != LOGISTIC_REGRESSION or any(
        class_path(s) != STANDARD_SCALER for s in scalers
    ):
        return None
    if getattr(final, "multi_class", "auto") not in SIGMOID_MULTI_CLASS:
        return None
    coef = np.asarray(final.coef_, dtype=np.float64)
    if coef.shape != (1, len(feature_names)):
        return None
    weights, bias = coef[0].copy(), float(np.asarray(final.intercept_).ravel()[0])
    for scaler in reversed(scalers):  # logit = w . ((x - mean) / scale) + b
        if scaler.scale_ is not None:
            weights = weights / scaler.scale_
        if scaler.mean_ is not None and scaler.with_mean:
            bias -= float(weights @ scaler.mean_)
    return weights, bias


def input_dtype(model: Any) -> type:
    """The float type the model computes in, so ``predict_proba`` converts nothing.

    scikit-learn's tree and forest estimators (and ``GradientBoostingClassifier``) work in
    float32; everything else, ``HistGradientBoostingClassifier`` included, in float64.
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.ensemble._forest import BaseForest
    from sklearn.pipeline import Pipeline
    from sklearn.tree import BaseDecisionTree

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    float32 = (BaseDecisionTree, BaseForest, GradientBoostingClassifier)
    return np.float32 if isinstance(first, float32) else np.float64


@dataclass(frozen=True)
class ScoringModel:
    """A checked model and how to score it: ``check`` refuses anything off the contract."""

    model: Any
    kind: str  # "pair" or "content"
    feature_names: tuple[str, ...]
    dtype: type
    linear: tuple[np.ndarray, float] | None = None
    class_contents: np.ndarray | None = None  # content model: contents-table row per class

    @classmethod
    def check(cls, model: Any, contents: pa.Table) -> ScoringModel:
        """The model's shape against the contract, before anything is scored or written."""
        names = getattr(model, "feature_names_in_", None)
        classes = getattr(model, "classes_", None)
        if names is None or classes is None or not callable(getattr(model, "predict_proba", 0)):
            raise ModelContractError(
                "model must be a fitted scikit-learn classifier with feature_names_in_, "
                f"classes_ and predict_proba; got {type(model).__name__}"
            )
        names = tuple(str(n) for n in names)
        content_ids = [str(c) for c in contents.column("content_id").to_pylist()]
        labels = [str(c) for c in np.asarray(classes).ravel()]
        known = set(labels) & set(content_ids)
        if known and (len(labels) > 2 or known == set(labels)):
            unknown = sorted(set(labels) - set(content_ids))
            if unknown:
                raise ModelContractError(
                    "model has one class per content, but these classes are not in the "
                    f"contents table: {', '.join(unknown)} (contents: {', '.join(content_ids)})"
                )
            _check_features(names, USER_FEATURES, "content model (one class per content)")
            rows = np.array([content_ids.index(label) for label in labels], dtype=np.int64)
            return cls(model, "content", names, input_dtype(model), class_contents=rows)
        if len(labels) != 2:
            raise ModelContractError(
                "model must be a binary classifier over (user, content) pairs (score = "
                "probability of the second class) or have one class per content id; got "
                f"classes {labels!r}"
            )
        _check_features(names, PAIR_FEATURES, "pair model")
        linear = linear_form(model, names)
        if linear is not None:  # scored in float64 by numpy; input_dtype imports sklearn.ensemble
            return cls(model, "pair", names, np.float64, linear=linear)
        return cls(model, "pair", names, input_dtype(model))

    def score(self, users: pa.Table, contents: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Best content (row of ``contents``) and its score for each user of ``users``."""
        if self.kind == "content":
            proba = self._predict(user_matrix(users, self.feature_names, self.dtype))
            best_class = proba.argmax(axis=1)
            top = np.take_along_axis(proba, best_class[:, None], axis=1)[:, 0]
            return self.class_contents[best_class], top
        shape = (len(users), len(contents))
        if self.linear is not None:
            columns = candidate_columns(users, contents, self.feature_names)
            grid = _linear_logits(self.linear, columns, shape)
        else:
            matrix = candidate_matrix(users, contents, self.feature_names, self.dtype)
            grid = self._predict(matrix)[:, 1].reshape(shape)
        best = grid.argmax(axis=1)
        top = np.take_along_axis(grid, best[:, None], axis=1)[:, 0]
        # the logistic function is monotonic: the best logit is the best probability
        return best, top if self.linear is None else _sigmoid(top)

    def _predict(self, matrix: np.ndarray) -> np.ndarray:
        """``predict_proba`` over ``matrix`` (one call per ``PREDICT_ROWS``), output checked."""
        import pandas as pd  # only this branch hands scikit-learn a frame (feature names)

        columns = list(self.feature_names)
        width = len(self.class_contents) if self.kind == "content" else 2
        parts = []
        for start in range(0, len(matrix), PREDICT_ROWS):
            chunk = matrix[start : start + PREDICT_ROWS]
            proba = self.model.predict_proba(pd.DataFrame(chunk, columns=columns, copy=False))
            proba = np.asarray(proba)
            if proba.shape != (len(chunk), width):
                raise ModelContractError(
                    f"model predict_proba returned shape {proba.shape} for {len(chunk)} rows; "
                    f"expected ({len(chunk)}, {width}), one column per class"
                )
            parts.append(proba)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty((0, width))])
        if len(out) and not (np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0):
            raise ModelContractError("model predict_proba returned values outside [0, 1]")
        return out


def _check_features(names: tuple[str, ...], produced: tuple[str, ...], kind: str) -> None:
    missing = [n for n in names if n not in produced]
    if missing:
        raise ModelFeatureMismatchError(
            f"model expects features the pipeline does not produce for a {kind}: "
            f"{', '.join(missing)} (produced: {', '.join(produced)})"
        )


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
