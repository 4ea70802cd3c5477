"""Constants and types shared by the pipeline tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from kfp_prediction.demo_data import DemoSpec
from kfp_prediction.scoring import PAIR_FEATURES, candidate_matrix

END_DATE = dt.date(2026, 11, 26)  # last JST day with events
TARGET_DATE = "2026-11-27"
SMALL = DemoSpec(users=400, page_views=12_000, days=40, end_date=END_DATE, seed=11)


@dataclass(frozen=True)
class Model:
    path: Path
    sha256: str

    @property
    def uri(self) -> str:
        return str(self.path)


def build_candidates(users, contents, feature_names=PAIR_FEATURES):
    """``candidate_matrix`` as a DataFrame with the feature names (what the tests read)."""
    import pandas as pd

    matrix = candidate_matrix(users, contents, feature_names)
    return pd.DataFrame(matrix, columns=list(feature_names), copy=False)
