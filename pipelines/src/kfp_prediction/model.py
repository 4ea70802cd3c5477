"""The pickled model: fetch bytes, verify sha256, only then unpickle; check its features.

A pickle executes code when loaded, so the digest is computed over the very bytes that are
unpickled (no second read that could differ) and compared before ``pickle.loads``.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from typing import Any

import numpy as np

from kfp_prediction.errors import (
    ModelDigestMismatchError,
    ModelFeatureMismatchError,
    PredictionInputError,
)
from kfp_prediction.features import MODEL_FEATURES
from kfp_prediction.warehouse import resolve_local_path

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def read_model_bytes(model_uri: str) -> bytes:
    """Bytes of the model at a local path, ``file://`` or ``gs://`` URI."""
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise PredictionInputError("model_uri is required")
    if model_uri.startswith("gs://"):
        from google.cloud import storage

        bucket, _, name = model_uri.removeprefix("gs://").partition("/")
        try:
            return storage.Client().bucket(bucket).blob(name).download_as_bytes()
        except Exception as exc:
            raise PredictionInputError(f"model_uri {model_uri!r} cannot be read: {exc}") from exc
    path = resolve_local_path(model_uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PredictionInputError(f"model_uri {model_uri!r} cannot be read: {exc}") from exc


def normalize_sha256(expected: str) -> str:
    value = (expected or "").strip().lower()
    if not _SHA256_RE.match(value):
        raise ModelDigestMismatchError(
            f"model_sha256 must be 64 hexadecimal characters, got {expected!r}"
        )
    return value


def verify_model_bytes(data: bytes, expected_sha256: str, model_uri: str) -> str:
    """Return the digest if it matches the expected one, else refuse with both digests."""
    expected = normalize_sha256(expected_sha256)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelDigestMismatchError(
            f"model {model_uri!r} has sha256 {actual}, expected {expected}; refusing to unpickle"
        )
    return actual


def load_verified_model(model_uri: str, expected_sha256: str) -> tuple[Any, str]:
    """Unpickle the model only after its digest matched; returns (model, digest)."""
    data = read_model_bytes(model_uri)
    digest = verify_model_bytes(data, expected_sha256, model_uri)
    return pickle.loads(data), digest


def model_feature_names(model: Any) -> list[str]:
    """Features the model expects, all of which the pipeline must produce."""
    names = getattr(model, "feature_names_in_", None)
    if names is None or not hasattr(model, "predict_proba"):
        raise ModelFeatureMismatchError(
            "model must be a fitted scikit-learn classifier with feature_names_in_ and "
            f"predict_proba; got {type(model).__name__}"
        )
    classes = getattr(model, "classes_", None)
    if classes is None or len(classes) != 2:
        raise ModelFeatureMismatchError(
            "model must be a binary classifier (score = probability of the second class); "
            f"got classes {classes!r}"
        )
    names = [str(n) for n in names]
    missing = [n for n in names if n not in MODEL_FEATURES]
    if missing:
        raise ModelFeatureMismatchError(
            f"model expects features the pipeline does not produce: {', '.join(missing)} "
            f"(produced: {', '.join(MODEL_FEATURES)})"
        )
    return names


def linear_form(model: Any, feature_names: list[str]) -> tuple[np.ndarray, float] | None:
    """Weights ``w`` and bias ``b`` with ``logit = x @ w + b``, when the model is linear.

    Covers the demo model's shape: a scikit-learn ``Pipeline`` of ``StandardScaler`` steps
    ending in a binary ``LogisticRegression`` (or that classifier alone). Folding the scaler
    into the weights lets the pipeline score the (user, content) grid with broadcasting numpy
    instead of materialising U x C feature rows for ``predict_proba``; the probability of the
    second class is ``1 / (1 + exp(-logit))``, exactly what ``predict_proba`` computes. Any
    other model returns None and is scored with ``predict_proba``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [step for step in steps if step not in (None, "passthrough")]
    *scalers, final = steps
    if type(final) is not LogisticRegression or any(type(s) is not StandardScaler for s in scalers):
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
