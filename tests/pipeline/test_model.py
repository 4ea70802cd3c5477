"""The pickled model is code: it is unpickled only after its sha256 matched."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp_prediction.errors import ModelDigestMismatchError, ModelFeatureMismatchError
from kfp_prediction.features import MODEL_FEATURES
from kfp_prediction.model import linear_form, load_verified_model, model_feature_names
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier


class _Trap:
    """Unpickling this creates a file: proof of whether pickle.loads ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_digest_mismatch_refuses_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(_Trap(marker)))
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    expected = "0" * 64
    with pytest.raises(ModelDigestMismatchError) as err:
        load_verified_model(str(model), expected)
    assert actual in str(err.value) and expected in str(err.value)
    assert not marker.exists()
    # and with the right digest it is loaded (the trap fires: the bytes are what ran)
    load_verified_model(str(model), actual.upper())
    assert marker.exists()


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64])
def test_malformed_expected_digest(tmp_path: Path, bad: str) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(1))
    with pytest.raises(ModelDigestMismatchError, match="model_sha256"):
        load_verified_model(str(model), bad)


def test_model_expecting_unknown_features_is_refused() -> None:
    x = pd.DataFrame({"pv_count": [0.0, 1.0, 2.0, 3.0], "favourite_colour": [1.0, 0, 1, 0]})
    model = LogisticRegression().fit(x, [0, 1, 0, 1])
    with pytest.raises(ModelFeatureMismatchError, match="favourite_colour"):
        model_feature_names(model)


def test_model_without_feature_names_is_refused() -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    with pytest.raises(ModelFeatureMismatchError, match="feature_names_in_"):
        model_feature_names(model)


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_uri"):
        load_verified_model(str(tmp_path / "nope.pkl"), "0" * 64)


def _fit(model, columns: list[str]):
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(2.0, 3.0, (300, len(columns))), columns=columns)
    y = (x.iloc[:, 0] - x.iloc[:, 1] + rng.normal(0, 1, 300) > 0).astype(int)
    return model.fit(x, y), x


@pytest.mark.parametrize(
    "steps",
    [
        [StandardScaler()],
        [StandardScaler(with_mean=False)],
        [StandardScaler(with_std=False), StandardScaler()],
        [],
    ],
)
def test_linear_form_reproduces_predict_proba(steps: list) -> None:
    """The numpy scoring path computes what the model's own predict_proba computes."""
    columns = list(MODEL_FEATURES[:4])
    model, x = _fit(make_pipeline(*steps, LogisticRegression()), columns)
    weights, bias = linear_form(model, columns)
    proba = 1.0 / (1.0 + np.exp(-(x.to_numpy() @ weights + bias)))
    np.testing.assert_allclose(proba, model.predict_proba(x)[:, 1], rtol=1e-10)


def test_other_models_are_scored_with_predict_proba() -> None:
    columns = list(MODEL_FEATURES[:4])
    for model in (
        make_pipeline(MinMaxScaler(), LogisticRegression()),
        make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=2)),
    ):
        fitted, _ = _fit(model, columns)
        assert linear_form(fitted, columns) is None
