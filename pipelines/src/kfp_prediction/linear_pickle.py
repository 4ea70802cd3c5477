"""A linear model's fitted weights, read from its pickle without importing scikit-learn.

Unpickling any scikit-learn model imports scikit-learn, which imports pandas and
``scipy.stats``: ~0.65 s of every predict step, a quarter of the whole run at 1M users
(benchmarks/bench_pipeline.py). The linear branch scores with numpy from the fitted weights
alone (``scoring.linear_form``), so scikit-learn would serve only the other branch.

``read_linear_model`` unpickles with a restricted ``Unpickler``: the three ``sklearn`` classes
of that shape become stand-ins that only keep their state, numpy's array reconstructors are the
real ones, and any other global stops the attempt. The result is used only when it is exactly
the shape the numpy path folds (``StandardScaler`` steps then a binary ``LogisticRegression``,
pickled by the installed scikit-learn version) and passes ``ScoringModel.check``; otherwise
the caller unpickles for real, so every other model, and every error message, is what it was.
The bytes are the ones whose sha256 was verified (``model.read_verified_model``).
"""

from __future__ import annotations

import io
import pickle
from functools import cache
from typing import Any

from kfp_prediction.scoring import (
    LOGISTIC_REGRESSION,
    PIPELINE,
    STANDARD_SCALER,
    ScoringModel,
    class_path,
)

STAND_IN_CLASSES = frozenset({PIPELINE, STANDARD_SCALER, LOGISTIC_REGRESSION})
# What a pickled numpy array (or scalar) needs, under numpy 2's and numpy 1's module names;
# protocols below 3 carry bytes as latin-1 text through _codecs.encode.
DATA_GLOBALS = frozenset(
    {
        "_codecs.encode",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
    }
)


class StandIn:
    """A scikit-learn estimator's pickled state, without its class."""

    stand_in_for = ""  # the class's path (scoring.class_path reads it)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def feature_names_in_(self) -> Any:  # what Pipeline and the estimators answer
        return self._delegate(0, "feature_names_in_")

    @property
    def classes_(self) -> Any:
        return self._delegate(-1, "classes_")

    def predict_proba(self, _: Any) -> Any:  # the contract asks for it; never called
        raise TypeError(f"{self.stand_in_for} read from its pickle scores with numpy only")

    def _delegate(self, step: int, name: str) -> Any:
        if name in self.__dict__:
            return self.__dict__[name]
        if self.stand_in_for == PIPELINE:
            return getattr(self.__dict__["steps"][step][1], name)
        raise AttributeError(name)


class _NotLinear(Exception):
    """The pickle holds something the stand-ins do not cover."""


@cache
def _stand_in_class(path: str) -> type[StandIn]:
    return type(path.rpartition(".")[2], (StandIn,), {"stand_in_for": path})


class _StandInUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))

    def find_class(self, module: str, name: str) -> Any:
        path = f"{module}.{name}"
        if path in STAND_IN_CLASSES:
            return _stand_in_class(path)
        if path in DATA_GLOBALS:
            return super().find_class(module, name)
        raise _NotLinear(path)


def read_linear_model(data: bytes, contents: Any) -> ScoringModel | None:
    """The checked numpy scoring of a linear model's pickle, or None: unpickle it for real."""
    try:
        model = _StandInUnpickler(data).load()
        if class_path(model) not in STAND_IN_CLASSES or not _pickled_by_installed_version(model):
            return None
        scoring = ScoringModel.check(model, contents)
    except Exception:  # _NotLinear, or anything the real unpickling and check will explain
        return None
    return scoring if scoring.linear is not None else None


def _pickled_by_installed_version(model: StandIn) -> bool:
    """scikit-learn warns about a pickle of another version when it loads one; so do we, by
    leaving such a model to it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("scikit-learn")
    except PackageNotFoundError:
        return False
    parts = [model] + [step for _, step in model.__dict__.get("steps", [])]
    return all(
        getattr(part, "_sklearn_version", None) == installed
        for part in parts
        if isinstance(part, StandIn)
    )
