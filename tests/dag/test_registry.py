"""The registry of prediction workflows (workflows/*.yaml): schema, messages, teams, pipeline.

In-process: only ``prediction_app.registry`` (yaml, pydantic) and the provider's
pipeline-spec reader. The DagBag tests (one bad entry among three, the how-to) are in
test_registry_dagbag.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from prediction_app.registry import load_registry, main, shell_compile_command
from tests.dag.helpers import REPO

ENTRY = REPO / "workflows" / "daily_prediction.yaml"


def copy_entry(directory: Path, name: str, **changes) -> Path:
    """``workflows/daily_prediction.yaml`` as ``name``, with top-level or dotted changes."""
    data = yaml.safe_load(ENTRY.read_text())
    data["name"] = name
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    shutil.copy(REPO / "workflows" / "teams.yaml", tmp_path / "teams.yaml")
    return tmp_path


def test_repository_registry_is_valid():
    loaded = load_registry(REPO / "workflows")
    assert loaded.errors == {}
    assert [w.name for _, w in loaded.workflows] == ["daily_prediction", "morning_ranking"]
    assert main(["check"]) == 0


def test_a_copied_entry_is_a_second_workflow(registry: Path):
    copy_entry(registry, "alpha")
    copy_entry(registry, "beta", schedule__cron="0 9 * * *", target_date__timezone="UTC")
    loaded = load_registry(registry)
    assert loaded.errors == {}
    names = {w.name: w for _, w in loaded.workflows}
    assert set(names) == {"alpha", "beta"}
    assert (names["beta"].target_date.timezone, names["beta"].target_date.partition) == (
        "UTC",
        "daily",
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # The pipeline writes YYYY-MM-DD partitions only: an hourly entry would fail every run.
        (
            {"target_date__partition": "hourly"},
            "target_date.partition: 'hourly' is not allowed; allowed: 'daily'",
        ),
        (
            {"target_date__partition": "weekly"},
            "target_date.partition: 'weekly' is not allowed; allowed: 'daily'",
        ),
        # The row floor is one value for the pipeline and the gate: output.checks.min_rows.
        (
            {"parameters__min_rows": 5},
            "parameters.min_rows: set output.checks.min_rows instead (the pipeline's row floor "
            "and the gate's, one value)",
        ),
        (
            {"colour": "blue"},
            "colour: unknown field; allowed: name, owner, team, description",
        ),
        (
            {"parameters__lookback_days": {"variabel": "x"}},
            "parameters.lookback_days.variabel: unknown field; "
            "allowed: variable, default, path, from",
        ),
        (
            {"schedule__timezone": "Asia/Tokio"},
            "schedule.timezone: unknown time zone 'Asia/Tokio'",
        ),
        ({"schedule__cron": "0 25 * * *"}, "schedule.cron: not a cron expression: '0 25 * * *'"),
        (
            {"placement__steps": {"predict": {"cpus": "2"}}},
            "placement.steps.predict.cpus: unknown field; allowed: node_selector, cpu_request",
        ),
        (
            {"placement__steps": {"train": {"cpu_request": "2"}}},
            "placement.steps.train: 'train' is not allowed; allowed: 'features' or 'predict'",
        ),
        ({"parameters__model_sha256": [1, 2]}, "parameters.model_sha256: got list"),
        ({"owner": None}, "owner: Input should be a valid string"),
        # Checked against pipelines/compiled/daily_prediction.yaml's inputs:
        (
            {"parameters__colour": "red"},
            "parameters.colour: not an input of "
            f"{REPO / 'pipelines/compiled/daily_prediction.yaml'}; allowed: lookback_days, "
            "model_sha256, model_uri, predictions_table, target_date, warehouse",
        ),
        (
            {"parameters__lookback_days": "many"},
            "parameters.lookback_days: parameter 'lookback_days' expects NUMBER_INTEGER",
        ),
        # The table the pipeline writes (its predictions_table) is the declared output:
        (
            {"output__table": "ranking"},
            "output.table: 'ranking', but "
            f"{REPO / 'pipelines/compiled/daily_prediction.yaml'} writes 'predictions'; "
            "set parameters.predictions_table: ranking",
        ),
        (
            {"output__table": "ranking", "parameters__predictions_table": "other"},
            "output.table: 'ranking', but "
            f"{REPO / 'pipelines/compiled/daily_prediction.yaml'} writes 'other'; "
            "set parameters.predictions_table: ranking",
        ),
        (
            {"parameters__predictions_table": "{{ var.value.table }}"},
            "parameters.predictions_table: must be a literal table name (the output table "
            "'predictions' is declared at parse time)",
        ),
        # The teams' allow-list (teams.yaml):
        (
            {"identity__kfp_conn_id": "kfp_search"},
            "identity.kfp_conn_id: team 'recommendation' may not use 'kfp_search'; "
            "allowed: kfp_default, kfp_recommendation",
        ),
        (
            {"team": "finance"},
            "team: 'finance' is not in teams.yaml; allowed: recommendation, search",
        ),
        # The compiled file's node selectors against the placement:
        (
            {"placement__node_selector": {"cloud.google.com/gke-nodepool": "reco"}},
            "placement: "
            f"{REPO / 'pipelines/compiled/daily_prediction.yaml'} puts step 'features' on node "
            "selector {}, the entry says {'cloud.google.com/gke-nodepool': 'reco'}; compile it "
            "with: .venv-pipeline/bin/python -m kfp_prediction.compile --output-dir "
            "pipelines/compiled --node-selector cloud.google.com/gke-nodepool=reco",
        ),
    ],
)
def test_a_bad_entry_names_file_workflow_and_field(registry: Path, changes, expected):
    good = copy_entry(registry, "good")
    bad = copy_entry(registry, "bad", **changes)
    loaded = load_registry(registry)
    assert [path for path, _ in loaded.workflows] == [good]  # the others still load
    assert list(loaded.errors) == [bad]
    message = loaded.error_message()
    assert f"{bad}: workflow 'bad': {expected}" in message
    assert "good" not in message.replace(str(registry), "")


def _compiled_without_min_rows(tmp_path: Path) -> Path:
    """The repository's compiled pipeline as compiled before the row floor existed."""
    source = REPO / "pipelines" / "compiled" / "daily_prediction.yaml"
    spec, platform = yaml.safe_load_all(source.read_text())
    del spec["root"]["inputDefinitions"]["parameters"]["min_rows"]
    path = tmp_path / "compiled" / "old_pipeline.yaml"  # not in the registry's folder
    path.parent.mkdir()
    path.write_text(yaml.safe_dump_all([spec, platform], sort_keys=False))
    return path


