"""1,000 deferred pipeline runs at once (many workflows, a large backfill), one triggerer.

What runs where:

- the stand-in KFP API server: its own process (``kfp_bridge.testing.kfp_api.server``);
- the "worker": this process executes ``KubeflowPipelineRunOperator`` (deferrable)
  once per task instance; each submits its run and defers. Worker slots held while
  waiting = executions that did not hand over to the triggerer (target 0);
- the "triggerer": ONE separate process that runs the 1,000 real
  ``KubeflowPipelineRunTrigger`` instances (rebuilt from their serialized form)
  on one event loop through Airflow's own ``TriggerRunner.run_trigger``, the
  coroutine a real triggerer runs per trigger. The supervisor/DB side of a full
  ``airflow triggerer`` is not started (it needs a scheduler, DB rows for 1,000
  deferred task instances and an API server); it adds a fixed cost, not a
  per-trigger one.

Measured on the triggerer process while the runs are RUNNING and until every
trigger has fired: CPU seconds per minute (user+sys), peak RSS. Targets: under
6 CPU-s/min (10% of one core) and under 400 MiB.

    .venv/bin/python benchmarks/bench_triggerer.py [--runs 1000] [--run-seconds 90]
        [--poll-interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONN_ID = "kfp_bench"
# The product's own two-step pipeline: every poll reads the run back with its inline spec,
# so the spec users submit is the one to measure with (not a one-step fixture).
PIPELINE = REPO / "pipelines" / "compiled" / "daily_prediction.yaml"


# -- triggerer process ---------------------------------------------------------------------


def triggerer_main(spec_file: str) -> None:
    """Run every serialized trigger in ``spec_file`` on one loop; print one JSON line of stats."""
    import importlib

    from airflow.jobs.triggerer_job_runner import TriggerRunner

    specs = json.loads(Path(spec_file).read_text())

    async def main() -> dict:
        runner = TriggerRunner()
        tasks = []
        for i, (classpath, kwargs) in enumerate(specs, start=1):
            module, _, name = classpath.rpartition(".")
            trigger = getattr(importlib.import_module(module), name)(**kwargs)
            runner.triggers[i] = {"task": None, "name": f"t{i}", "events": 0, "is_watcher": False}
            tasks.append(asyncio.create_task(runner.run_trigger(i, trigger, None, None)))
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        print("READY", flush=True)
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        statuses: dict[str, int] = {}
        for entry in runner.events:
            status = entry.event.payload["outcome"]  # a RunEvent payload
            statuses[status] = statuses.get(status, 0) + 1
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        return {
            "triggers": len(specs),
            "events": statuses,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 2),
            "cpu_seconds_per_minute": round(cpu / (wall / 60), 2),
            "peak_rss_mib": round(usage1.ru_maxrss / 1024, 1),  # Linux: KiB
        }

    print("RESULT " + json.dumps(asyncio.run(main())), flush=True)


# -- orchestration -------------------------------------------------------------------------


class _TI:
    def __init__(self, map_index: int) -> None:
        self.dag_id, self.task_id, self.map_index = "backfill_bench", "predict", map_index
        self.stats_tags: dict[str, str] = {}

    def xcom_push(self, key: str, value: object) -> None:
        pass


class _Store(dict):
    def set(self, key, value, *, retention=None):
        self[key] = value


def defer_runs(n: int, poll_interval: float) -> tuple[list, int, float]:
    """Execute the deferrable operator n times; return triggers, slots still held, seconds."""
    from airflow.sdk.exceptions import TaskDeferred

    from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

    logical_date = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    triggers, held = [], 0
    t0 = time.monotonic()
    for i in range(n):
        op = KubeflowPipelineRunOperator(
            task_id="predict",
            pipeline_file=str(PIPELINE),
            parameters={
                "target_date": f"2026-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}",
                "model_sha256": "0" * 64,
                "lookback_days": 1 + i % 366,
            },
            kfp_conn_id=CONN_ID,
            deferrable=True,
            poll_interval=poll_interval,
        )
        ti = _TI(i)
        try:
            op.execute({"ti": ti, "logical_date": logical_date, "task_state_store": _Store()})
            held += 1  # returned without deferring: it waited in the worker
        except TaskDeferred as deferred:
            triggers.append(deferred.trigger.serialize())
    return triggers, held, time.monotonic() - t0


def _end_all_runs(server) -> None:
    for run in server.runs():
        server.set_run_state(run["run_id"], "SUCCEEDED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument(
        "--run-seconds",
        type=float,
        default=90.0,
        help="how long the triggerer waits on all runs RUNNING",
    )
    parser.add_argument("--poll-interval", type=float, default=10.0)
    args = parser.parse_args()

    import logging

    logging.disable(logging.INFO)
    from kfp_bridge.testing.kfp_api.server import airflow_connection_json, standin_process

    with standin_process() as server:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = airflow_connection_json(
            server.url, request_timeout=10
        )
        # Every run stays RUNNING until the triggerer has held all of them for --run-seconds
        # (submitting 1,000 takes minutes: a run timed from its creation would end unseen).
        server.set_schedule(pending=0, running=10**9, unit="seconds")
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            triggers, held, submit_seconds = defer_runs(args.runs, args.poll_interval)
        spec_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_triggers_{os.getpid()}.json"
        spec_file.write_text(json.dumps(triggers))
        try:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--triggerer", str(spec_file)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            result, ready_at = None, float("inf")
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("READY"):
                    # Ended from a thread: this loop keeps draining the triggerer's output
                    # (its log lines would otherwise fill the pipe and stall its event loop).
                    ready_at = time.time()
                    ender = threading.Timer(args.run_seconds, _end_all_runs, (server,))
                    ender.start()
                if line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT ") :])
            proc.wait()
        finally:
            spec_file.unlink(missing_ok=True)
        gets = [
            r["time"] for r in server.requests() if r["method"] == "GET" and "/runs/" in r["path"]
        ]
        polls = sum(1 for t in gets if t >= ready_at)

    if result is None:
        raise SystemExit("triggerer process gave no result")
    cpu_pct = result["cpu_seconds_per_minute"] / 60 * 100
    print(f"bench_triggerer: one process, {len(triggers)} real KubeflowPipelineRunTrigger on one")
    print("  event loop via airflow TriggerRunner.run_trigger (not a full `airflow triggerer`:")
    print("  no scheduler/DB/supervisor); stand-in KFP API server in a separate process.")
    print(f"  runs deferred                 : {len(triggers)} of {args.runs}")
    print(f"  worker slots held while waiting: {held} (target 0)")
    print(f"  submit+defer, all runs        : {submit_seconds:.1f} s")
    print(
        f"  all runs RUNNING, waited for  : {args.run_seconds:.0f} s, poll interval "
        f"{args.poll_interval:.0f} s (backing off)"
    )
    print(f"  trigger events                : {result['events']}")
    print(
        f"  GET run by the triggerer      : {polls} ({polls / max(len(triggers), 1):.1f} per run)"
    )
    print(f"  triggerer wall time           : {result['wall_seconds']} s")
    print(
        f"  triggerer CPU                 : {result['cpu_seconds_per_minute']} s/min "
        f"({cpu_pct:.1f}% of one core; target < 10%)"
    )
    print(f"  triggerer peak RSS            : {result['peak_rss_mib']} MiB (target < 400 MiB)")
    ok = held == 0 and cpu_pct < 10 and result["peak_rss_mib"] < 400
    print(f"  verdict                       : {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--triggerer":
        triggerer_main(sys.argv[2])
    else:
        main()
