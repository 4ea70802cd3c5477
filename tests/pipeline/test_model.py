"""The pickled model is code: it is unpickled only after its sha256 matched."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp_prediction.errors import ModelDigestMismatchError, ModelFeatureMismatchError
from kfp_prediction.model import load_verified_model, model_feature_names
from sklearn.linear_model import LogisticRegression


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
