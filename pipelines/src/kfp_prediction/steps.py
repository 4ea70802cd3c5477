"""Both steps in this process, in pipeline order: for tests, benchmarks and notebooks.

Under KFP each step is its own component process (``components``); here the hand-off is the
same table reference, passed from one call to the next.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kfp_prediction.feature_step import materialize_features
from kfp_prediction.parameters import (
    DEFAULTS,
    FEATURES_STEP,
    PREDICT_STEP,
    ROOT_PARAMETERS,
    step_arguments,
)
from kfp_prediction.predict_step import predict


def run_steps(
    run_id: str = "", run_name: str = "", *, now: dt.datetime | None = None, **values: Any
) -> dict[str, dict[str, Any]]:
    """Run the features step, then the predict step; returns each step's metrics."""
    unknown = sorted(set(values) - {p.name for p in ROOT_PARAMETERS})
    missing = sorted(p.name for p in ROOT_PARAMETERS if p.required and p.name not in values)
    if unknown or missing:
        raise TypeError(f"run_steps: unknown parameter(s) {unknown}, missing {missing}")
    values = {**DEFAULTS, **values}
    features = materialize_features(**step_arguments(FEATURES_STEP, values), run_id=run_id)
    predictions = predict(
        **step_arguments(PREDICT_STEP, values),
        features=features["features"],
        run_id=run_id,
        run_name=run_name,
        now=now,
    )
    return {FEATURES_STEP: features, PREDICT_STEP: predictions}
