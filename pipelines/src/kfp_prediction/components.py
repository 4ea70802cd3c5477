"""The pipeline's KFP components and their placement, for this pipeline and for others.

``build_components(options)`` returns the two step components, ``features`` and ``predict``,
built for one image; ``place(task, step, options)`` gives a task of either its compile-time
resources, node selectors and caching. A KFP-only variant of the pipeline (a recurring run
with its own date handling) reuses both by importing this module::

    ops = build_components(CompileOptions(image="REGISTRY/kfp-prediction:TAG"))
    features = ops.features(target_date=..., warehouse=..., lookback_days=28,
                            predictions_table=..., min_rows=..., run_id=...)
    place(features, FEATURES_STEP, options)
    ops.predict(target_date=..., warehouse=..., features=features.output, model_uri=...,
                model_sha256=..., predictions_table=..., min_rows=..., run_id=...,
                run_name=...)

The hand-off between them is a table reference (a partition path, or
``PROJECT.DATASET.user_features$YYYYMMDD``), never data. Each component function's body only
imports ``kfp_prediction``, which the component image (pipelines/Dockerfile) and
``.venv-pipeline`` both have installed, so nothing is pip-installed at run time. KFP embeds a
component function's source and calls it by its parameter names, so the signatures are
written out here; ``build_components`` checks them against ``parameters.ROOT_PARAMETERS``.
"""

# No "from __future__ import annotations": KFP reads the component annotations as types.

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfp_prediction.parameters import FEATURES_STEP, PREDICT_STEP, STEPS, step_parameters

DEFAULT_IMAGE = "kfp-prediction:0.1.0"
# Inputs a component has beside its step's root parameters: the hand-off and the run's ids.
STEP_EXTRA_INPUTS = {
    FEATURES_STEP: {"run_id": str},
    PREDICT_STEP: {"features": str, "run_id": str, "run_name": str},
}


def features(
    target_date: str,
    warehouse: str,
    lookback_days: int,
    predictions_table: str,
    min_rows: int,
    run_id: str,
    metrics: Output[Metrics],
) -> str:
    """Check the sources, materialize the target date's features; returns the partition.

    Fewer than ``min_rows`` users: nothing is published, the previous partition stays.
    """
    from kfp_prediction.report import reporting_failures

    with reporting_failures("features"):  # tells the bridge: bad input, or retryable
        from kfp_prediction.process_tuning import one_shot_process

        with one_shot_process():
            from kfp_prediction.components import log_metrics
            from kfp_prediction.feature_step import materialize_features

            result = materialize_features(
                target_date,
                warehouse,
                lookback_days,
                run_id,
                predictions_table=predictions_table,
                min_rows=min_rows,
            )
        log_metrics(metrics, result)
    return str(result["features"])


def predict(
    target_date: str,
    warehouse: str,
    features: str,
    model_uri: str,
    model_sha256: str,
    predictions_table: str,
    min_rows: int,
    run_id: str,
    run_name: str,
    metrics: Output[Metrics],
    report: dsl.OutputPath(str),
) -> str:
    """Score every user of the features partition; replace the predictions partition.

    Fewer than ``min_rows`` rows: nothing is published, the previous partition stays.

    Reports the result to kfp-bridge: a ``kfp-bridge-report:`` line at the end of its log,
    and the same JSON as the ``report`` output (Vertex AI serves no logs); on failure, a
    failure report (bad input, or retryable).
    """
    from kfp_prediction.report import reporting_failures

    with reporting_failures("predict"):
        from kfp_prediction.process_tuning import one_shot_process

        with one_shot_process():
            from kfp_prediction.components import log_metrics
            from kfp_prediction.predict_step import predict as run
            from kfp_prediction.report import emit, prediction_result

            result = run(
                target_date,
                warehouse,
                features,
                model_uri,
                model_sha256,
                run_id,
                run_name,
                predictions_table=predictions_table,
                min_rows=min_rows,
            )
        log_metrics(metrics, result)
        with open(report, "w") as out:
            out.write(emit("result", "predict", **prediction_result(result)))
    return str(result["partition"])


def log_metrics(metrics: Any, result: Mapping[str, Any]) -> None:
    """Every number a step returned, as a KFP metric."""
    for key, value in result.items():
        if isinstance(value, int | float):
            metrics.log_metric(key, float(value))


@dataclass(frozen=True)
class StepOptions:
    """Compile-time placement of one step: requests, limits, node selectors."""

    cpu_request: str
    memory_request: str
    memory_limit: str
    cpu_limit: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)


# The features step runs the query inside the warehouse (DuckDB bounded to 1.4 GB here, or a
# BigQuery job) and needs no scikit-learn; the predict step holds the model and the batches.
DEFAULT_STEP_OPTIONS: dict[str, StepOptions] = {
    FEATURES_STEP: StepOptions(cpu_request="1", memory_request="1536M", memory_limit="2G"),
    PREDICT_STEP: StepOptions(cpu_request="2", memory_request="2G", memory_limit="3G"),
}


@dataclass(frozen=True)
class CompileOptions:
    """Compile-time settings: image and placement only. Nothing date-like is compiled in."""

    image: str = DEFAULT_IMAGE
    steps: Mapping[str, StepOptions] = field(default_factory=lambda: dict(DEFAULT_STEP_OPTIONS))
    kubernetes_platform: bool = True  # False: single-document YAML for Vertex AI

    def step(self, name: str) -> StepOptions:
        return self.steps.get(name, DEFAULT_STEP_OPTIONS[name])


class StepComponents(NamedTuple):
    features: Any
    predict: Any


def build_components(options: CompileOptions | None = None) -> StepComponents:
    """The two step components for ``options.image``, checked against the declaration."""
    options = options or CompileOptions()
    built = {}
    for step, fn in ((FEATURES_STEP, features), (PREDICT_STEP, predict)):
        _check_inputs(step, fn)
        built[step] = dsl.component(base_image=options.image, install_kfp_package=False)(fn)
    return StepComponents(**built)


def _check_inputs(step: str, fn: Any) -> None:
    """A component's inputs are its step's declared root parameters plus the extras."""
    declared = {p.name: p.type for p in step_parameters(step)} | STEP_EXTRA_INPUTS[step]
    actual = {
        name: param.annotation
        for name, param in inspect.signature(fn).parameters.items()
        if name not in ("metrics", "report")  # outputs
    }
    if actual != declared:
        raise TypeError(f"component {fn.__name__} has inputs {actual}, declared {declared}")


def place(task: Any, step: str, options: CompileOptions) -> None:
    """Display name, no caching, resources and node selectors of one step's task.

    Caching is off: the cache key of a KFP task is its component spec and input values,
    which do not change when late source data arrives (pipelines/README.md, "Caching").
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r} (steps: {', '.join(STEPS)})")
    placement = options.step(step)
    task.set_display_name(step)
    task.set_caching_options(False)
    task.set_cpu_request(placement.cpu_request)
    if placement.cpu_limit:
        task.set_cpu_limit(placement.cpu_limit)
    task.set_memory_request(placement.memory_request)
    task.set_memory_limit(placement.memory_limit)
    if options.kubernetes_platform:
        from kfp import kubernetes

        kubernetes.set_image_pull_policy(task, "IfNotPresent")
        for key, value in sorted(placement.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
