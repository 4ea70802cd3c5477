"""One registry entry -> one DAG: the single code path every prediction workflow goes through.

``dags/prediction_workflows.py`` calls :func:`register_workflows` with its ``globals()``
(Airflow's documented dynamic-DAG pattern). Bad entries do not stop the good ones: they
become one :class:`InvalidWorkflows` object, which Airflow's DagBag validates like any DAG
found in the file; its ``validate`` raises, so the DagBag records ONE import error for the
DAG file (every bad entry named, with file, workflow and field) and bags the other DAGs.
Nothing is built, so nothing is submitted, for a bad entry.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pendulum
from airflow.sdk import DAG, Asset
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from kfp_bridge.results import RunResult, WrittenDataset
from prediction_app.assets import partition_of, partition_table_uri, record_result, table_uri
from prediction_app.notifications import DeadlineNotifier, RunFailureNotifier, TaskFailureNotifier
from prediction_app.registry import (
    PROJECT_ROOT,
    ParameterSource,
    Registry,
    Workflow,
    WorkflowError,
    load_registry,
)
from prediction_app.target_date import BUSINESS_TZ, MACROS, kfp_run_key, target_partition
from prediction_app.timetables import TargetDateCronTimetable

TASK_ID = "predict"


class DataQualityError(ValueError):
    """The partition a run wrote failed its workflow's checks (a ``ValueError``: the operator
    fails the task without retries, since another try reads the same partition)."""


@dataclass(frozen=True)
class ResultGate:
    """The workflow's data-quality gate, as the task's ``on_result``: it reads the partition.

    It runs after the KFP run, so it cannot keep a bad partition from replacing a good one:
    what protects the date's previous partition is the pipeline's own ``min_rows`` floor
    (``output.checks.min_rows``, passed as that parameter), below which the features and
    predict steps publish nothing and the run fails. The gate verifies what landed, and keeps a
    partition that fails it from becoming an asset event (the DAGs scheduled on the table).

    The predict step's report says which partition it replaced; the gate reads that
    partition where it landed (:mod:`prediction_app.partition_check`: the Parquet file, or
    a query through ``BigQueryHook``) and requires, before the asset event is recorded:

    - the partition is in the workflow's own output table (``table``, its asset URI);
    - at least ``min_rows`` rows, and never none; as many as the run reported;
    - every row from the model the task was given (the rendered ``model_sha256``
      parameter; the reported, verified digest when the parameter is empty);
    - every row from this run (the run id the predict step reported writing into the
      ``run_id`` column: ``written_run_id``; on KFP the run's UUID, under ``kfp.local`` and
      on Vertex AI an id of the pipeline's own, so it is compared with the report).

    A failed check raises :class:`DataQualityError` naming the workflow, the partition, what
    was expected and what was found: the task fails without retries and no event reaches
    the DAGs scheduled on the table.

    When the report cannot be read (``result.unavailable``: a host that serves no pod log,
    workflows garbage-collected without a log archive), the partition is the task's
    ``target_date`` in the workflow's table, the model the task was given, and the run the
    Kubeflow run itself (the only backend whose reports can be missing is the KFP API, where
    the ``run_id`` column holds the run's UUID); the event then carries what was read.
    """

    workflow: str = ""
    table: str | None = None  # asset URI of the output table
    min_rows: int | None = None
    gcp_conn_id: str = "google_cloud_default"
    bigquery_location: str | None = None

    def __call__(self, result: RunResult, context: Mapping[str, Any]) -> list[WrittenDataset]:
        facts = None
        if result.unavailable is not None:
            result, facts = self._without_report(result, context)
        return self._check(result, context, facts)

    def _without_report(
        self, result: RunResult, context: Mapping[str, Any]
    ) -> tuple[RunResult, Any]:
        """The result read from the partition itself, for a run whose report is unreadable."""
        from prediction_app import partition_check

        where = f"workflow {self.workflow!r}: data-quality gate failed"
        parameters = getattr(context.get("task"), "parameters", None) or {}
        target, model = parameters.get("target_date"), parameters.get("model_sha256")
        if not self.table or not target or not model:
            raise DataQualityError(
                f"{where}: the report of {result.where} is not available ({result.unavailable})"
                " and the partition cannot be checked without it: the gate needs the output "
                "table and the task's target_date and model_sha256 parameters, found "
                f"table={self.table!r}, target_date={target!r}, model_sha256={model!r}"
            )
        partition = partition_of(self.table, str(target))
        facts = partition_check.read_partition(
            partition, gcp_conn_id=self.gcp_conn_id, location=self.bigquery_location
        )
        fields = {
            "target_date": str(target),
            "partition": partition,
            "rows": facts.rows,
            "model_sha256": facts.model_sha256[0] if len(facts.model_sha256) == 1 else "",
            "written_run_id": result.run_id,
            "read_from": "partition",  # not from the report: the event says so
        }
        return RunResult(result.run_id, result.run_url, result.task, fields), facts

    def _check(
        self, result: RunResult, context: Mapping[str, Any], facts: Any = None
    ) -> list[WrittenDataset]:
        from prediction_app import partition_check

        fields = result.fields
        where = f"workflow {self.workflow!r}: data-quality gate failed"
        partition = str(fields.get("partition") or "")
        if not partition:
            raise DataQualityError(f"{where}: {result.where} reported no partition: {fields}")
        written = Asset(partition_table_uri(partition)).uri
        where += f" on partition {partition} (table {written}) written by {result.where}"
        if self.table and written != self.table:
            # Not read: the workflow declares another table (its asset, its permissions).
            raise DataQualityError(f"{where}: table: expected {self.table}, found {written}")
        run_id = fields.get("written_run_id")
        if not run_id:
            raise DataQualityError(
                f"{where}: run_id: expected the report's written_run_id, found none (a pipeline "
                "built before the report had it: update the pipeline's package and recompile)"
            )
        task = context.get("task")
        given = (getattr(task, "parameters", None) or {}).get("model_sha256")
        reported_rows = fields.get("rows")
        expected = partition_check.Expected(
            min_rows=max(1, self.min_rows or 0),
            model_sha256=str(given or fields.get("model_sha256") or "") or None,
            run_id=str(run_id),
            reported_rows=reported_rows if isinstance(reported_rows, int) else None,
        )
        if facts is None:
            facts = partition_check.read_partition(
                partition, gcp_conn_id=self.gcp_conn_id, location=self.bigquery_location
            )
        found = partition_check.problems(facts, expected)
        if found:
            raise DataQualityError(f"{where}: " + "; ".join(found))
        if task is not None:
            task.log.info(
                "Data-quality gate passed: %s holds %d rows of model %s from run %s",
                partition,
                facts.rows,
                expected.model_sha256,
                expected.run_id,
            )
        return record_result(result, context)


def _bigquery_location(warehouse: str) -> str | None:
    """``location`` of a ``bigquery://P/D?location=L`` warehouse (where its queries run)."""
    parts = urlsplit(warehouse)
    if parts.scheme != "bigquery":
        return None
    return (parse_qs(parts.query).get("location") or [None])[-1]


def _var(name: str, default: object) -> str:
    """Template reading Airflow Variable ``name`` at run time, ``default`` when unset."""
    return f"{{{{ var.value.get({name!r}, {str(default)!r}) }}}}"


def _parameter(workflow: Workflow, value: Any, warehouse: str) -> Any:
    if not isinstance(value, ParameterSource):
        return value  # a literal, or a Jinja template rendered when the task runs
    if value.from_ == "warehouse":
        return warehouse
    default = value.default
    if value.path is not None:
        path = Path(value.path)
        default = str(path if path.is_absolute() else PROJECT_ROOT / path)
    if value.variable:
        return _var(value.variable, "" if default is None else default)
    return default


def _doc(workflow: Workflow, path: Path) -> str:
    rule = workflow.target_date
    return (
        workflow.doc_md
        or f"### {workflow.name}\n\n{workflow.description}\n\n"
        f"Target partition: the {rule.partition} partition of the logical date in "
        f"{rule.timezone} (`{{{{ target_date(dag_run) }}}}`)."
    ) + (
        f"\n\n**Registry entry** `{path.name}`: owner {workflow.owner}, team {workflow.team}, "
        f"KFP connection `{workflow.identity.kfp_conn_id}`, output table "
        f"`{workflow.output.table}`."
    )


def build_dag(workflow: Workflow, path: Path) -> DAG:
    """The DAG of one validated entry; its id is the workflow's name."""
    ops = workflow.operations_from_env()
    rule = workflow.target_date
    warehouse = workflow.output.warehouse.resolved()
    slack = workflow.slack.conn_id
    # The Slack messages name the run's target partition by the workflow's own rule.
    rule_kwargs: dict[str, str] = {}
    if (rule.timezone, rule.partition) != (BUSINESS_TZ, "daily"):
        rule_kwargs = {"business_tz": rule.timezone, "partition": rule.partition}
    macros = dict(MACROS)
    # The workflow's own target-date rule under the one name templates use.
    macros["target_date"] = functools.partial(
        target_partition, tz=rule.timezone, partition=rule.partition
    )
    macros["kfp_run_key"] = functools.partial(
        kfp_run_key, tz=rule.timezone, partition=rule.partition
    )
    deadline = None
    if ops.deadline_minutes:
        # Queued-at, not the logical date: a backfill of old dates must not alert at once.
        deadline = DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(minutes=ops.deadline_minutes),
            callback=AsyncCallback(
                DeadlineNotifier, kwargs={"slack_webhook_conn_id": slack, **rule_kwargs}
            ),
        )
    pipeline = workflow.pipeline
    source: dict[str, Any] = {}
    if pipeline.file:
        file = pipeline.resolved_file()
        source["pipeline_file"] = _var(pipeline.variable, file) if pipeline.variable else file
    else:
        source["pipeline_id"] = pipeline.pipeline_id
        source["pipeline_version_id"] = pipeline.version_id
    schedule = workflow.schedule
    with DAG(
        dag_id=workflow.name,
        description=workflow.description,
        doc_md=_doc(workflow, path),
        schedule=TargetDateCronTimetable(
            schedule.cron,
            timezone=schedule.timezone,
            business_tz=rule.timezone,
            partition=rule.partition,
        ),
        start_date=pendulum.datetime(
            schedule.start_date.year,
            schedule.start_date.month,
            schedule.start_date.day,
            tz=schedule.timezone,
        ),
        catchup=schedule.catchup,
        max_active_runs=schedule.max_active_runs,
        dagrun_timeout=timedelta(minutes=ops.dagrun_timeout_minutes),
        user_defined_macros=macros,
        default_args={
            "owner": workflow.owner,
            "retries": ops.retries,
            "retry_delay": timedelta(seconds=ops.retry_delay_seconds),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(seconds=ops.max_retry_delay_seconds),
            "execution_timeout": timedelta(minutes=ops.execution_timeout_minutes),
        },
        on_failure_callback=RunFailureNotifier(slack_webhook_conn_id=slack, **rule_kwargs),
        deadline=deadline,
        tags=list(workflow.tags) or ["prediction"],
    ) as dag:
        KubeflowPipelineRunOperator(
            task_id=TASK_ID,
            **source,
            parameters={
                key: _parameter(workflow, value, warehouse)
                for key, value in workflow.run_parameters().items()
            },
            kfp_conn_id=workflow.identity.kfp_conn_id,
            # KFP run name: <dag>__predict__<target partition> (+ run type and time for a
            # manual run), so the KFP UI is searched by business date; same for every try.
            run_key="{{ kfp_run_key(dag_run) }}",
            service_account=workflow.identity.service_account,
            report_task=TASK_ID,
            inlets=[Asset(table_uri(warehouse, t)) for t in workflow.output.inputs],
            outlets=[Asset(table_uri(warehouse, workflow.output.table))],
            on_result=ResultGate(
                workflow=workflow.name,
                table=Asset(table_uri(warehouse, workflow.output.table)).uri,
                min_rows=workflow.output.checks.min_rows,
                gcp_conn_id=workflow.output.checks.gcp_conn_id,
                bigquery_location=_bigquery_location(warehouse),
            ),
            poll_interval=ops.poll_seconds,
            on_retry_callback=TaskFailureNotifier(
                slack_webhook_conn_id=slack, will_retry=True, **rule_kwargs
            ),
            on_failure_callback=TaskFailureNotifier(
                slack_webhook_conn_id=slack, will_retry=False, **rule_kwargs
            ),
        )
    return dag


class InvalidWorkflows(DAG):
    """Stands for the registry's bad entries in the DAG file; never scheduled.

    DagBag validates each DAG object of a file and records an exception there as the
    file's import error while keeping the file's other DAGs (``DagBag.process_file``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(dag_id="invalid_prediction_workflows", schedule=None)
        self.registry_errors = message

    def validate(self) -> None:
        raise WorkflowError(self.registry_errors)


def register_workflows(
    namespace: MutableMapping[str, Any], directory: str | Path | None = None
) -> Registry:
    """Build one DAG per valid entry into ``namespace`` (a DAG file's ``globals()``)."""
    registry = load_registry(directory)
    for path, workflow in registry.workflows:
        try:
            namespace[workflow.name] = build_dag(workflow, path)
        except Exception as exc:  # an entry the schema let through but Airflow refuses
            registry.errors[path] = f"{path}: workflow {workflow.name!r}: {exc}"
    if registry.errors:
        namespace["invalid_prediction_workflows"] = InvalidWorkflows(registry.error_message())
    return registry
