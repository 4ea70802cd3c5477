"""Daily batch prediction: Airflow owns time and operations, Kubeflow Pipelines owns the ML.

Kept light on purpose: this file is parsed every few seconds by the
dag-processor, so it imports no pandas, Google clients or kfp SDK, and it
computes nothing date-like. Every date is a template rendered when the task runs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from kfp_bridge.assets import table_uri
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from prediction_app.notifications import (
    DeadlineNotifier,
    RunFailureNotifier,
    TaskFailureNotifier,
)
from prediction_app.target_date import BUSINESS_TZ, MACROS
from prediction_app.timetables import TargetDateCronTimetable

# dags/ sits in the repository root (and in /opt/airflow in the compose image).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_FILE = PROJECT_ROOT / "pipelines" / "compiled" / "daily_prediction.yaml"
LOCAL_WAREHOUSE = PROJECT_ROOT / "var" / "warehouse"
# Where the pipeline reads and writes: bigquery://PROJECT/DATASET[?location=...] or a local
# directory. An environment setting, read when the file is parsed, because the task declares
# the tables it reads and writes as Assets (downstream DAGs are scheduled on them).
WAREHOUSE = os.environ.get("DAILY_PREDICTION_WAREHOUSE") or str(LOCAL_WAREHOUSE)
SOURCE_TABLES = [
    Asset(table_uri(WAREHOUSE, t)) for t in ("users", "page_views", "purchases", "contents")
]
PREDICTIONS = Asset(table_uri(WAREHOUSE, "predictions"))
LOCAL_MODEL = PROJECT_ROOT / "var" / "models" / "demo_model.pkl"

SLACK_CONN_ID = "slack_default"
# The target date: the Asia/Tokyo date of the logical date (D for the D 06:00 JST run);
# runs without a logical date (a manual trigger without one) use run_after. The rule is
# prediction_app.target_date.target_date, which the Slack messages call too.
TARGET_DATE = "{{ target_date(dag_run) }}"


def _deadline() -> DeadlineAlert | None:
    """Slack alert when a run is not done N hours after it was queued (opt-in).

    Off unless ``DAILY_PREDICTION_DEADLINE_HOURS`` is set: in Airflow 3.3.2,
    ``airflow dags test`` (what ``make demo`` runs) crashes at the end of a run
    of any DAG that has a deadline (``DagRun.update_state`` looks the alerts up
    by id while ``dag.test`` holds them unserialized). The scheduler path is not
    affected. Queued-at rather than logical date: a backfill of old dates must
    not alert at once.
    """
    hours = os.environ.get("DAILY_PREDICTION_DEADLINE_HOURS")
    if not hours:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=float(hours)),
        callback=AsyncCallback(DeadlineNotifier, kwargs={"slack_webhook_conn_id": SLACK_CONN_ID}),
    )


def _var(name: str, default: object) -> str:
    """Template reading Airflow Variable ``name`` at run time, ``default`` when unset."""
    return f"{{{{ var.value.get({name!r}, {str(default)!r}) }}}}"


DOC_MD = """
### Daily prediction (06:00 Asia/Tokyo)

Runs the compiled Kubeflow pipeline `pipelines/compiled/daily_prediction.yaml`
once a day and writes one prediction per user into the `predictions` table,
partition `target_date`.

**Target date.** The run scheduled at *D* 06:00 JST predicts for target date *D*,
from data up to the start of *D* in JST (the pipeline's lookback window ends at
*D* 00:00 JST). Its logical date is *D-1* 21:00 UTC, so `{{ ds }}` (a UTC date)
reads *D-1*: the task passes `{{ target_date(dag_run) }}` instead,
rendered when the task runs (a manual run without a logical date uses its
`run_after`). Slack messages compute the date with the same function
(`prediction_app.target_date.target_date`). Re-running or backfilling a date rewrites
exactly that partition.

**Macros.** This DAG registers `target_date`, `jst_ds`, `jst_ds_nodash`, `local_ds`,
`local_ds_nodash` as `user_defined_macros`, so it renders even where the plugin is not
deployed; `plugins/prediction_app_plugin.py` offers the same functions to other DAGs as
`macros.prediction_app.*`. No Jinja filters: one spelling per rule.

**Run ids** of scheduled and triggered runs carry the target date:
`scheduled__target-D__...`.

