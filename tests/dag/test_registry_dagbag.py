"""The registry under real Airflow 3.3: DagBag with good and bad entries, the how-to, zones.

Each test runs a DagBag in a subprocess with its own AIRFLOW_HOME (tests/dag/helpers.py)
and ``PREDICTION_WORKFLOWS_DIR`` pointing at a registry the test writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.dag.helpers import REPO
from tests.dag.test_registry import copy_entry

BAG = """
import json, sys, warnings
warnings.simplefilter("ignore")
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
"""


def dagbag(airflow_env, dags: Path, registry: Path, code: str = "", **extra_env) -> dict:
    script = BAG.replace("sys.argv[1]", repr(str(dags))) + textwrap.dedent(code)
    return airflow_env.python_json(
        script, extra_env={"PREDICTION_WORKFLOWS_DIR": str(registry), **extra_env}
    )


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    """A dags folder holding only the registry's DAG file (as the e2e tests link it)."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "prediction_workflows.py").symlink_to(REPO / "dags" / "prediction_workflows.py")
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(REPO / "workflows" / "teams.yaml", folder / "teams.yaml")
    return folder


def test_three_workflows_one_bad_two_dags_and_one_import_error(airflow_env, dags, registry):
    copy_entry(registry, "alpha")
    copy_entry(
        registry,
        "beta",
        schedule__cron="0 9 * * *",
        parameters__lookback_days=7,
        identity__kfp_conn_id="kfp_recommendation",
    )
    # An hourly rule is refused at load: the pipeline writes YYYY-MM-DD partitions only.
    bad = copy_entry(registry, "gamma", target_date__partition="hourly")
    info = dagbag(
        airflow_env,
        dags,
        registry,
        """
        out = {"dags": sorted(bag.dag_ids), "errors": bag.import_errors}
        for dag_id in bag.dag_ids:  # what the dag-processor stores: serializable
            DagSerialization.to_dict(bag.get_dag(dag_id))
        beta = bag.get_dag("beta").get_task("predict")
        out["beta"] = {"conn": beta.kfp_conn_id, "lookback": beta.parameters["lookback_days"]}
        print(json.dumps(out))
        """,
    )
    assert info["dags"] == ["alpha", "beta"]
    assert info["beta"] == {"conn": "kfp_recommendation", "lookback": 7}
    ((path, message),) = info["errors"].items()
    assert path.endswith("prediction_workflows.py")
    assert (
        f"{bad}: workflow 'gamma': target_date.partition: 'hourly' is not allowed; allowed: 'daily'"
    ) in message
    assert "alpha" not in message and "beta" not in message


def test_repository_dags_folder_has_no_import_error(airflow_env):
    info = airflow_env.python_json(
        BAG.replace("sys.argv[1]", repr("dags"))
        + 'print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors}))'
    )
    assert info == {
        "dags": ["daily_prediction", "deliver_predictions", "morning_ranking"],
        "errors": {},
    }


def test_workflow_in_its_own_zone_renders_its_date_and_names_runs_after_it(
    airflow_env, dags, registry
):
    copy_entry(
        registry,
        "eastern",
        schedule={"cron": "15 * * * *", "timezone": "UTC"},
        target_date={"timezone": "America/New_York"},
        parameters__target_date="{{ target_date(dag_run) }}",
    )
    info = dagbag(
        airflow_env,
        dags,
        registry,
        """
        import pendulum
        from airflow.utils.types import DagRunType
        dag = bag.get_dag("eastern")
        assert not bag.import_errors, bag.import_errors
        scheduler = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        run_after = pendulum.datetime(2026, 12, 1, 3, 15, tz="UTC")  # 22:15 EST on Nov 30
        macro = dag.user_defined_macros["target_date"]
        print(json.dumps({
            "run_id": scheduler.timetable.generate_run_id(
                run_type=DagRunType.SCHEDULED, run_after=run_after, data_interval=None
            ),
            "rendered": macro({"logical_date": run_after}),
            "run_key": dag.user_defined_macros["kfp_run_key"](
                {"logical_date": run_after, "run_type": "scheduled"}
            ),
            "run_key_template": dag.get_task("predict").run_key,
            "summary": scheduler.timetable.summary,
            "slack": [
                c.describe_run({"logical_date": run_after})
                for cbs in (dag.on_failure_callback, dag.get_task("predict").on_failure_callback)
                for c in (cbs if isinstance(cbs, list) else [cbs])
            ],
        }))
        """,
    )
    assert info["run_id"] == "scheduled__target-2026-11-30__2026-12-01T03:15:00+00:00"
    assert info["rendered"] == "2026-11-30"  # the New York date, a day before the UTC one
    # The KFP run name carries the partition by the workflow's own rule, not the UTC stamp.
    assert info["run_key"] == "2026-11-30"
    assert info["run_key_template"] == "{{ kfp_run_key(dag_run) }}"
    assert info["summary"] == "15 * * * * (UTC)"
    # Slack says the partition the run was for, by the workflow's rule.
    assert info["slack"] == [["Target date (America/New_York): 2026-11-30"]] * 2


HOWTO = REPO / "docs" / "howto" / "add-workflow.md"


def _blocks(kind: str) -> list[str]:
    return [
        textwrap.dedent(b) for b in re.findall(rf"```{kind}\n(.*?)```", HOWTO.read_text(), re.S)
    ]


def test_the_how_to_literally(airflow_env, dags, tmp_path):
    """docs/howto/add-workflow.md, step by step: copy the entry, edit it, compile, see the DAG."""
    project = tmp_path / "project"  # a copy of the project's files the how-to touches
    (project / "pipelines").mkdir(parents=True)
    shutil.copytree(REPO / "workflows", project / "workflows")
    shutil.copytree(REPO / "pipelines" / "compiled", project / "pipelines" / "compiled")
    (edit,) = _blocks("yaml")  # the fields the how-to changes
    commands = [line.strip() for block in _blocks("console") for line in block.splitlines()]
    commands = [c.removeprefix("$ ") for c in commands if c.startswith("$ ")]
    assert len(commands) == 4, commands  # copy, edit, compile, check
    env = {"PREDICTION_PROJECT_ROOT": str(project), "PATH": "/usr/bin:/bin"}
    for command in commands:
        if command.startswith("$EDITOR"):
            target = project / command.split()[-1]
            data = yaml.safe_load(target.read_text())
            data.update(yaml.safe_load(edit))
            target.write_text(yaml.safe_dump(data, sort_keys=False))
            continue
        command = command.replace(".venv", str(REPO / ".venv"))
        subprocess.run(command, shell=True, cwd=project, env=env, check=True)
    new = yaml.safe_load(edit)["name"]
    info = dagbag(
        airflow_env,
        dags,
        project / "workflows",
        f"""
        new = {new!r}
        assert not bag.import_errors and new in bag.dag_ids, (bag.import_errors, bag.dag_ids)
        task = bag.get_dag(new).get_task("predict")
        print(json.dumps({{"dags": sorted(bag.dag_ids), "errors": bag.import_errors,
                          "file": task.pipeline_file, "conn": task.kfp_conn_id}}))
        """,
        PREDICTION_PROJECT_ROOT=str(project),
    )
    assert info["errors"] == {}
    assert info["dags"] == sorted(["daily_prediction", "morning_ranking", new])
    compiled = project / "pipelines" / "compiled" / new / "daily_prediction.yaml"
    assert compiled.is_file()  # step 3 compiled it, with the entry's node pool (step 4 checked)
    assert str(compiled) in info["file"]
    assert info["conn"] == yaml.safe_load(edit)["identity"]["kfp_conn_id"]
