"""The ``daily-prediction`` KFP pipeline: one component around ``steps.predict_and_write``.

Why one component: every KFP component is a fresh process (a pod in the cloud) that imports
kfp, pandas and scikit-learn again and hands its outputs over as artifacts. At 1M users that
start-up alone is a large share of the raw work, and the target is 1.5x the raw floor; input
validation therefore runs first inside the same process, before any feature query result is
used and long before anything is written (see pipelines/README.md).

The component function body only imports from the ``kfp_prediction`` package, which the
component image (pipelines/Dockerfile) and ``.venv-pipeline`` both have installed, so there is
no ``packages_to_install`` and no pip at run time.
"""

# No "from __future__ import annotations": KFP reads the component annotations as types.

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kfp import dsl
from kfp.dsl import Metrics, Output

PIPELINE_NAME = "daily-prediction"
DEFAULT_IMAGE = "kfp-prediction:0.1.0"
DEFAULT_WAREHOUSE = "var/warehouse"
DEFAULT_MODEL_URI = "var/models/demo_model.pkl"
DEFAULT_LOOKBACK_DAYS = 28


def predict_and_write(
    target_date: str,
    warehouse: str,
    model_uri: str,
    model_sha256: str,
    lookback_days: int,
    run_id: str,
    run_name: str,
    metrics: Output[Metrics],
) -> str:
    """Check inputs, build features, score every content per user, replace the partition."""
    from kfp_prediction.process import one_shot_gc

    with one_shot_gc():
        from kfp_prediction.steps import predict_and_write as run

        result = run(
            target_date, warehouse, model_uri, model_sha256, lookback_days, run_id, run_name
        )
    for key, value in result.items():
        if isinstance(value, int | float):
            metrics.log_metric(key, float(value))
    return str(result["partition"])


@dataclass(frozen=True)
class CompileOptions:
    """Compile-time settings: image and placement only. Nothing date-like is compiled in."""

    image: str = DEFAULT_IMAGE
    node_selector: Mapping[str, str] = field(default_factory=dict)
    kubernetes_platform: bool = True  # False: single-document YAML for Vertex AI
    cpu_request: str = "2"
    memory_request: str = "3G"
    memory_limit: str = "4G"


def build_pipeline(options: CompileOptions | None = None) -> Callable:
    """The pipeline function for these compile options (image, placement, platform section)."""
    options = options or CompileOptions()
    predict_op = dsl.component(base_image=options.image, install_kfp_package=False)(
        predict_and_write
    )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Daily batch prediction: best content per user for one JST target date.",
    )
    def daily_prediction(
        target_date: str,
        model_sha256: str,
        warehouse: str = DEFAULT_WAREHOUSE,
        model_uri: str = DEFAULT_MODEL_URI,
        lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    ) -> str:
        task = predict_op(
            target_date=target_date,
            warehouse=warehouse,
            model_uri=model_uri,
            model_sha256=model_sha256,
            lookback_days=lookback_days,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        task.set_display_name("predict-and-write")
        # A re-run of a date must recompute and replace its partition, never hit a cache.
        task.set_caching_options(False)
        task.set_cpu_request(options.cpu_request)
        task.set_memory_request(options.memory_request)
        task.set_memory_limit(options.memory_limit)
        if options.kubernetes_platform:
            from kfp import kubernetes

            kubernetes.set_image_pull_policy(task, "IfNotPresent")
            for key, value in sorted(options.node_selector.items()):
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
        return task.outputs["Output"]

    return daily_prediction