**Backfill target dates A..B.** Bare dates mean 00:00 UTC and shift the range by a
day; ask for whole JST days:

- `airflow backfill create`
- `--dag-id daily_prediction`
- `--from-date AT00:00:00+09:00`
- `--to-date BT23:59:59+09:00`

In the UI's backfill dialog, with the UI time zone set to Asia/Tokyo (user menu),
pick A 00:00 to B 23:59.

**Predictions as an Asset.** The task's outlet is the predictions table
(`bigquery://PROJECT/DATASET/predictions`, or `file://.../predictions` locally). Each
successful run records one asset event whose partition key is the target date and whose
`extra` is what the pipeline's predict step reported (target date, partition, rows, model
digest) plus the Kubeflow run id and link; `deliver_predictions` is scheduled on it.

**Settings.** Environment `DAILY_PREDICTION_WAREHOUSE` (read at parse time: the Assets);
Airflow Variables `daily_prediction_pipeline_file` (a path or `gs://`),
`daily_prediction_model_uri`, `daily_prediction_model_sha256`,
`daily_prediction_lookback_days`; connection `kfp_default` (type `kfp`) picks the
backend, `google_cloud_default` gives the Google identity; `slack_default` (Slack
incoming webhook) receives failures.
"""

with DAG(
    dag_id="daily_prediction",
    description="Daily at 06:00 Asia/Tokyo: batch prediction on Kubeflow for the JST date",
    doc_md=DOC_MD,
    # CronTriggerTimetable whose description names the zone and whose run ids carry
    # the target date (prediction_app/timetables.py; the package registers it, no plugin needed).
    schedule=TargetDateCronTimetable("0 6 * * *", timezone=BUSINESS_TZ),
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
    catchup=False,
    # A backfill runs several target dates at once; each writes its own partition.
    max_active_runs=4,
    dagrun_timeout=timedelta(hours=6),
    # The DAG's own macros (not the plugin's): it must not depend on plugins/ being deployed.
    user_defined_macros=MACROS,
    default_args={
        "owner": "recommendation",
        "retries": 3,
        # Seconds before the first retry (then doubling, at most an hour); shortened only
        # where a run is watched, such as benchmarks/compare.py.
        "retry_delay": timedelta(
            seconds=float(os.environ.get("DAILY_PREDICTION_RETRY_DELAY_SECONDS", "300"))
        ),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(hours=3),
    },
    on_failure_callback=RunFailureNotifier(slack_webhook_conn_id=SLACK_CONN_ID),
    deadline=_deadline(),
    tags=["kubeflow", "prediction"],
) as dag:
    KubeflowPipelineRunOperator(
        task_id="predict",
        # Vertex AI needs the single-document variant (daily_prediction.vertex.yaml);
        # Cloud Composer keeps files under /home/airflow/gcs/data: set the Variable there.
        pipeline_file=_var("daily_prediction_pipeline_file", PIPELINE_FILE),
        parameters={
            "target_date": TARGET_DATE,
            "warehouse": WAREHOUSE,
            "model_uri": _var("daily_prediction_model_uri", LOCAL_MODEL),
            "model_sha256": _var("daily_prediction_model_sha256", ""),
            "lookback_days": _var("daily_prediction_lookback_days", 28),
        },
        kfp_conn_id="kfp_default",
        # KFP run name: daily_prediction__predict__<target date> (+ run type and time for a
        # manual run), so the KFP UI is searched by business date; same for every try.
        run_key="{{ kfp_run_key(dag_run) }}",
        # The predict step's result report becomes the asset event; the sources are inlets.
        report_task="predict",
        inlets=SOURCE_TABLES,
        outlets=[PREDICTIONS],
        # Seconds between status polls in the triggerer (a worker slot is not held).
        # `make demo` (airflow dags test) shortens it; with a real scheduler keep it >= 15 s
        # (a trigger firing seconds after deferral races the scheduler; see README).
        poll_interval=float(os.environ.get("DAILY_PREDICTION_POLL_SECONDS", "30")),
        # One message per failed try: retries and the final failure, told apart.
        on_retry_callback=TaskFailureNotifier(slack_webhook_conn_id=SLACK_CONN_ID, will_retry=True),
        on_failure_callback=TaskFailureNotifier(
            slack_webhook_conn_id=SLACK_CONN_ID, will_retry=False
        ),
    )
