"""OpenLineage for a pipeline run: its inputs, what it wrote, the run.

The OpenLineage provider's ``DefaultExtractor`` calls the operator's
``get_openlineage_facets_on_complete`` / ``_on_failure``, which import this module
(so neither the provider nor openlineage-python is on the DAG parse path):

- **inputs**: the task's ``inlets`` (the source tables, declared as Assets), each
  turned into an OpenLineage dataset by the providers' own asset converters
  (``bigquery`` namespace and ``PROJECT.DATASET.TABLE``; ``file`` and the path);
- **outputs**: the datasets the DAG's ``on_result`` says the run wrote
  (:class:`~kfp_bridge.results.WrittenDataset`), as the same kind of dataset, with
  ``outputStatistics`` (row count) and ``version`` (e.g. the partition written);
  without them (failure, no ``report_task`` or ``on_result``), the outlets;
- **run facets**: ``externalQuery`` (the KFP run id, source = the backend) and
  ``kubeflowRun`` (id, name, URL, backend).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attr
from airflow.providers.common.compat.openlineage.facet import (
    Dataset,
    ExternalQueryRunFacet,
    OutputDataset,
    OutputStatisticsOutputDatasetFacet,
    RunFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.providers.openlineage.utils.utils import translate_airflow_asset
from airflow.sdk import Asset
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

from kfp_bridge.results import WrittenDataset

SOURCE = {"kfp": "kubeflow_pipelines", "vertex": "vertex_ai_pipelines", "local": "kfp_local"}


@attr.define
class KubeflowRunFacet(RunFacet):
    """The pipeline run behind an Airflow task: where to look at it."""

    runId: str
    runName: str | None = None
    runUrl: str | None = None
    backend: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return "urn:kfp-bridge:openlineage:KubeflowRunFacet:1-0-0"


def operator_lineage(
    *,
    inlets: Iterable[Any],
    outlets: Iterable[Any],
    written: Iterable[WrittenDataset],
    run_id: str | None,
    run_name: str | None,
    run_url: str | None,
    backend: str | None,
) -> OperatorLineage:
    """Inputs, outputs and run facets of one task (complete or failed)."""
    inputs = [d for d in (_dataset(a) for a in inlets) if d is not None]
    outputs: list[Any] = []
    for item in written:
        dataset = _dataset(Asset(item.uri))
        if dataset is None:
            continue
        facets: dict[str, Any] = {}
        if item.version is not None:
            facets["version"] = DatasetVersionDatasetFacet(datasetVersion=item.version)
        output_facets: dict[str, Any] = {}
        if item.row_count is not None:
            output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
                rowCount=item.row_count
            )
        outputs.append(
            OutputDataset(
                namespace=dataset.namespace,
                name=dataset.name,
                facets=facets,
                outputFacets=output_facets,
            )
        )
    if not outputs:
        outputs = [d for d in (_dataset(a) for a in outlets) if d is not None]
    run_facets: dict[str, Any] = {}
    if run_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(
            externalQueryId=run_id, source=SOURCE.get(backend or "", backend or "kfp")
        )
        run_facets["kubeflowRun"] = KubeflowRunFacet(
            runId=run_id, runName=run_name, runUrl=run_url, backend=backend
        )
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


def _dataset(asset: Any) -> Dataset | None:
    """An Asset as an OpenLineage dataset, by the providers' converters (None for others)."""
    if not isinstance(asset, Asset):
        return None
    return translate_airflow_asset(asset, None)
