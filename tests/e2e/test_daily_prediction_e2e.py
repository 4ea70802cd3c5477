"""End to end with real Airflow processes and the local backend.

One stack (api-server, scheduler with LocalExecutor, dag-processor, triggerer)
runs the real ``daily_prediction`` DAG and a failure DAG built from the same
operator and notifier:

- a 3-date backfill across a month boundary writes 3 partitions named by the
  JST target dates;
- clearing a finished date re-runs the task: the operator starts one new
  pipeline run for the clear (name suffix ``__c1``), which replaces that date's
  partition with the same rows; no other run or partition changes;
- a component failure on bad input (model digest mismatch) fails at once, without a
  retry: one Slack message, with the Kubeflow run link and the component's error;
- the registry's second workflow, ``morning_ranking`` (another model, its own KFP connection:
  a local backend with its own state directory), backfilled over two dates in the same
  warehouse, writes only its own table's partitions, each read back by its data-quality
  gate, and announces them on its own table (issue 19);
- a third registry entry, ``standin_ranking`` (a copy of ``morning_ranking`` on the KFP API
  stand-in, connection ``kfp_standin``, table ``standin_predictions``), backfilled over the
  same two dates: one KFP run per date, through its own connection, each run's partition read
  back by the gate and announced on its own table. The stand-in runs no pipeline code: a
  thread of the test plays it (writes the run's partition and its report, ends it).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json
from prediction_app.target_date import jst_ds
from tests.dag.helpers import slack_stand_in
from tests.e2e.airflow_stack import REPO, AirflowStack
from tests.e2e.scenario import demo_inputs, failing_dag, pipeline_module

TARGET_DATES = ["2026-10-30", "2026-10-31", "2026-11-01"]  # backfills take no future dates
RANKING_DATES = ["2026-10-28", "2026-10-29"]  # none of daily_prediction's

STANDIN_ROWS = 7

FAILING_HEADER = """
from datetime import timedelta
from prediction_app.notifications import TaskFailureNotifier, RunFailureNotifier
notifier = TaskFailureNotifier()
"""


def _registry(root: Path) -> Path:
    """The repository's workflows, plus ``standin_ranking`` on connection ``kfp_standin``."""
    registry = root / "workflows"
    shutil.copytree(REPO / "workflows", registry)
    teams = yaml.safe_load((registry / "teams.yaml").read_text())
    teams["teams"]["recommendation"]["kfp_conn_ids"].append("kfp_standin")
    (registry / "teams.yaml").write_text(yaml.safe_dump(teams))
    entry = yaml.safe_load((registry / "morning_ranking.yaml").read_text())
    entry["name"] = "standin_ranking"
    entry["identity"]["kfp_conn_id"] = "kfp_standin"
    entry["parameters"]["predictions_table"] = entry["output"]["table"] = "standin_predictions"
    (registry / "standin_ranking.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return registry


@contextmanager
def _playing_the_pipeline(server: KfpApiStandIn) -> Iterator[None]:
    """Each new run on the stand-in: write the partition its parameters name (rows of its
    model and its run id, as the predict step does), its report in its log; then end it."""
    stop, played = threading.Event(), set()

    def play() -> None:
        while not stop.wait(0.5):
            for run in server.runs():
                if run["run_id"] in played:
                    continue
                played.add(run["run_id"])
                params = run["runtime_config"]["parameters"]
                day, table = params["target_date"], params["predictions_table"]
                partition = Path(params["warehouse"]) / table / f"{day}.parquet"
                partition.parent.mkdir(parents=True, exist_ok=True)
                rows = pa.table(
                    {
                        "user_id": pa.array(range(STANDIN_ROWS), pa.int64()),
                        "model_sha256": [params["model_sha256"]] * STANDIN_ROWS,
                        "run_id": [run["run_id"]] * STANDIN_ROWS,
                    }
                )
                pq.write_table(rows, partition)
                report = {
                    "kind": "result",
                    "step": "predict",
                    "target_date": day,
                    "partition": str(partition),
                    "rows": STANDIN_ROWS,
                    "model_sha256": params["model_sha256"],
                    "written_run_id": run["run_id"],
                }
                server.set_task_log(
                    run["run_id"], "predict", f"kfp-bridge-report: {json.dumps(report)}"
                )
                server.set_run_state(run["run_id"], "SUCCEEDED")

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, metadata_db):
    root = tmp_path_factory.mktemp("e2e")
    warehouse, model, runs = root / "warehouse", root / "models" / "model.pkl", root / "runs"
    # Data up to today (JST): the scheduler also creates today's run once the DAG is unpaused.
    digest = demo_inputs(warehouse, model)
    # morning_ranking's own model (a tree) and its own connection's state directory.
    ranking_model, ranking_runs = root / "models" / "ranking.pkl", root / "runs_ranking"
    pipeline_module("kfp_prediction.demo_model", "--warehouse", str(warehouse), "--out",
                    str(ranking_model), "--kind", "tree")  # fmt: skip
    ranking_digest = (ranking_model.parent / "ranking.pkl.sha256").read_text().split()[0]

    dags = root / "dags"
    dags.mkdir()
    # The real DAG file (it resolves pipelines/ from its real location).
    (dags / "prediction_workflows.py").symlink_to(REPO / "dags" / "prediction_workflows.py")
    (dags / "e2e_failing_prediction.py").write_text(
        failing_dag(
            "e2e_failing_prediction",
            warehouse=warehouse,
            model=model,
            header=FAILING_HEADER,
            dag_args="on_failure_callback=RunFailureNotifier()",
            task_args="retries=1, retry_delay=timedelta(seconds=1), "
            "on_retry_callback=notifier, on_failure_callback=notifier,",
        )
    )

    ranking_conn = json.dumps(
        {"conn_type": "kfp", "extra": {"backend": "local", "local_state_dir": str(ranking_runs)}}
    )
    with slack_stand_in() as slack, KfpApiStandIn() as kfp_api:
        kfp_api.set_schedule(pending=0, running=10**9)  # until the player ends it
        env = {
            "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(
                {"conn_type": "kfp", "extra": {"backend": "local", "local_state_dir": str(runs)}}
            ),
            "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri("T000/B000/e2e"),
            "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
            # Not faster: a trigger that fires within seconds of deferring races the
            # scheduler's stale defer-exit event (apache/airflow#67287, #72716, open in 3.3.x).
            "DAILY_PREDICTION_POLL_SECONDS": "15",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW_CONN_KFP_RECOMMENDATION": ranking_conn,
            "AIRFLOW_VAR_MORNING_RANKING_MODEL_URI": str(ranking_model),
            "AIRFLOW_VAR_MORNING_RANKING_MODEL_SHA256": ranking_digest,
            "MORNING_RANKING_POLL_SECONDS": "15",
            "PREDICTION_WORKFLOWS_DIR": str(_registry(root)),
            "AIRFLOW_CONN_KFP_STANDIN": airflow_connection_json(kfp_api.url, request_timeout=5),
            "STANDIN_RANKING_POLL_SECONDS": "15",
        }
        airflow = AirflowStack(
            root / "home", dags_folder=dags, extra_env=env, database_url=metadata_db
        )
        with airflow, _playing_the_pipeline(kfp_api):
            deadline = time.monotonic() + 180
            wanted = {
                "daily_prediction",
                "morning_ranking",
                "standin_ranking",
                "e2e_failing_prediction",
            }
            while not wanted <= {r[0] for r in airflow.query("SELECT dag_id FROM dag")}:
                assert time.monotonic() < deadline, airflow.tail("dag-processor")
                time.sleep(1)
            airflow.warehouse, airflow.runs = warehouse, runs
            airflow.ranking_runs, airflow.ranking_digest = ranking_runs, ranking_digest
            airflow.digest = digest
            airflow.slack = slack
            airflow.kfp_api = kfp_api
            yield airflow


