"""The pipeline's root parameters, declared once.

Everything else follows from ``ROOT_PARAMETERS``: the pipeline function's signature and
docstring (so the compiled YAML's ``inputDefinitions``, descriptions included), which step
receives which parameter, ``local_run``'s command line, and the check that each component's
inputs are exactly the declared ones of its step (``components.build_components``). The compiled
YAML is the Airflow side's source of truth; a DAG test compares its ``parameters`` with it.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfp_prediction.errors import MinRowsError

FEATURES_STEP = "features"
PREDICT_STEP = "predict"
STEPS = (FEATURES_STEP, PREDICT_STEP)
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Parameter:
    """One root parameter: name, type, default (``REQUIRED``: none), meaning, consumers."""

    name: str
    type: type
    description: str
    steps: tuple[str, ...]
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


ROOT_PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "target_date",
        str,
        "JST business date YYYY-MM-DD to predict for; required, no default (never compiled in).",
        STEPS,
    ),
    Parameter(
        "model_sha256",
        str,
        "Expected sha256 (hex) of the model file; the model is unpickled only if it matches.",
        (PREDICT_STEP,),
    ),
    Parameter(
        "warehouse",
        str,
        "Local directory or file://PATH, or bigquery://PROJECT/DATASET[?location=REGION].",
        STEPS,
        "var/warehouse",
    ),
    Parameter(
        "model_uri",
        str,
        "The pickled model: local path, file:// or gs://BUCKET/OBJECT.",
        (PREDICT_STEP,),
        "var/models/demo_model.pkl",
    ),
    Parameter(
        "lookback_days",
        int,
        "Length of the feature window in JST days before the target date (1..366).",
        (FEATURES_STEP,),
        28,
    ),
    Parameter(
        "predictions_table",
        str,
        "Output table of this workflow (and its own features table): a lower-case identifier; "
        "workflows sharing a warehouse each write their own.",
        STEPS,
        "predictions",
    ),
    Parameter(
        "min_rows",
        int,
        "Row floor of the features and predictions partitions (one row per user registered "
        "before the target date in both): a run with fewer users fails and keeps the date's "
        "previous partitions (1: only an empty result is refused).",
        STEPS,
        1,
    ),
)
DEFAULTS: dict[str, Any] = {p.name: p.default for p in ROOT_PARAMETERS if not p.required}


def step_parameters(step: str) -> tuple[Parameter, ...]:
    """The root parameters ``step`` receives, in declaration order."""
    return tuple(p for p in ROOT_PARAMETERS if step in p.steps)


def step_arguments(step: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of root parameter values (or pipeline channels) that ``step`` receives."""
    return {p.name: values[p.name] for p in step_parameters(step)}


def signature(
    return_annotation: Any = inspect.Signature.empty,
    params: tuple[Parameter, ...] = ROOT_PARAMETERS,
) -> inspect.Signature:
    """The pipeline function's signature: required parameters first, then the defaulted."""
    ordered = sorted(params, key=lambda p: not p.required)
    return inspect.Signature(
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=p.default,
                annotation=p.type,
            )
            for p in ordered
        ],
        return_annotation=return_annotation,
    )


def docstring(summary: str, params: tuple[Parameter, ...] = ROOT_PARAMETERS) -> str:
    """``summary`` plus a Google-style ``Args:`` section; KFP turns it into descriptions."""
    lines = [summary, "", "Args:"]
    lines += [f"    {p.name}: {p.description}" for p in params]
    return "\n".join(lines)


def add_arguments(
    parser: argparse.ArgumentParser,
    optional: tuple[str, ...] = (),
    params: tuple[Parameter, ...] = ROOT_PARAMETERS,
) -> None:
    """One command-line option per root parameter; ``optional`` ones may be left out."""
    for p in params:
        kwargs: dict[str, Any] = {"type": p.type, "help": p.description}
        if p.required and p.name not in optional:
            kwargs["required"] = True
        else:
            kwargs["default"] = None if p.required else p.default
        parser.add_argument(p.flag, dest=p.name, **kwargs)


def check_min_rows(min_rows: object) -> int:
    """``min_rows`` is a non-negative integer (checked before anything is read)."""
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise MinRowsError(f"min_rows must be a non-negative integer, got {min_rows!r}")
    return min_rows