def test_a_row_floor_needs_a_pipeline_that_takes_it(registry: Path, tmp_path: Path):
    """Without the pipeline's min_rows input a short run would replace the partition before
    the gate refuses it: an entry with output.checks.min_rows is refused, naming the field."""
    old = _compiled_without_min_rows(tmp_path)
    unchecked = copy_entry(registry, "unchecked", pipeline={"file": str(old)})
    bad = copy_entry(
        registry, "floored", pipeline={"file": str(old)}, output__checks={"min_rows": 1000}
    )
    loaded = load_registry(registry)
    assert [path for path, _ in loaded.workflows] == [unchecked]
    assert loaded.error_message() == (
        f"{bad}: workflow 'floored': output.checks.min_rows: {old} has no min_rows input, so "
        "its steps would publish a partition below the floor; recompile it (make compile)"
    )


def test_the_row_floor_is_a_pipeline_parameter(registry: Path):
    copy_entry(registry, "floored", output__checks={"min_rows": 1000})
    copy_entry(registry, "unset")
    loaded = load_registry(registry)
    assert loaded.errors == {}, loaded.error_message()
    names = {w.name: w for _, w in loaded.workflows}
    assert names["floored"].run_parameters()["min_rows"] == 1000
    assert "min_rows" not in names["floored"].parameters  # the entry's own stay as written
    assert "min_rows" not in names["unset"].run_parameters()  # the pipeline's default: 1