def _runs_by_name(runs: Path) -> Counter:
    return Counter(json.loads(p.read_text())["display_name"] for p in runs.glob("*/request.json"))


def _wait_runs(stack: AirflowStack, dag_id: str, count: int, timeout: float = 400) -> list:
    """The DAG's backfill runs, once ``count`` of them have finished."""
    deadline = time.monotonic() + timeout
    rows: list = []
    while time.monotonic() < deadline:
        rows = stack.query(
            "SELECT run_id, logical_date, state FROM dag_run WHERE dag_id = ? "
            "AND run_type = 'backfill' ORDER BY logical_date",
            (dag_id,),
        )
        if len(rows) >= count and all(r[2] in ("success", "failed") for r in rows):
            return rows
        time.sleep(2)
    raise AssertionError(f"{dag_id}: {rows}\n{stack.tail()}")


def _backfill(stack: AirflowStack, dag_id: str, dates: list[str]) -> None:
    """``airflow backfill create`` of the JST days ``dates`` (unpaused); all runs succeed."""
    stack.airflow("dags", "unpause", dag_id)
    stack.airflow(
        "backfill", "create", "--dag-id", dag_id,
        "--from-date", f"{dates[0]}T00:00:00+09:00", "--to-date", f"{dates[-1]}T23:59:59+09:00",
        "--max-active-runs", str(len(dates)),
    )  # fmt: skip
    rows = _wait_runs(stack, dag_id, len(dates))
    assert [r[2] for r in rows] == ["success"] * len(dates), stack.tail()
    assert [jst_ds(r[1]) for r in rows] == dates


