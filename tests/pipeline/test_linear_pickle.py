"""A linear model's weights read from its pickle without scikit-learn: the same scoring as the
model itself, or None so that the model is unpickled for real."""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path

import numpy as np
import pytest
from kfp_prediction.demo_data import CONTENTS
from kfp_prediction.linear_pickle import read_linear_model
from kfp_prediction.scoring import MODEL_FEATURES, ScoringModel, linear_form
from pipeline_support import build_candidates
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from test_model import _Trap, _users


def _fitted(model):
    """``model`` fitted on candidate rows of the pipeline's own features."""
    users = _users(60)
    x = build_candidates(users, CONTENTS, MODEL_FEATURES)
    y = (x["pv_count"] * (x["discount_rate"] + 0.1) > x["pv_count"].median() * 0.2).astype(int)
    return model.fit(x, y), users, x


@pytest.mark.parametrize(
    "steps",
    [
        [StandardScaler()],
        [StandardScaler(with_mean=False)],
        [StandardScaler(with_std=False), StandardScaler()],
        [],
    ],
)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_linear_model_from_its_pickle_scores_as_the_model_does(steps: list, protocol: int) -> None:
    model, users, x = _fitted(make_pipeline(*steps, LogisticRegression(max_iter=500)))
    scoring = read_linear_model(pickle.dumps(model, protocol=protocol), CONTENTS)
    assert scoring is not None and scoring.kind == "pair"
    real = ScoringModel.check(model, CONTENTS)
    assert scoring.feature_names == real.feature_names
    np.testing.assert_array_equal(scoring.linear[0], real.linear[0])
    assert scoring.linear[1] == real.linear[1]
    best, score = scoring.score(users, CONTENTS)
    grid = model.predict_proba(x)[:, 1].reshape(len(users), len(CONTENTS))
    np.testing.assert_array_equal(best, grid.argmax(axis=1))
    np.testing.assert_allclose(score, grid.max(axis=1), rtol=1e-6)  # float32 features


def test_a_bare_logistic_regression_is_read_too() -> None:
    model, _, _ = _fitted(LogisticRegression(max_iter=500))
    assert read_linear_model(pickle.dumps(model), CONTENTS) is not None


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)),
        HistGradientBoostingClassifier(max_iter=3),
    ],
    ids=["other-scaler", "tree"],
)
def test_other_models_are_left_to_the_real_unpickling(model) -> None:
    fitted, _, _ = _fitted(model)
    assert read_linear_model(pickle.dumps(fitted), CONTENTS) is None


def test_a_binary_multinomial_model_is_not_folded() -> None:
    """Its predict_proba is a softmax over (-logit, logit), not the logistic of the logit."""
    model, users, x = _fitted(LogisticRegression(max_iter=500))
    model.multi_class = "multinomial"
    assert linear_form(model, list(MODEL_FEATURES)) is None
    assert read_linear_model(pickle.dumps(model), CONTENTS) is None
    _, score = ScoringModel.check(model, CONTENTS).score(users, CONTENTS)
    grid = model.predict_proba(x)[:, 1].reshape(len(users), len(CONTENTS))
    np.testing.assert_allclose(score, grid.max(axis=1))


def test_a_pickle_of_another_scikit_learn_version_is_left_to_scikit_learn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """scikit-learn warns when it loads another version's pickle; the real unpickling does."""
    model, _, _ = _fitted(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)))
    data = pickle.dumps(model)
    assert read_linear_model(data, CONTENTS) is not None
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1")
    assert read_linear_model(data, CONTENTS) is None


def test_no_other_code_runs_while_the_weights_are_read(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert read_linear_model(pickle.dumps(_Trap(marker)), CONTENTS) is None
    assert not marker.exists()


def test_a_linear_model_off_the_contract_gets_the_real_models_error() -> None:
    """Not the stand-in's: the caller unpickles and checks the real model."""
    model, _, _ = _fitted(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)))
    model.steps[-1][1].classes_ = np.array([0, 1, 2])  # not binary
    assert read_linear_model(pickle.dumps(model), CONTENTS) is None


def test_a_malformed_pipeline_is_left_to_the_real_unpickling() -> None:
    model, _, _ = _fitted(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)))
    model.steps = [("only-a-name",)]  # not (name, estimator) pairs
    assert read_linear_model(pickle.dumps(model), CONTENTS) is None
