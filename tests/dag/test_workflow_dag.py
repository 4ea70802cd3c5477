"""prediction_app.workflow_dag in-process: what an entry's fields become on the DAG and task."""

from __future__ import annotations

from pathlib import Path

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


def test_the_row_floor_reaches_the_task_parameters_and_the_gate(registry):  # noqa: F811
    """output.checks.min_rows is passed to the pipeline (its predict step publishes nothing
    below it) and is the gate's floor too; unset, the pipeline keeps its default."""
    task = _dag(registry, "floored", output__checks={"min_rows": 1000}).get_task("predict")
    assert task.parameters["min_rows"] == 1000
    assert task.on_result.min_rows == 1000
    unset = _dag(registry, "unset").get_task("predict")
    assert "min_rows" not in unset.parameters and unset.on_result.min_rows is None


# The data-quality gate (the task's on_result): tests/dag/test_partition_gate.py.
