"""Both demo workflows, run by real Airflow against the stand-in KFP API (issue 19).

``airflow dags test`` runs ``daily_prediction`` and ``morning_ranking`` from the repository's
registry; each connection (``kfp_default``, ``kfp_recommendation``) is its own Kubeflow
identity: its own service-account token and namespace on a multi-user stand-in, where each
identity may use only its own namespace (a SubjectAccessReview answer). The stand-in runs no
pipeline code, so the test plays the pipeline: once a run exists it writes that run's
partition into a warehouse under ``tmp_path`` and the predict step's result report into the
run's pod log, then lets the run succeed. What this proves:

- each run was created in its own namespace, every request about it carried its own
  connection's token, and its parameters are its own (table, model digest, lookback);
- the data-quality gate read the partition its own report named, and the asset event
  carries its own run's facts and names its own table;
- a partition another run replaced fails the gate: the task fails at once, with no asset
  event for that date and no second run.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfp_bridge.testing.kfp_api.server import (
    TOKEN_REVIEW_AUDIENCE,
    KfpApiStandIn,
    airflow_connection_json,
)
from tests.dag.helpers import AIRFLOW, REPO, asset_events

DAY, NEXT = "2027-02-01", "2027-02-02"
DIGESTS = {"daily_prediction": "1" * 64, "morning_ranking": "2" * 64}
TABLES = {"daily_prediction": "predictions", "morning_ranking": "ranking_predictions"}
# conn id -> (token, service account, namespace): one Kubeflow identity per connection
IDENTITIES = {
    "kfp_default": ("token-daily", "system:serviceaccount:reco-daily:airflow", "reco-daily"),
    "kfp_recommendation": (
        "token-ranking",
        "system:serviceaccount:reco-ranking:airflow",
        "reco-ranking",
    ),
}
CONN_OF = {"daily_prediction": "kfp_default", "morning_ranking": "kfp_recommendation"}
AT = {"daily_prediction": "06:00:00", "morning_ranking": "09:00:00"}
ROWS = 5


@pytest.fixture(scope="module")
def stand_in():
    with KfpApiStandIn(multi_user=True) as server:
        server.set_multi_user(
            tokens={tok: (sa, [TOKEN_REVIEW_AUDIENCE]) for tok, sa, _ in IDENTITIES.values()},
            access={sa: [ns] for _, sa, ns in IDENTITIES.values()},
        )
        # Runs stay RUNNING until the test, playing the pipeline, ends them.
        server.set_schedule(pending=0, running=10**9)
        yield server


@pytest.fixture(scope="module")
def env(stand_in, tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("kfp_api_two_workflows") / "warehouse"
    values = {
        "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": DIGESTS["daily_prediction"],
        "AIRFLOW_VAR_MORNING_RANKING_MODEL_SHA256": DIGESTS["morning_ranking"],
        "DAILY_PREDICTION_POLL_SECONDS": "1",
        "MORNING_RANKING_POLL_SECONDS": "1",
    }
    for conn_id, (token, _, namespace) in IDENTITIES.items():
        values[f"AIRFLOW_CONN_{conn_id.upper()}"] = airflow_connection_json(
            stand_in.url, password=token, auth="token", namespace=namespace, request_timeout=5
        )
    return warehouse, values


def _write_partition(path: Path, rows: int, model: str, run_id: str) -> None:
    """What the predict step writes (the columns the gate reads, kfp_prediction.schema)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array(range(rows), pa.int64()),
            "model_sha256": pa.array([model] * rows, pa.string()),
            "run_id": pa.array([run_id] * rows, pa.string()),
        }
    )
    pq.write_table(table, path)


