"""The daily_prediction DAG under real Airflow 3.3: import, settings, rendered target dates.

Rendering goes through the code behind ``airflow tasks render`` (task instance
in memory, the task runner's template context, the DAG's Jinja environment,
Variables from the environment), in a subprocess with its own AIRFLOW_HOME.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from kfp_bridge.pipeline_spec import load_pipeline
from tests.dag.helpers import REPO

LOAD_DAG = """
import json, warnings
warnings.simplefilter("ignore")
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("daily_prediction")
"""

RENDER = (
    LOAD_DAG
    + """
import contextlib, io, sys
from airflow.cli.commands.task_command import _get_template_context, _get_ti
from airflow.serialization.serialized_objects import DagSerialization

scheduler_dag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
out = {}
templates = dict(dag.get_task("predict").parameters)
pipeline_file_template = dag.get_task("predict").pipeline_file
for logical_date in sys.argv[1:]:
    ti, _ = _get_ti(scheduler_dag.get_task("predict"), -1,
                    logical_date_or_run_id=logical_date, create_if_necessary="memory")
    task = dag.get_task("predict")
    task.parameters = dict(templates)  # rendering replaces the templates in place
    task.pipeline_file = pipeline_file_template
    context = _get_template_context(ti, task)
    task.render_template_fields(context)
    extra = task.render_template(
        "{{ ds }}|{{ macros.prediction_app.target_date(dag_run) }}"
        "|{{ jst_ds_nodash(logical_date) }}",
        context,
    )
    out[logical_date] = {
        "parameters": dict(context["task"].parameters),
        "pipeline_file": context["task"].pipeline_file,
        "extra": extra,
    }
