"""The ``daily-prediction`` KFP pipeline: a features step, then a predict step.

The root parameters come from ``parameters.ROOT_PARAMETERS`` (the function's signature and
docstring are built from it); the components and their placement from ``components``. The
features step materializes the target date's features inside the warehouse and hands the
predict step a table reference, so no million-row artifact passes through KFP storage.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl

from kfp_prediction import parameters
from kfp_prediction.components import CompileOptions, build_components, place
from kfp_prediction.parameters import FEATURES_STEP, PREDICT_STEP, step_arguments

PIPELINE_NAME = "daily-prediction"
DESCRIPTION = "Daily batch prediction: best content per user for one JST target date."


def build_pipeline(options: CompileOptions | None = None) -> Callable:
    """The pipeline function for these compile options (image, placement, platform section)."""
    options = options or CompileOptions()
    ops = build_components(options)
    signature = parameters.signature(str)

    def daily_prediction(*args, **kwargs):
        # KFP calls the pipeline function with one channel per root parameter, by position.
        values = signature.bind(*args, **kwargs).arguments
        features = ops.features(
            **step_arguments(FEATURES_STEP, values), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
        )
        place(features, FEATURES_STEP, options)
        predict = ops.predict(
            **step_arguments(PREDICT_STEP, values),
            features=features.outputs["Output"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        place(predict, PREDICT_STEP, options)
        return predict.outputs["Output"]

    daily_prediction.__signature__ = signature
    daily_prediction.__doc__ = parameters.docstring(DESCRIPTION)
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(daily_prediction)
