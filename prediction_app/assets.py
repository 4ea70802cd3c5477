"""Warehouse tables as Airflow Assets, and the asset event a run's reported result gives.

Asset URIs say what the data is (AIP-60 schemes): ``bigquery://PROJECT/DATASET/TABLE``
(the form the Google provider validates) for a BigQuery table, ``file:///ABS/DIR`` for
a local table, which is a directory of one file per partition. The URIs are built
from the warehouse location the pipeline takes (``bigquery://PROJECT/DATASET[?...]``
or a local directory), so a DAG can declare them when it is parsed, and read back
from a partition the pipeline reports (``PROJECT.DATASET.TABLE$YYYYMMDD`` or
``/ABS/DIR/TABLE/YYYY-MM-DD.parquet``), so the operator can check that the run
wrote the table the task declares.

:func:`record_result` is the ``on_result`` callback of the prediction task: the provider
hands it what the predict step reported (``kfp_bridge.results``), and it alone knows the
report's fields.

Cheap to import (no provider, no Google client): DAG files use it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow.sdk import Asset

from kfp_bridge.results import RunResult, WrittenDataset

# What a step's result report must hold to become an asset event (see ``result_event``).
RESULT_FIELDS = ("target_date", "partition", "rows", "model_sha256")
_BIGQUERY_PARTITION = re.compile(
    r"^(?P<project>[a-z][a-z0-9.:-]*[a-z0-9])\.(?P<dataset>\w+)\.(?P<table>\w+)\$(?P<day>\d{8})$"
)
_LOCAL_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}\.parquet$")


def table_uri(warehouse: str, table: str) -> str:
    """The asset URI of ``table`` in a warehouse location (``bigquery://P/D`` or a directory)."""
    parts = urlsplit(warehouse)
    if parts.scheme == "bigquery":
        dataset = parts.path.strip("/")
        if not parts.netloc or not dataset or "/" in dataset:
            raise ValueError(f"warehouse {warehouse!r} is not bigquery://PROJECT/DATASET")
        return f"bigquery://{parts.netloc}/{dataset}/{table}"
    if parts.scheme not in ("", "file"):
        raise ValueError(f"warehouse {warehouse!r}: no asset URI for scheme {parts.scheme!r}")
    root = Path(parts.path if parts.scheme == "file" else warehouse).expanduser()
    if not root.is_absolute():
        raise ValueError(f"warehouse {warehouse!r}: a local warehouse must be an absolute path")
    return (root / table).as_uri()


def partition_of(table: str, target_date: str) -> str:
    """The partition of ``target_date`` in a table's asset URI (``partition_table_uri``'s
    inverse): where the predict step writes that date, found without its report."""
    day = dt.date.fromisoformat(target_date)
    parts = urlsplit(table)
    if parts.scheme == "bigquery":
        dataset, name = parts.path.strip("/").split("/")
        return f"{parts.netloc}.{dataset}.{name}${day:%Y%m%d}"
    return str(Path(unquote(parts.path)) / f"{day.isoformat()}.parquet")


def partition_table_uri(partition: str) -> str:
    """The asset URI of the table a reported partition belongs to."""
    match = _BIGQUERY_PARTITION.match(partition)
    if match:
        return f"bigquery://{match['project']}/{match['dataset']}/{match['table']}"
    path = Path(partition)
    if path.is_absolute() and _LOCAL_PARTITION.match(path.name):
        return path.parent.as_uri()
    raise ValueError(
        f"partition {partition!r} is neither PROJECT.DATASET.TABLE$YYYYMMDD nor "
        "/ABS/DIR/TABLE/YYYY-MM-DD.parquet"
    )


def require_fields(report: Mapping[str, Any], names: Iterable[str], where: str) -> None:
    """``ValueError`` naming every field the report lacks."""
    missing = [n for n in names if report.get(n) in (None, "")]
    if missing:
        raise ValueError(f"the report of {where} lacks {', '.join(missing)}: {dict(report)}")


def result_event(
    report: Mapping[str, Any], *, run_id: str, run_url: str | None, where: str
) -> dict[str, Any]:
    """The asset event ``extra`` for a step's result: what the pipeline reported, plus the run.

    ``ValueError`` naming what the report lacks. The partition must name the
    reported target date (``...$YYYYMMDD`` or ``.../YYYY-MM-DD.parquet``).
    """
    require_fields(report, RESULT_FIELDS, where)
    target_date = str(report["target_date"])
    partition = str(report["partition"])
    if target_date.replace("-", "") not in partition.replace("-", ""):
        raise ValueError(
            f"the report of {where} names partition {partition!r}, which is not of its "
            f"target date {target_date}"
        )
    rows = report["rows"]
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"the report of {where} has a bad row count {rows!r}")
    return {
        "target_date": target_date,
        "partition": partition,
        "rows": rows,
        "model_sha256": str(report["model_sha256"]),
        "run_id": run_id,
        "run_url": run_url,
        # "partition": the facts were read from the partition (the report was unreadable)
        **({"read_from": str(report["read_from"])} if report.get("read_from") else {}),
    }


def announce(
    outlet_events: Any,
    outlets: Iterable[Any],
    report: Mapping[str, Any],
    *,
    run_id: str,
    run_url: str | None,
    where: str,
) -> dict[str, Any]:
    """Record the result on each outlet's asset event: ``extra``, partition key = target date.

    A warehouse outlet (``bigquery://``/``file://``) must be the table the reported
    partition is in, else ``ValueError``: the pipeline wrote somewhere the DAG does
    not say. Airflow emits the events when the task succeeds, so a failed task
    announces nothing.
    """
    extra = result_event(report, run_id=run_id, run_url=run_url, where=where)
    written = Asset(partition_table_uri(extra["partition"])).uri
    assets = [a for a in outlets if isinstance(a, Asset)]
    for asset in assets:
        if urlsplit(asset.uri).scheme in ("bigquery", "file") and asset.uri != written:
            raise ValueError(
                f"{where} wrote partition {extra['partition']} (table {written}), but the task "
                f"declares the outlet {asset.uri}: the DAG and the pipeline's warehouse disagree"
            )
    for asset in assets:
        event = outlet_events[asset]
        event.extra.update(extra)
        event.add_partitions(extra["target_date"])
    return extra


def record_result(result: RunResult, context: Mapping[str, Any]) -> list[WrittenDataset]:
    """``on_result`` of the prediction task: the asset events, and the partition written.

    Each warehouse outlet of the task gets the report (plus the run) as ``extra`` and the
    target date as partition key; OpenLineage gets the table, the partition and the rows.
    ``ValueError`` when the report breaks the contract (the operator fails the task). A
    report that could not be read (``result.unavailable``) announces nothing: without the
    gate (``ResultGate``, which then reads the partition itself) nothing is known to tell.
    """
    if result.unavailable is not None:
        return []
    task = context["task"]
    outlets = [o for o in task.outlets if isinstance(o, Asset)]
    if outlets:
        extra = announce(
            context["outlet_events"],
            outlets,
            result.fields,
            run_id=result.run_id,
            run_url=result.run_url,
            where=result.where,
        )
        task.log.info(
            "Asset event for %s, partition %s: %s",
            ", ".join(o.uri for o in outlets),
            extra["target_date"],
            extra,
        )
    else:
        extra = result_event(
            result.fields, run_id=result.run_id, run_url=result.run_url, where=result.where
        )
    return [
        WrittenDataset(
            uri=partition_table_uri(extra["partition"]),
            version=extra["partition"],
            row_count=extra["rows"],
        )
    ]