def _run_as_pipeline(
    airflow_env, stand_in, env, slack, dag_id: str, day: str, *, replaced_by: str | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    """``airflow dags test`` of ``dag_id`` for ``day``; the test plays the pipeline's run.

    On KFP the predict step's ``run_id`` is the run's UUID (``{{$.pipeline_job_uuid}}``);
    ``replaced_by``: another run's id ends up in the partition (it replaced this one's).
    """
    warehouse, values = env
    known = {r["run_id"] for r in stand_in.runs()}
    proc = subprocess.Popen(
        [AIRFLOW, "dags", "test", dag_id, f"{day}T{AT[dag_id]}+09:00"],
        env={
            **airflow_env.env,
            **values,
            "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri(),
        },
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (new := [r for r in stand_in.runs() if r["run_id"] not in known]):
            assert proc.poll() is None, proc.communicate()[0][-6000:]
            assert time.monotonic() < deadline, "no run was submitted"
            time.sleep(0.2)
        [run] = new
        partition = warehouse / TABLES[dag_id] / f"{day}.parquet"
        _write_partition(partition, ROWS, DIGESTS[dag_id], replaced_by or run["run_id"])
        report = {
            "kind": "result",
            "step": "predict",
            "target_date": day,
            "partition": str(partition),
            "rows": ROWS,
            "model_sha256": DIGESTS[dag_id],
            "written_run_id": run["run_id"],
        }
        stand_in.set_task_log(run["run_id"], "predict", f"kfp-bridge-report: {json.dumps(report)}")
        stand_in.set_run_state(run["run_id"], "SUCCEEDED")
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
    return done, next(r for r in stand_in.runs() if r["run_id"] == run["run_id"])


def _asset_events(airflow_env, uri: str) -> list[tuple[str, str, dict]]:
    events = asset_events(airflow_env.home, "a.uri", uri)
    return [(dag, key, extra) for _, dag, key, extra in events]


def test_each_workflow_runs_with_its_own_identity_parameters_and_partition(
    airflow_env, stand_in, env, slack_server
):
    warehouse, _ = env
    runs = {}
    for dag_id in ("daily_prediction", "morning_ranking"):
        done, runs[dag_id] = _run_as_pipeline(airflow_env, stand_in, env, slack_server, dag_id, DAY)
        assert done.returncode == 0 and "state=success" in done.stdout, done.stdout[-6000:]
        partition = warehouse / TABLES[dag_id] / f"{DAY}.parquet"
        run_id = runs[dag_id]["run_id"]
        assert (
            f"Data-quality gate passed: {partition} holds {ROWS} rows of model "
            f"{DIGESTS[dag_id]} from run {run_id}"
        ) in done.stdout

    requests = stand_in.requests()
    for dag_id, run in runs.items():
        token, _, namespace = IDENTITIES[CONN_OF[dag_id]]
        assert run["namespace"] == namespace and run["state"] == "SUCCEEDED"
        wanted = f"{dag_id}__predict__{DAY}__manual-{AT[dag_id].replace(':', '')}"
        assert run["display_name"] == wanted
        about = [r for r in requests if run["run_id"] in r["path"]]
        assert about and {r["authorization"] for r in about} == {f"Bearer {token}"}
        parameters = run["runtime_config"]["parameters"]
        assert parameters["target_date"] == DAY
        assert parameters["model_sha256"] == DIGESTS[dag_id]
        assert parameters["warehouse"] == str(warehouse)
    ranking = runs["morning_ranking"]["runtime_config"]["parameters"]
    daily = runs["daily_prediction"]["runtime_config"]["parameters"]
    assert (ranking["predictions_table"], int(ranking["lookback_days"])) == (
        "ranking_predictions",
        7,
    )
    assert daily.get("predictions_table", "predictions") == "predictions"
    assert int(daily["lookback_days"]) == 28
    # Every create went to its own namespace with its own token; nothing crossed over.
    creates = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/runs")]
    assert sorted(r["authorization"] for r in creates) == [
        "Bearer token-daily",
        "Bearer token-ranking",
    ]

    # Each asset event names its own table and carries its own run's facts.
    for dag_id, run in runs.items():
        uri = (warehouse / TABLES[dag_id]).as_uri()
        [(source, key, extra)] = _asset_events(airflow_env, uri)
        assert (source, key) == (dag_id, DAY)
        assert extra["partition"] == str(warehouse / TABLES[dag_id] / f"{DAY}.parquet")
        assert (extra["model_sha256"], extra["run_id"], extra["rows"]) == (
            DIGESTS[dag_id],
            run["run_id"],
            ROWS,
        )
    assert slack_server.requests == []


def test_a_partition_another_run_replaced_fails_the_gate(airflow_env, stand_in, env, slack_server):
    warehouse, _ = env
    done, run = _run_as_pipeline(
        airflow_env, stand_in, env, slack_server, "morning_ranking", NEXT, replaced_by="other-run"
    )
    assert done.returncode != 0 or "state=failed" in done.stdout, done.stdout[-6000:]
    partition = warehouse / "ranking_predictions" / f"{NEXT}.parquet"
    assert (
        f"workflow 'morning_ranking': data-quality gate failed on partition {partition}"
    ) in done.stdout
    assert f"run_id: expected '{run['run_id']}', found 'other-run'" in done.stdout
    # The failure message names the gate's finding.
    assert [t for t in slack_server.texts() if "data-quality gate failed on partition" in t]
    # No retry (another try reads the same partition): one run for the date; no event.
    named = [r for r in stand_in.runs() if f"__predict__{NEXT}" in r["display_name"]]
    assert named == [run]
    uri = (warehouse / "ranking_predictions").as_uri()
    assert NEXT not in [key for _, key, _ in _asset_events(airflow_env, uri)]


def test_where_no_log_can_be_read_the_gate_reads_the_partition_and_the_event_says_so(
    airflow_env, env, slack_server
):
    """Argo deletes the finished workflow and no log archive is set up (profile ``argo-gc``):
    the predict step's report cannot be read, the run still succeeds, and the asset event
    carries what the gate read from the target date's partition itself (issue 17)."""
    warehouse, values = env
    day = "2027-02-03"
    with KfpApiStandIn(profile="argo-gc") as server:
        server.set_log_archive(False)
        server.set_schedule(pending=0, running=10**9)
        gc_values = {
            **values,
            "AIRFLOW_CONN_KFP_DEFAULT": airflow_connection_json(server.url, request_timeout=5),
        }
        done, run = _run_as_pipeline(
            airflow_env, server, (warehouse, gc_values), slack_server, "daily_prediction", day
        )
    assert done.returncode == 0 and "state=success" in done.stdout, done.stdout[-6000:]
    assert "the result report of task 'predict' is not available through" in done.stdout
    assert "on_result checks the output without it" in done.stdout
    partition = warehouse / "predictions" / f"{day}.parquet"
    assert (
        f"Data-quality gate passed: {partition} holds {ROWS} rows of model "
        f"{DIGESTS['daily_prediction']} from run {run['run_id']}"
    ) in done.stdout
    events = _asset_events(airflow_env, (warehouse / "predictions").as_uri())
    [(source, _, extra)] = [e for e in events if e[1] == day]
    assert (source, extra["read_from"], extra["partition"]) == (
        "daily_prediction",
        "partition",
        str(partition),
    )
    assert (extra["rows"], extra["model_sha256"], extra["run_id"]) == (
        ROWS,
        DIGESTS["daily_prediction"],
        run["run_id"],
    )
