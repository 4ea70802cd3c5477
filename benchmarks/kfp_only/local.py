"""Run a compiled KFP-only variant with ``kfp.local``, feeding the run's time explicitly.

    python -m benchmarks.kfp_only.local \
        --pipeline pipelines/compiled/daily_prediction_kfp_only.yaml --slack-webhook-url URL \
        --scheduled-time 2026-11-26T21:00:00Z \
        [--create-time T] [--warehouse var/warehouse] [--model-uri ...] [--model-sha256 HEX] \
        [--lookback-days 28] [--kfp-ui-host URL] [--pipeline-root var/kfp-local]

``kfp.local`` 2.17 cannot resolve ``{{$.pipeline_job_schedule_time_utc}}`` or
``{{$.pipeline_job_create_time_utc}}``: a pipeline that uses either crashes with an
``IndexError`` before any task runs, the exit task included (``local/placeholder_utils.py``
has no entry for them). So this command does what the KFP 2.17 driver does
(``backend/src/v2/driver/resolve.go``): it replaces each input constant that *is* one of the
placeholders with an RFC 3339 UTC time, here the one given, then runs the fed copy. The create
time defaults to the scheduled time (KFP 2.17 gives a one-off run its create time for both).
The naive variant has no such placeholder and needs no time. Prints one JSON line (state,
error, the times fed); exit status 1 when the run failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kfp_prediction.local_run import run_compiled
from kfp_prediction.parameters import add_arguments

from benchmarks.kfp_only.pipeline import TIME_PLACEHOLDERS, VARIANT_PARAMETERS

SCHEDULE_TIME, CREATE_TIME = TIME_PLACEHOLDERS
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rfc3339_utc(value: str) -> str:
    """``value`` checked as a time with a zone, written as KFP writes it (``...Z``)."""
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an RFC 3339 time, got {value!r}") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone (e.g. 2026-11-26T21:00:00Z)")
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def feed_times(docs: list[Any], times: dict[str, str]) -> int:
    """Replace every string that is exactly a placeholder of ``times``; return how many."""
    count = 0

    def walk(node: Any) -> Any:
        nonlocal count
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, str) and node in times:
            count += 1
            return times[node]
        return node

    docs[:] = [walk(doc) for doc in docs]
    return count


def uses_time_placeholders(docs: list[Any]) -> bool:
    return feed_times(json.loads(json.dumps(docs)), dict.fromkeys(TIME_PLACEHOLDERS, "")) > 0


def run_variant(
    pipeline_file: str | Path,
    *,
    scheduled_time: str | None = None,
    create_time: str | None = None,
    pipeline_root: str | Path = "var/kfp-local",
    **values: Any,
) -> dict[str, Any]:
    """Run the variant once; return ``{"state", "error", "fed"}`` (never raises on FAILED)."""
    docs = [d for d in yaml.safe_load_all(Path(pipeline_file).read_text()) if d is not None]
    fed: dict[str, str] = {}
    if uses_time_placeholders(docs):
        if not scheduled_time:
            raise ValueError(
                f"{pipeline_file} takes its date from the run's time placeholders, which "
                "kfp.local 2.17 cannot resolve: give --scheduled-time (RFC 3339 UTC)"
            )
        fed = {SCHEDULE_TIME: scheduled_time, CREATE_TIME: create_time or scheduled_time}
        feed_times(docs, fed)
    values = {k: v for k, v in values.items() if v is not None}
    state, error = "SUCCEEDED", None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(pipeline_file).name
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        try:
            run_compiled(path, pipeline_root, values)
        except RuntimeError as exc:  # kfp.local: "Pipeline 'X' finished with status FAILURE"
            state, error = "FAILED", _ANSI.sub("", str(exc))
    return {"state": state, "error": error, "fed": fed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="a compiled KFP-only variant")
    parser.add_argument("--scheduled-time", type=rfc3339_utc, help="RFC 3339, e.g. ...T21:00:00Z")
    parser.add_argument("--create-time", type=rfc3339_utc, help="default: the scheduled time")
    parser.add_argument("--pipeline-root", default="var/kfp-local")
    add_arguments(parser, optional=("model_sha256",), params=VARIANT_PARAMETERS)
    args = vars(parser.parse_args(argv))
    values = {p.name: args[p.name] for p in VARIANT_PARAMETERS}
    try:
        result = run_variant(
            args["pipeline"],
            scheduled_time=args["scheduled_time"],
            create_time=args["create_time"],
            pipeline_root=args["pipeline_root"],
            **values,
        )
    except (OSError, ValueError) as exc:
        print(f"kfp_only_local: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result["state"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
