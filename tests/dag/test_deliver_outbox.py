"""The delivery DAG's outbox file: replaced whole, by one writer at a time or by several."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def deliver(tmp_path, monkeypatch):
    monkeypatch.setenv("DELIVER_PREDICTIONS_OUTBOX", str(tmp_path / "outbox"))
    return runpy.run_path(str(REPO / "dags" / "deliver_predictions.py"))


def _table(*user_ids: int) -> pa.Table:
    n = len(user_ids)
    return pa.table({"user_id": list(user_ids), "content_id": ["c1"] * n, "score": [0.5] * n})


class _Table:
    """A table whose rows are read while something else happens (``during``)."""

    def __init__(self, rows: pa.Table, during):
        self.rows, self.during = rows, during

    def select(self, columns):
        return self

    def to_pylist(self):
        self.during()
        return self.rows.to_pylist()


def _users(path: Path) -> list[int]:
    return [json.loads(line)["user_id"] for line in path.read_text().splitlines()]


def test_the_outbox_holds_one_message_per_user(deliver):
    path = deliver["write_outbox"](_table(1, 2), "2026-11-30")
    assert path.name == "2026-11-30.jsonl"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the messaging side's user
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"target_date": "2026-11-30", "user_id": 1, "content_id": "c1", "score": 0.5},
        {"target_date": "2026-11-30", "user_id": 2, "content_id": "c1", "score": 0.5},
    ]


def test_two_writers_of_one_date_do_not_share_a_temporary_file(deliver):
    write = deliver["write_outbox"]
    # a second run writes the same date while the first is still writing
    path = write(_Table(_table(1, 2), lambda: write(_table(7), "2026-11-30")), "2026-11-30")
    assert _users(path) == [1, 2]  # the last to finish wins, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["2026-11-30.jsonl"]


def test_a_failed_write_keeps_the_previous_outbox_and_leaves_no_temporary(deliver):
    write = deliver["write_outbox"]
    path = write(_table(1, 2), "2026-11-30")

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write(_Table(_table(3), broken), "2026-11-30")
    assert _users(path) == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["2026-11-30.jsonl"]