def _events_by_date(stack: AirflowStack, dag_id: str) -> dict[str, tuple[str, dict]]:
    """The DAG's asset events by partition key: (asset URI, extra)."""
    events = stack.query(
        "SELECT a.uri, e.partition_key, e.extra FROM asset_event e JOIN asset a "
        "ON a.id = e.asset_id WHERE e.source_dag_id = ? ORDER BY e.id",
        (dag_id,),
    )
    return {key: (uri, json.loads(extra)) for uri, key, extra in events}


def _summary(warehouse: Path, target_date: str, table: str = "predictions") -> dict:
    out = pipeline_module(
        "kfp_prediction.summary", "--target-date", target_date, "--warehouse", str(warehouse),
        "--table", table, "--json",
    )  # fmt: skip
    return json.loads(out)


def _files(table: Path, dates: list[str]) -> dict[str, bytes]:
    """The partition files of ``dates`` that exist, by name."""
    paths = [table / f"{d}.parquet" for d in dates]
    return {p.name: p.read_bytes() for p in paths if p.exists()}


def _digests(table: Path) -> set[str]:
    """The model digests of every row of every partition of a local table."""
    return {
        digest
        for path in table.glob("*.parquet")
        for digest in pq.read_table(path, columns=["model_sha256"])["model_sha256"].to_pylist()
    }


def _rows(warehouse: Path, target_date: str) -> int:
    return _summary(warehouse, target_date)["rows"]


def test_backfill_writes_one_partition_per_jst_date_and_clear_replaces(stack):
    _backfill(stack, "daily_prediction", TARGET_DATES)
    partitions = {p.stem for p in (stack.warehouse / "predictions").glob("*.parquet")}
    # Besides the backfill, only the scheduled run of today (JST) may have written.
    scheduled = stack.query(
        "SELECT logical_date FROM dag_run WHERE dag_id = 'daily_prediction' "
        "AND run_type = 'scheduled'"
    )
    assert set(TARGET_DATES) <= partitions
    assert partitions - set(TARGET_DATES) <= {jst_ds(r[0]) for r in scheduled}
    runs_before = _runs_by_name(stack.runs)
    # KFP run names say the JST target date, not the UTC logical date (issue 20)
    backfill_names = [n for n in runs_before if n in {
        f"daily_prediction__predict__{d}" for d in TARGET_DATES}]  # fmt: skip
    assert len(backfill_names) == 3 and all(runs_before[n] == 1 for n in backfill_names)

    rows_before = {d: _rows(stack.warehouse, d) for d in TARGET_DATES}
    # Clear the middle run (logical 2026-10-30 21:00 UTC, target date 2026-10-31).
    stack.airflow(
        "tasks", "clear", "daily_prediction", "--yes",
        "--start-date", "2026-10-30T20:00:00+00:00", "--end-date", "2026-10-30T22:00:00+00:00",
    )  # fmt: skip
    # no pause needed: the CLI has set the run queued again when it returns
    rows = _wait_runs(stack, "daily_prediction", 3)
    assert [r[2] for r in rows] == ["success"] * 3
    tries = [
        try_number
        for try_number, logical_date in stack.query(
            "SELECT ti.try_number, dr.logical_date FROM task_instance ti JOIN dag_run dr "
            "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
            "WHERE ti.dag_id = 'daily_prediction' AND dr.run_type = 'backfill'"
        )
        if jst_ds(logical_date) == "2026-10-31"
    ]
    assert tries == [2], tries  # the cleared task really ran again
    after = _runs_by_name(stack.runs)
    cleared = "daily_prediction__predict__2026-10-31"
    assert after - runs_before == Counter({f"{cleared}__c1": 1})  # one new run, for the clear
    assert {d: _rows(stack.warehouse, d) for d in TARGET_DATES} == rows_before


