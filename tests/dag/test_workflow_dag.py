"""prediction_app.workflow_dag in-process: what an entry's fields become on the DAG and task."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_bridge.results import RunResult
from prediction_app import workflow_dag
from prediction_app.registry import load_registry
from prediction_app.workflow_dag import build_dag
from tests.dag.test_registry import copy_entry, registry  # noqa: F401 (fixture)


def _dag(registry_dir: Path, name: str, **changes):
    copy_entry(registry_dir, name, **changes)
    loaded = load_registry(registry_dir)
    assert loaded.errors == {}, loaded.error_message()
    ((path, workflow),) = [(p, w) for p, w in loaded.workflows if w.name == name]
    return build_dag(workflow, path)


def test_uploaded_pipeline_identity_and_operations(registry):  # noqa: F811
    dag = _dag(
        registry,
        "uploaded",
        pipeline={"pipeline_id": "p-123", "version_id": "v-7"},
        identity={"kfp_conn_id": "kfp_recommendation", "service_account": "reco@p.iam"},
        operations={"retries": 1, "execution_timeout_minutes": 30, "poll_seconds": 15},
        output__warehouse={"default": "bigquery://acme/reco_morning"},
        output__inputs=["users"],
    )
    task = dag.get_task("predict")
    assert (task.pipeline_file, task.pipeline_id, task.pipeline_version_id) == (
        None,
        "p-123",
        "v-7",
    )
    assert (task.kfp_conn_id, task.service_account) == ("kfp_recommendation", "reco@p.iam")
    assert task.retries == 1 and task.execution_timeout.total_seconds() == 1800
    assert task.policy.poll_interval == 15
    assert task.parameters["warehouse"] == "bigquery://acme/reco_morning"
    assert [a.uri for a in task.outlets] == ["bigquery://acme/reco_morning/predictions"]
    assert [a.uri for a in task.inlets] == ["bigquery://acme/reco_morning/users"]


def test_environment_overrides_operations(registry, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ALPHA_POLL_SECONDS", "2")
    monkeypatch.setenv("ALPHA_RETRY_DELAY_SECONDS", "5")
    dag = _dag(registry, "alpha")
    task = dag.get_task("predict")
    assert task.policy.poll_interval == 2 and task.retry_delay.total_seconds() == 5


@pytest.mark.parametrize(("rows", "fails"), [(3, False), (1, False), (0, True), (None, True)])
def test_min_rows_gate_runs_before_the_asset_event(registry, monkeypatch, rows, fails):  # noqa: F811
    recorded = []
    monkeypatch.setattr(
        workflow_dag, "record_result", lambda result, context: recorded.append(result) or []
    )
    dag = _dag(registry, "checked", output__checks={"min_rows": 1})
    task = dag.get_task("predict")
    assert task.on_result == workflow_dag.ResultGate(min_rows=1)
    result = RunResult("run-1", None, "predict", {} if rows is None else {"rows": rows})
    if fails:
        # ValueError: the operator fails the task without retries (the same report again)
        with pytest.raises(ValueError, match=r"check min_rows=1 failed: task 'predict' of Kub"):
            task.on_result(result, {})
        assert recorded == []  # no asset event for a partition that failed its check
    else:
        assert task.on_result(result, {}) == []
        assert recorded == [result]


def test_model_gate_refuses_a_partition_of_another_model(registry, monkeypatch):  # noqa: F811
    recorded = []
    monkeypatch.setattr(
        workflow_dag, "record_result", lambda result, context: recorded.append(result) or []
    )
    gate = _dag(registry, "checked").get_task("predict").on_result

    class Task:
        parameters = {"model_sha256": "A" * 64}

    same = RunResult("run-1", None, "predict", {"rows": 5, "model_sha256": "a" * 64})
    assert gate(same, {"task": Task()}) == [] and recorded == [same]
    other = RunResult("run-2", None, "predict", {"rows": 5, "model_sha256": "b" * 64})
    refused = r"check model_sha256 failed: .* model b{64}, the task was given A{64}"
    with pytest.raises(ValueError, match=refused):
        gate(other, {"task": Task()})
    assert recorded == [same]