def test_the_second_demo_workflow_writes_its_own_table():
    """morning_ranking (issue 19): another model, schedule, lookback and output table."""
    loaded = load_registry(REPO / "workflows")
    names = {w.name: w for _, w in loaded.workflows}
    daily, ranking = names["daily_prediction"], names["morning_ranking"]
    assert (daily.output.table, ranking.output.table) == ("predictions", "ranking_predictions")
    assert ranking.parameters["predictions_table"] == "ranking_predictions"
    assert "predictions_table" not in daily.parameters  # the pipeline's default: predictions
    assert (daily.schedule.cron, ranking.schedule.cron) == ("0 6 * * *", "0 9 * * *")
    assert ranking.schedule.timezone == ranking.target_date.timezone == "Asia/Tokyo"
    assert ranking.parameters["lookback_days"] == 7
    assert ranking.parameters["model_uri"].path != daily.parameters["model_uri"].path
    assert ranking.identity.kfp_conn_id != daily.identity.kfp_conn_id


def test_name_must_match_the_file_and_be_unique(registry: Path):
    copy_entry(registry, "alpha")
    (registry / "alpha.yaml").rename(registry / "other.yaml")
    loaded = load_registry(registry)
    assert loaded.workflows == []
    assert "other.yaml: workflow 'alpha': name: must equal the file name ('other')" in (
        loaded.error_message()
    )


def test_missing_required_input_and_unreadable_yaml(registry: Path):
    path = copy_entry(registry, "alpha")
    data = yaml.safe_load(path.read_text())
    del data["parameters"]["target_date"]
    path.write_text(yaml.safe_dump(data))
    (registry / "broken.yaml").write_text("name: [unclosed\n")
    loaded = load_registry(registry)
    message = loaded.error_message()
    assert "alpha.yaml: workflow 'alpha': parameters.target_date: required by" in message
    assert f"{registry / 'broken.yaml'}: not valid YAML" in message


def test_uploaded_pipeline_and_gcs_files_are_checked_before_submission_not_at_parse(
    registry: Path,
):
    # Not readable at parse time: the schema only (the operator checks before it submits).
    copy_entry(
        registry,
        "uploaded",
        pipeline={"pipeline_id": "p-123", "version_id": "v-1"},
        parameters__colour="red",
    )
    copy_entry(registry, "on_gcs", pipeline={"file": "gs://bucket/p.yaml"}, parameters__x=1)
    loaded = load_registry(registry)
    assert loaded.errors == {}
    copy_entry(registry, "both", pipeline={"file": "a.yaml", "pipeline_id": "p"})
    assert "pipeline: give either file (a path or gs://) or pipeline_id" in (
        load_registry(registry).error_message()
    )


def test_a_bad_teams_file_fails_every_workflow_naming_it(registry: Path):
    copy_entry(registry, "alpha")
    (registry / "teams.yaml").write_text("teams:\n  recommendation:\n    kfp_conns: [x]\n")
    loaded = load_registry(registry)
    assert loaded.workflows == []
    message = loaded.error_message()
    assert "teams.yaml: teams.recommendation.kfp_conns: unknown field; allowed: kfp_conn_ids" in (
        message
    )
    assert "alpha.yaml: workflow 'alpha': team: the teams' allow-list (teams.yaml) is invalid" in (
        message
    )


def test_compile_command_puts_steps_on_the_node_pool(registry: Path):
    path = copy_entry(
        registry,
        "alpha",
        pipeline={"file": "pipelines/compiled/alpha/daily_prediction.yaml"},
        placement={
            "node_selector": {"cloud.google.com/gke-nodepool": "reco"},
            "steps": {"predict": {"cpu_request": "2", "memory_limit": "4Gi"}},
        },
    )
    loaded = load_registry(registry)
    assert loaded.errors == {}, loaded.error_message()
    ((_, workflow),) = loaded.workflows
    assert path.exists()
    assert shell_compile_command(workflow) == (
        ".venv-pipeline/bin/python -m kfp_prediction.compile --output-dir "
        "pipelines/compiled/alpha --node-selector cloud.google.com/gke-nodepool=reco "
        "--cpu-request predict=2 --memory-limit predict=4Gi"
    )
