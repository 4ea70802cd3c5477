"""What the Airflow-stack tests (e2e, browser) put in their home: demo data and model, DAGs.

The failing DAG is the real pipeline with a model digest that cannot match, so its run fails
inside the component as a user's would; each test adds what it checks (callbacks, outlets).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.dag.helpers import REPO, pipeline_module

__all__ = ["COMPILED_PIPELINE", "demo_inputs", "failing_dag", "pipeline_module"]

COMPILED_PIPELINE = REPO / "pipelines" / "compiled" / "daily_prediction.yaml"


def demo_inputs(warehouse: Path, model: Path) -> str:
    """A small demo warehouse and the demo model trained on it; the model's SHA-256."""
    pipeline_module("kfp_prediction.demo_data", "--warehouse", str(warehouse), "--users", "300",
                    "--page-views", "3000")  # fmt: skip
    pipeline_module("kfp_prediction.demo_model", "--warehouse", str(warehouse), "--out", str(model))
    return (model.parent / f"{model.name}.sha256").read_text().split()[0]


def failing_dag(
    dag_id: str,
    *,
    warehouse: Path,
    model: Path,
    header: str = "",
    dag_args: str = "",
    task_args: str = "retries=0,",
) -> str:
    """Source of a DAG whose ``predict`` run fails in the component (digest mismatch).

    ``header``: imports and module-level names; ``dag_args``/``task_args``: extra keyword
    arguments of the DAG and the operator, as source text.
    """
    template = textwrap.dedent(
        """
        import pendulum
        from airflow.sdk import DAG
        from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
        from prediction_app.target_date import MACROS
        @HEADER@
        with DAG(@DAG_ID@, schedule=None, catchup=False,
                 start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
                 user_defined_macros=MACROS, @DAG_ARGS@):
            KubeflowPipelineRunOperator(
                task_id="predict",
                pipeline_file=@PIPELINE@,
                parameters={
                    "target_date": "{{ target_date(dag_run) }}",
                    "warehouse": @WAREHOUSE@,
                    "model_uri": @MODEL@,
                    "model_sha256": "0" * 64,  # the component refuses the model
                },
                poll_interval=15,
                @TASK_ARGS@
            )
        """
    )
    for marker, text in {
        "@HEADER@": textwrap.dedent(header).strip(),
        "@DAG_ID@": repr(dag_id),
        "@DAG_ARGS@": dag_args,
        "@PIPELINE@": repr(str(COMPILED_PIPELINE)),
        "@WAREHOUSE@": repr(str(warehouse)),
        "@MODEL@": repr(str(model)),
        "@TASK_ARGS@": task_args,
    }.items():
        template = template.replace(marker, text)
    return template