def test_bad_input_fails_at_once_with_one_message(stack):
    """A digest mismatch is bad input: the component reports it permanent, so the task
    (retries=1) fails on its first try, with one message and one pipeline run (issue 10).
    One message per try across retries: tests/e2e/test_slack_per_try_e2e.py."""
    stack.slack.requests.clear()
    stack.airflow("dags", "unpause", "e2e_failing_prediction")
    stack.airflow(
        "dags", "trigger", "e2e_failing_prediction", "--run-id", "e2e_fail_1",
        "--logical-date", "2026-10-31T21:00:00+00:00",
    )  # fmt: skip
    assert stack.wait_for_run("e2e_failing_prediction", "e2e_fail_1", {"failed", "success"}) == (
        "failed"
    )
    deadline = time.monotonic() + 60
    while len(stack.slack.texts()) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    stack.wait_settled()  # a wrong second message would have been sent by now
    task_msgs = [t for t in stack.slack.texts() if "e2e_failing_prediction.predict" in t]
    summaries = [t for t in stack.slack.texts() if "*e2e_failing_prediction* run failed" in t]
    assert len(task_msgs) == 1, stack.slack.texts()
    [msg] = task_msgs
    assert "failed (try 1 of 2)" in msg and "will retry" not in msg
    assert "Target date (JST): 2026-11-01" in msg
    assert "Kubeflow run: " in msg
    assert "bad input (input model_sha256), not retrying" in msg
    assert "sha256" in msg.lower()  # the component's own error reached the message
    assert len(summaries) == 1
    assert (
        sum(n for name, n in _runs_by_name(stack.runs).items() if "e2e_failing_prediction" in name)
        == 1
    )


def test_backfill_of_the_second_workflow_writes_only_its_own_table(stack):
    """morning_ranking over two dates: its own partitions, model, connection and events; not
    one file of daily_prediction's tables for those dates, nor a run on its connection."""
    daily_before = _files(stack.warehouse / "predictions", TARGET_DATES)
    _backfill(stack, "morning_ranking", RANKING_DATES)

    warehouse = stack.warehouse
    for day in RANKING_DATES:
        ranking = _summary(warehouse, day, "ranking_predictions")
        assert ranking["model_sha256"] == [stack.ranking_digest]
        assert len(ranking["run_ids"]) == 1 and ranking["rows"] == ranking["users"] > 0
        assert (warehouse / "ranking_predictions_user_features" / f"{day}.parquet").exists()
        # Not one file of daily_prediction's tables for the ranking's dates.
        assert not (warehouse / "predictions" / f"{day}.parquet").exists()
        assert not (warehouse / "user_features" / f"{day}.parquet").exists()
    # daily_prediction's partitions are byte for byte as they were, all of its own model.
    assert _files(warehouse / "predictions", TARGET_DATES) == daily_before
    assert _digests(warehouse / "predictions") <= {stack.digest}
    assert _digests(warehouse / "ranking_predictions") == {stack.ranking_digest}
    # Each run went through morning_ranking's own connection (its own state directory).
    ranking_names = _runs_by_name(stack.ranking_runs)
    assert {f"morning_ranking__predict__{d}" for d in RANKING_DATES} <= set(ranking_names)
    assert all(n.startswith("morning_ranking__") for n in ranking_names)
    assert not [n for n in _runs_by_name(stack.runs) if n.startswith("morning_ranking")]
    # Its asset events name its own table, one per date, with the rows its gate read.
    by_date = _events_by_date(stack, "morning_ranking")
    for day in RANKING_DATES:
        uri, extra = by_date[day]
        assert uri == (warehouse / "ranking_predictions").as_uri()
        assert extra["model_sha256"] == stack.ranking_digest
        assert extra["rows"] == _summary(warehouse, day, "ranking_predictions")["rows"]


def test_a_backfill_on_the_kfp_api_makes_one_run_per_date_on_its_own_connection(stack):
    """standin_ranking over two dates on the KFP API stand-in (issue 19): one run per date,
    created through its own connection, each run's partition read back and announced."""
    _backfill(stack, "standin_ranking", RANKING_DATES)

    runs = {
        r["runtime_config"]["parameters"]["target_date"]: r
        for r in stack.kfp_api.runs()
        if r["display_name"].startswith("standin_ranking__predict__")
    }
    for day in RANKING_DATES:  # exactly one run per backfilled date (a scheduled one may add)
        named = [
            r
            for r in stack.kfp_api.runs()
            if r["display_name"] == f"standin_ranking__predict__{day}"
        ]
        assert len(named) == 1 and named[0]["state"] == "SUCCEEDED", named
    # Only this workflow's runs reached the stand-in (the others have local connections).
    assert {r["display_name"].split("__")[0] for r in stack.kfp_api.runs()} == {"standin_ranking"}

    by_date = _events_by_date(stack, "standin_ranking")
    for day in RANKING_DATES:
        partition = stack.warehouse / "standin_predictions" / f"{day}.parquet"
        assert set(pq.read_table(partition).column("run_id").to_pylist()) == {runs[day]["run_id"]}
        uri, extra = by_date[day]
        assert uri == (stack.warehouse / "standin_predictions").as_uri()
        assert (extra["run_id"], extra["rows"], extra["partition"]) == (
            runs[day]["run_id"],
            STANDIN_ROWS,
            str(partition),
        )
        # Not a file in the other workflows' tables for these dates from this backfill.
        assert not (stack.warehouse / "predictions" / f"{day}.parquet").exists()
