"""The pickled model is code: it is unpickled only after its sha256 matched."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from kfp_prediction.demo_data import CONTENTS
from kfp_prediction.errors import (
    ModelContractError,
    ModelDigestMismatchError,
    ModelFeatureMismatchError,
    ModelLoadError,
)
from kfp_prediction.model import load_verified_model
from kfp_prediction.scoring import (
    MODEL_FEATURES,
    USER_FEATURES,
    ScoringModel,
    linear_form,
)
from pipeline_support import build_candidates
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
        ScoringModel.check(model, CONTENTS)


def test_model_without_feature_names_is_refused() -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    with pytest.raises(ModelContractError, match="feature_names_in_"):
        ScoringModel.check(model, CONTENTS)


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


def _users(n: int = 30) -> pa.Table:
    """Feature rows as the features step writes them (the columns scoring reads)."""
    rng = np.random.default_rng(5)
    columns = {
        "user_id": pa.array(np.arange(1, n + 1)),
        "member_rank": pa.array(rng.choice(["regular", "gold"], n)),
        "age_band": pa.array(rng.choice(["20s", "40s"], n)),
    }
    numeric = ["tenure_days", "pv_count", "pv_app", "days_since_last_view", "purchase_count"]
    numeric += ["purchase_amount", "days_since_last_purchase"]
    numeric += [
        f"{p}_{c}"
        for p in ("pv", "buy")
        for c in ("tops", "bottoms", "outerwear", "shoes", "bags", "accessories")
    ]
    for name in numeric:
        columns[name] = pa.array(rng.integers(0, 20, n).astype(np.float64))
    return pa.table(columns)


def test_content_model_scores_every_content_at_once() -> None:
    """A classifier with one class per content id, over the user's own features."""
    from sklearn.ensemble import RandomForestClassifier

    users = _users()
    x = pd.DataFrame(
        np.column_stack([build_candidates(users, CONTENTS, USER_FEATURES).iloc[::8]]),
        columns=list(USER_FEATURES),
    )
    content_ids = CONTENTS.column("content_id").to_pylist()
    y = [content_ids[i % 3 + 2] for i in range(len(x))]  # three of the eight contents
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    scoring = ScoringModel.check(model, CONTENTS)
    assert scoring.kind == "content"
    best, score = scoring.score(users, CONTENTS)
    proba = model.predict_proba(x)
    np.testing.assert_allclose(score, proba.max(axis=1))
    chosen = np.asarray(content_ids)[best]
    assert list(chosen) == list(model.classes_[proba.argmax(axis=1)])


def test_content_model_with_unknown_classes_is_refused() -> None:
    x = pd.DataFrame({"pv_count": [0.0, 1, 2, 3, 4, 5]})
    model = LogisticRegression().fit(x, ["coupon_tops", "gone_a", "gone_b"] * 2)
    with pytest.raises(ModelContractError, match="gone_a, gone_b"):
        ScoringModel.check(model, CONTENTS)


def test_content_model_asking_for_pair_features_is_refused() -> None:
    x = pd.DataFrame({"discount_rate": [0.0, 1, 2, 3, 4, 5]})
    model = LogisticRegression().fit(x, ["coupon_tops", "push_sale", "newsletter_weekly"] * 2)
    with pytest.raises(ModelFeatureMismatchError, match=r"content model.*discount_rate"):
        ScoringModel.check(model, CONTENTS)


def test_multiclass_model_of_other_labels_is_refused() -> None:
    x = pd.DataFrame({"pv_count": [0.0, 1, 2, 3, 4, 5]})
    model = LogisticRegression().fit(x, [0, 1, 2] * 2)
    with pytest.raises(ModelContractError, match="binary classifier"):
        ScoringModel.check(model, CONTENTS)


class _WrongWidth:
    """Looks like a binary classifier, but predict_proba answers one column."""

    feature_names_in_ = np.array(["pv_count"], dtype=object)
    classes_ = np.array([0, 1])

    def predict_proba(self, x):
        return np.ones((len(x), 1))


class _OutOfRange(_WrongWidth):
    def predict_proba(self, x):
        return np.full((len(x), 2), 1.5)


@pytest.mark.parametrize(
    ("model", "match"),
    [(_WrongWidth(), "returned shape"), (_OutOfRange(), "outside \\[0, 1\\]")],
)
def test_model_output_is_checked(model, match: str) -> None:
    scoring = ScoringModel.check(model, CONTENTS)
    with pytest.raises(ModelContractError, match=match):
        scoring.score(_users(3), CONTENTS)


def test_unpicklable_model_is_named(tmp_path: Path) -> None:
    blob = pickle.dumps(_WrongWidth(), protocol=0).replace(b"test_model", b"no_such_module_x")
    path = tmp_path / "model.pkl"
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    with pytest.raises(ModelLoadError, match="no_such_module_x"):
        load_verified_model(str(path), digest)


@pytest.mark.parametrize("model_kind", ["hgb", "forest"])
def test_tree_models_are_scored_in_their_own_dtype(model_kind: str) -> None:
    """predict_proba in chunks of the model's own float type gives the one-call scores."""
    from kfp_prediction import scoring as scoring_module
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    users = _users(50)
    x = build_candidates(users, CONTENTS, MODEL_FEATURES)
    y = (x["pv_count"] * x["discount_rate"] > 1).astype(int)
    model = (
        HistGradientBoostingClassifier(max_iter=5, random_state=0)
        if model_kind == "hgb"
        else RandomForestClassifier(n_estimators=3, random_state=0)
    ).fit(x, y)
    scoring = ScoringModel.check(model, CONTENTS)
    assert scoring.dtype == (np.float64 if model_kind == "hgb" else np.float32)
    old = scoring_module.PREDICT_ROWS
    scoring_module.PREDICT_ROWS = 7  # many chunks
    try:
        best, score = scoring.score(users, CONTENTS)
    finally:
        scoring_module.PREDICT_ROWS = old
    grid = model.predict_proba(x)[:, 1].reshape(len(users), len(CONTENTS))
    np.testing.assert_array_equal(best, grid.argmax(axis=1))
    np.testing.assert_allclose(score, grid.max(axis=1))