print(json.dumps(out))
"""
)


def test_dag_imports_and_settings(airflow_env):
    info = airflow_env.python_json(
        LOAD_DAG
        + textwrap.dedent(
            """
            from airflow.serialization.serialized_objects import DagSerialization
            task = dag.get_task("predict")
            def names(cbs):
                return [type(c).__name__ for c in (cbs if isinstance(cbs, list) else [cbs])]
            import pendulum
            from airflow.timetables.trigger import CronTriggerTimetable
            from airflow.utils.types import DagRunType
            scheduler_dag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
            timetable = scheduler_dag.timetable  # the scheduler's view
            run_after = pendulum.datetime(2026, 11, 30, 21, tz="UTC")  # 2026-12-01 06:00 JST
            print(json.dumps({
                "timetable": type(timetable).__name__,
                "cron_trigger": isinstance(timetable, CronTriggerTimetable),
                "schedule": timetable.serialize(),
                "summary": timetable.summary,
                "description": timetable.description,
                "run_id": timetable.generate_run_id(
                    run_type=DagRunType.SCHEDULED, run_after=run_after, data_interval=None
                ),
                "dag_description": dag.description,
                "tz": dag.timezone.name,
                "catchup": dag.catchup,
                "max_active_runs": dag.max_active_runs,
                "start_date": dag.start_date.isoformat(),
                "tasks": dag.task_ids,
                "retries": task.retries,
                "backoff": task.retry_exponential_backoff,
                "retry_delay": task.retry_delay.total_seconds(),
                "max_retry_delay": task.max_retry_delay.total_seconds(),
                "execution_timeout": task.execution_timeout.total_seconds(),
                "pipeline_file": task.pipeline_file,
                "conn": task.kfp_conn_id,
                "deferrable": task.deferrable,
                "task_callbacks": names(task.on_failure_callback),
                "retry_callbacks": names(task.on_retry_callback),
                "dag_callbacks": names(dag.on_failure_callback),
                "doc": bool(dag.doc_md and "target date" in dag.doc_md.lower()),
                "deadline": dag.deadline,
                "report_task": task.report_task,
                "inlets": [a.uri for a in task.inlets],
                "outlets": [a.uri for a in task.outlets],
            }))
            """
        )
    )
    assert info["timetable"] == "TargetDateCronTimetable"
    assert info["cron_trigger"]  # a CronTriggerTimetable: logical date == scheduled time
    assert info["schedule"]["expression"] == "0 6 * * *"
    assert info["schedule"]["timezone"] == "Asia/Tokyo"
    # What the DAG list shows names the zone; run ids carry the target date.
    assert info["summary"] == "0 6 * * * (Asia/Tokyo)"
    assert info["description"] == "At 06:00, Asia/Tokyo"
    assert info["run_id"] == "scheduled__target-2026-12-01__2026-11-30T21:00:00+00:00"
    assert "06:00 Asia/Tokyo" in info["dag_description"]
    assert info["tz"] == "Asia/Tokyo"
    assert info["catchup"] is False
    assert info["max_active_runs"] > 1
    assert info["start_date"] == "2025-12-31T15:00:00+00:00"  # 2026-01-01 00:00 JST
    assert info["tasks"] == ["predict"]
    assert info["retries"] >= 2
    assert info["backoff"] and info["backoff"] > 1
    assert info["retry_delay"] == 300  # DAILY_PREDICTION_RETRY_DELAY_SECONDS unset
    assert info["max_retry_delay"] > 0
    assert info["execution_timeout"] > 0
    assert "daily_prediction_pipeline_file" in info["pipeline_file"]  # a template
    assert info["conn"] == "kfp_default"
    assert info["deferrable"] is True
    # One Slack message per failed try: the same notifier on retry and on final failure.
    assert info["task_callbacks"] == ["TaskFailureNotifier"]
    assert info["retry_callbacks"] == ["TaskFailureNotifier"]
    assert info["dag_callbacks"] == ["RunFailureNotifier"]
    assert info["doc"]
    assert not info["deadline"]  # opt-in, see test_deadline_alert_opt_in
    warehouse = (REPO / "var" / "warehouse").as_uri()
    assert info["report_task"] == "predict"
    assert info["outlets"] == [f"{warehouse}/predictions"]
    assert info["inlets"] == [
        f"{warehouse}/{t}" for t in ("users", "page_views", "purchases", "contents")
    ]


def test_both_dags_name_the_bigquery_predictions_table(airflow_env):
    info = airflow_env.python_json(
        LOAD_DAG
        + textwrap.dedent(
            """
            from airflow.serialization.serialized_objects import DagSerialization
            deliver = DagSerialization.from_dict(DagSerialization.to_dict(
                bag.get_dag("deliver_predictions")))
            task = dag.get_task("predict")
            print(json.dumps({
                "outlets": [a.uri for a in task.outlets],
                "inlets": [a.uri for a in task.inlets],
                "timetable": type(deliver.timetable).__name__,
                "partitioned": deliver.timetable.partitioned,
                "schedule_on": [
                    asset.uri for _, asset in deliver.timetable.asset_condition.iter_assets()
                ],
                "warehouse": task.parameters["warehouse"],
            }))
            """
        ),
        extra_env={
            "DAILY_PREDICTION_WAREHOUSE": "bigquery://acme-reco/warehouse?location=asia-northeast1"
        },
    )
    assert info["outlets"] == ["bigquery://acme-reco/warehouse/predictions"]
    assert info["inlets"][0] == "bigquery://acme-reco/warehouse/users"
    assert info["schedule_on"] == info["outlets"]  # the downstream listens to that table
    assert (info["timetable"], info["partitioned"]) == ("PartitionedAssetTimetable", True)
    assert info["warehouse"] == "bigquery://acme-reco/warehouse?location=asia-northeast1"


def test_deadline_alert_opt_in(airflow_env):
    info = airflow_env.python_json(
        LOAD_DAG
        + textwrap.dedent(
            """
            from airflow.serialization.serialized_objects import DagSerialization
            DagSerialization.from_dict(DagSerialization.to_dict(dag))
            (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
            print(json.dumps({
                "reference": type(alert.reference).__name__,
                "interval": alert.interval.total_seconds(),
                "callback": alert.callback.path,
                "kwargs": alert.callback.kwargs,
            }))
            """
        ),
        extra_env={"DAILY_PREDICTION_DEADLINE_HOURS": "3"},
    )
    assert info == {
        "reference": "DagRunQueuedAtDeadline",
        "interval": 3 * 3600.0,
        "callback": "prediction_app.notifications.DeadlineNotifier",
        "kwargs": {"slack_webhook_conn_id": "slack_default"},
    }


def test_target_date_rendered_at_run_time_in_jst(airflow_env):
    # Logical dates as the scheduler makes them: D 06:00 JST == D-1 21:00 UTC.
    cases = {
        "2026-11-26T21:00:00+00:00": ("2026-11-27", "2026-11-26"),
        "2026-11-30T21:00:00+00:00": ("2026-12-01", "2026-11-30"),  # month boundary
        "2026-12-31T21:00:00+00:00": ("2027-01-01", "2026-12-31"),  # year boundary
        "2028-02-28T21:00:00+00:00": ("2028-02-29", "2028-02-28"),  # leap day
        "2027-01-01T06:00:00+09:00": ("2027-01-01", "2026-12-31"),  # `dags test` form
    }
    proc = airflow_env.python(
        RENDER.replace("sys.argv[1:]", repr(list(cases))),
        extra_env={
            "DAILY_PREDICTION_WAREHOUSE": "bigquery://acme-reco/warehouse",
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": "ab" * 32,
        },
    )
    rendered = json.loads(proc.stdout.strip().splitlines()[-1])
    for logical_date, (target, utc_ds) in cases.items():
        params = rendered[logical_date]["parameters"]
        assert params["target_date"] == target, logical_date
        # ds is the UTC date: one day earlier for every 06:00 JST run.
        ds, plugin_macro, nodash = rendered[logical_date]["extra"].split("|")
        assert ds == utc_ds
        assert plugin_macro == target  # macros.prediction_app.target_date from plugins/
        assert nodash == target.replace("-", "")
        assert params["warehouse"] == "bigquery://acme-reco/warehouse"  # the environment's
        assert params["model_sha256"] == "ab" * 32
        assert params["model_uri"] == str(REPO / "var" / "models" / "demo_model.pkl")  # default
        assert str(params["lookback_days"]) == "28"
        assert rendered[logical_date]["pipeline_file"] == str(
            REPO / "pipelines" / "compiled" / "daily_prediction.yaml"
        )


def test_dag_parameters_match_the_compiled_pipeline(airflow_env):
    """The compiled YAML is the source of truth: every required input given, no unknown
    name, every rendered value coercible to its declared type (the operator's own check)."""
    proc = airflow_env.python(
        RENDER.replace("sys.argv[1:]", repr(["2026-11-26T21:00:00+00:00"])),
        extra_env={"AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": "ab" * 32},
    )
    [rendered] = json.loads(proc.stdout.strip().splitlines()[-1]).values()
    compiled = load_pipeline(rendered["pipeline_file"])
    given = set(rendered["parameters"])
    assert set(compiled.required_parameters) <= given, "required inputs the DAG does not pass"
    assert given <= set(compiled.parameters), "names the pipeline does not declare"
    coerced = compiled.validate_parameters(rendered["parameters"])  # raises naming the input
    assert set(coerced) == given


def test_workflow_row_floor_reaches_the_rendered_parameters(airflow_env):
    """morning_ranking's output.checks.min_rows is a rendered pipeline parameter the compiled
    pipeline accepts (its predict step refuses to publish below it); daily_prediction sets
    none and passes none (the pipeline's default floor, 1)."""
    ranking = RENDER.replace('get_dag("daily_prediction")', 'get_dag("morning_ranking")')
    proc = airflow_env.python(ranking.replace("sys.argv[1:]", repr(["2026-11-27T00:00:00+00:00"])))
    [rendered] = json.loads(proc.stdout.strip().splitlines()[-1]).values()
    assert rendered["parameters"]["min_rows"] == 1
    compiled = load_pipeline(rendered["pipeline_file"])
    assert compiled.validate_parameters(rendered["parameters"])["min_rows"] == 1
    proc = airflow_env.python(RENDER.replace("sys.argv[1:]", repr(["2026-11-27T00:00:00+00:00"])))
    [daily] = json.loads(proc.stdout.strip().splitlines()[-1]).values()
    assert "min_rows" not in daily["parameters"]


def test_dag_files_import_nothing_heavy():
    """No Google provider, client library or OpenLineage when the DAG files are parsed.

    Airflow's own provider discovery (any lookup of a provider's config section)
    imports every installed provider's ``get_provider_info``: metadata, allowed.
    """
    code = textwrap.dedent(
        """
        import json, runpy, sys
        runpy.run_path("dags/prediction_workflows.py")
        runpy.run_path("dags/deliver_predictions.py")
        heavy = ("pandas", "numpy", "kfp", "sklearn", "duckdb", "pyarrow", "vertexai",
                 "googleapiclient", "openlineage")
        metadata = ("airflow.providers.google", "airflow.providers.google.get_provider_info",
                    "airflow.providers.openlineage",
                    "airflow.providers.openlineage.get_provider_info")
        print(json.dumps(sorted(
            m for m in sys.modules
            if m.split(".")[0] in heavy
            or m.startswith(("google.cloud.", "google.api_core", "google.auth"))
            or (m.startswith(("airflow.providers.google", "airflow.providers.openlineage"))
                and m not in metadata)
        )))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
