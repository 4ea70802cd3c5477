"""200 deferred pipeline runs at once, waited on by a real ``airflow triggerer`` (full stack).

The full-stack counterpart of ``bench_triggerer.py``. What runs where, all on
127.0.0.1, each in its own process:

- the stand-in KFP API server (``kfp_bridge.testing.kfp_api.server``); its runs stay
  PENDING for 5 s, then RUNNING for ``--run-seconds`` (longer than the bench);
- a real Airflow 3.3 stack from ``tests/e2e/airflow_stack.py`` (api-server,
  scheduler with LocalExecutor, dag-processor, triggerer; SQLite in a throw-away
  AIRFLOW_HOME) whose dags folder holds one generated DAG: one
  ``KubeflowPipelineRunOperator`` (deferrable, tiny_pipeline.yaml) mapped over
  ``--runs`` parameter sets, i.e. 200 task instances in one DAG run.

The DAG run is triggered; the LocalExecutor workers submit the runs and defer.
Once at least 190 task instances are deferred, the triggerer process and its
children are measured with psutil for ``--window`` seconds: CPU seconds per
minute (user+sys), peak memory (sampled each second: the tree's PSS sum, which
the verdict uses, and its RSS sum, which counts pages shared by the forked
processes once per process; plus each process's peak RSS, PSS and kernel
VmHWM), and the worker slots held while waiting: task instances in state
``running`` whose run has been RUNNING on the stand-in for longer than
``--grace`` seconds (a task that waits in its worker instead of deferring;
target 0). Targets: < 6 CPU-s/min (10% of one core) and
< 300 MiB. Every process is stopped at the end, also on error or Ctrl-C; the
runs are still RUNNING then (their completion is not part of the measure).

    .venv/bin/python benchmarks/bench_triggerer_stack.py [--runs 200] [--window 180]
        [--poll-interval 15] [--parallelism 8] [--skip-serve-logs] [--keep-home]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfp_bridge.testing.kfp_api.server import airflow_connection_json, standin_process  # noqa: E402
from tests.e2e.airflow_stack import AirflowStack, AirflowStackError  # noqa: E402

DAG_ID = "bench_triggerer_stack"
RUN_ID = "bench_backfill_1"
CONN_ID = "kfp_bench"
PIPELINE = REPO / "tests" / "bridge" / "fixtures" / "tiny_pipeline.yaml"
PENDING_SECONDS = 5.0
MIB = 1024 * 1024

DAG_TEMPLATE = """
import pendulum
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

with DAG({dag_id!r}, schedule=None, catchup=False, max_active_runs=1,
         max_active_tasks={max_active_tasks},
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KubeflowPipelineRunOperator.partial(
        task_id="predict",
        pipeline_file={pipeline!r},
        kfp_conn_id={conn_id!r},
        deferrable=True,
        poll_interval={poll_interval!r},
    ).expand(parameters=[{{"message": f"day-{{i}}"}} for i in range({runs})])
"""


# -- measuring the triggerer ---------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _hwm_bytes(pid: int) -> int:
    """The kernel's peak RSS of one process (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler:
    """CPU time and memory of a process and all its descendants, pid by pid.

    Memory: the sum of RSS counts pages shared between the forked processes of the
    triggerer once per process; the sum of PSS (proportional set size) counts each
    page once, split between the processes that share it: the tree's real footprint.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu: dict[int, float] = {}  # pid -> user+sys seconds at the last sample
        self.labels: dict[int, str] = {}
        self.rss: dict[int, int] = {}  # pid -> peak RSS seen
        self.pss: dict[int, int] = {}  # pid -> peak PSS seen
        self.hwm: dict[int, int] = {}  # pid -> kernel VmHWM
        self.peak_rss_sum = 0
        self.peak_pss_sum = 0

    def sample(self) -> None:
        rss_sum = pss_sum = 0
        for proc in _tree(self.pid):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_full_info()
                    if proc.pid not in self.labels:
                        self.labels[proc.pid] = " ".join(proc.cmdline())[:70] or proc.name()
            except psutil.NoSuchProcess:
                continue
            pid = proc.pid
            self.cpu[pid] = times.user + times.system
            rss_sum += mem.rss
            pss_sum += mem.pss
            self.rss[pid] = max(self.rss.get(pid, 0), mem.rss)
            self.pss[pid] = max(self.pss.get(pid, 0), mem.pss)
            self.hwm[pid] = max(self.hwm.get(pid, 0), _hwm_bytes(pid))
        self.peak_rss_sum = max(self.peak_rss_sum, rss_sum)
        self.peak_pss_sum = max(self.peak_pss_sum, pss_sum)

    def cpu_snapshot(self) -> dict[int, float]:
        return dict(self.cpu)


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A process born inside the window counts from 0; one that died in it keeps its last sample.
    return sum(after.get(pid, t) - before.get(pid, 0.0) for pid, t in {**before, **after}.items())


# -- the stack -----------------------------------------------------------------------------


def _ti_states(stack: AirflowStack) -> dict[str, int]:
    rows = stack.query(
        "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = ? AND run_id = ? GROUP BY state",
        (DAG_ID, RUN_ID),
    )
    return {str(state): n for state, n in rows}


def _held_slots(stack: AirflowStack, runs: list[dict], grace: float) -> tuple[int, int]:
    """Task instances ``running`` in a worker while their run is RUNNING: (any, beyond grace)."""
    running_tis = {
        int(m)
        for (m,) in stack.query(
            "SELECT map_index FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "AND state = 'running'",
            (DAG_ID, RUN_ID),
        )
    }
    now = time.time()
    held = stuck = 0
    for run in runs:
        name = run["display_name"]
        if run["state"] != "RUNNING" or not name.startswith(f"{DAG_ID}__predict__"):
            continue
        map_index = name.rsplit("__", 1)[-1]
        if not map_index.isdigit() or int(map_index) not in running_tis:
            continue
        held += 1
        created = datetime.strptime(run["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if now - created.timestamp() - PENDING_SECONDS > grace:
            stuck += 1
    return held, stuck


def _wait_for_dag(stack: AirflowStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack._check_alive()
        if stack.query("SELECT 1 FROM dag WHERE dag_id = ?", (DAG_ID,)):
            return
        time.sleep(2)
    raise AirflowStackError(f"{DAG_ID} not parsed after {timeout:.0f}s\n{stack.tail()}")


def _log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.0f}s] {message}", flush=True)


def run_bench(args: argparse.Namespace, root: Path) -> dict:
    started = time.monotonic()
    dags = root / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(
        textwrap.dedent(DAG_TEMPLATE).format(
            dag_id=DAG_ID,
            pipeline=str(PIPELINE),
            conn_id=CONN_ID,
            poll_interval=float(args.poll_interval),
            runs=args.runs,
            max_active_tasks=max(16, args.parallelism * 2),
        )
    )
    result: dict = {"runs": args.runs}
    with standin_process() as server:
        server.set_schedule(pending=PENDING_SECONDS, running=args.run_seconds, unit="seconds")
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": airflow_connection_json(
                server.url, request_timeout=10
            ),
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.runs)),
        }
        stack = AirflowStack(
            root / "home",
            dags_folder=dags,
            extra_env=env,
            # without --skip-serve-logs both log servers run, bound to every interface
            serve_logs=not args.skip_serve_logs,
        )
        _log(started, "booting api-server, scheduler, dag-processor, triggerer ...")
        with stack:
            _log(started, f"stack healthy after {stack.boot_seconds:.0f}s; stand-in {server.url}")
            _wait_for_dag(stack, timeout=180)
            stack.airflow("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
            triggered = time.monotonic()
            _log(started, f"triggered {DAG_ID}/{RUN_ID} ({args.runs} mapped task instances)")

            sampler = TreeSampler(stack.procs["triggerer"].pid)
            threshold = min(args.runs, args.min_deferred)
            deadline = triggered + args.defer_timeout
            states: dict[str, int] = {}
            max_held = max_stuck = 0
            last_db = 0.0
            while True:  # until enough task instances are deferred
                stack._check_alive()
                sampler.sample()
                if time.monotonic() - last_db >= 5:
                    last_db = time.monotonic()
                    states = _ti_states(stack)
                    held, stuck = _held_slots(stack, server.runs(), args.grace)
                    max_held, max_stuck = max(max_held, held), max(max_stuck, stuck)
                    _log(started, f"task instances {states}; held in workers {held}")
                    if states.get("deferred", 0) >= threshold:
                        break
                    if states.get("failed", 0) or states.get("upstream_failed", 0):
                        raise AirflowStackError(f"task instances failed: {states}\n{stack.tail()}")
                if time.monotonic() > deadline:
                    raise AirflowStackError(
                        f"only {states.get('deferred', 0)} deferred after {args.defer_timeout:.0f}s"
                        f" ({states})"
                    )
                time.sleep(1)
            result["seconds_to_defer"] = round(time.monotonic() - triggered, 1)
            _log(started, f">= {threshold} deferred; measuring for {args.window:.0f}s")

            polls_before = _count_polls(server.requests())
            cpu_before, t0 = sampler.cpu_snapshot(), time.monotonic()
            min_deferred, samples = states.get("deferred", 0), []
            while time.monotonic() - t0 < args.window:
                time.sleep(1)
                stack._check_alive()
                sampler.sample()
                if time.monotonic() - last_db >= 5:
                    last_db = time.monotonic()
                    states = _ti_states(stack)
                    runs = server.runs()
                    held, stuck = _held_slots(stack, runs, args.grace)
                    max_held, max_stuck = max(max_held, held), max(max_stuck, stuck)
                    min_deferred = min(min_deferred, states.get("deferred", 0))
                    samples.append((states.get("deferred", 0), held))
                    if min_deferred < threshold:
                        _log(started, f"deferred dropped to {min_deferred}: window ends early")
                        break
            wall = time.monotonic() - t0
            cpu_after = sampler.cpu_snapshot()
            cpu = _cpu_delta(cpu_before, cpu_after)
            runs = server.runs()
            result.update(
                window_seconds=round(wall, 1),
                cpu_seconds=round(cpu, 2),
                cpu_seconds_per_minute=round(cpu / (wall / 60), 2),
                peak_rss_sum_mib=round(sampler.peak_rss_sum / MIB, 1),
                peak_pss_sum_mib=round(sampler.peak_pss_sum / MIB, 1),
                processes=[
                    {
                        "pid": pid,
                        "cmd": sampler.labels.get(pid, "?").strip(),
                        "cpu_seconds": round(cpu_after[pid] - cpu_before.get(pid, 0.0), 2),
                        "peak_rss_mib": round(sampler.rss[pid] / MIB, 1),
                        "peak_pss_mib": round(sampler.pss[pid] / MIB, 1),
                        "vm_hwm_mib": round(sampler.hwm[pid] / MIB, 1),
                    }
                    for pid in sorted(sampler.rss)
                ],
                deferred_min=min_deferred,
                deferred_end=states.get("deferred", 0),
                ti_states_end=states,
                held_max=max_held,
                held_stuck_max=max_stuck,
                held_end=samples[-1][1] if samples else None,
                run_states=_count(r["state"] for r in runs),
                polls_in_window=_count_polls(server.requests()) - polls_before,
                boot_seconds=round(stack.boot_seconds or 0, 1),
            )
            _log(started, "stopping the stack ...")
        _log(started, "stack stopped")
    result["total_seconds"] = round(time.monotonic() - started, 1)
    return result


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _count_polls(requests: list[dict]) -> int:
    return sum(1 for r in requests if r["method"] == "GET" and "/runs/" in r["path"])


def report(result: dict, args: argparse.Namespace) -> bool:
    cpu_pct = result["cpu_seconds_per_minute"] / 60 * 100
    children = len(result["processes"]) - 1
    print(f"bench_triggerer_stack: one real `airflow triggerer` (+{children} child processes)")
    print("  in a full Airflow 3.3 stack (api-server, scheduler/LocalExecutor,")
    print("  dag-processor; SQLite) waiting on KubeflowPipelineRunOperator runs against the")
    print("  stand-in KFP API server in its own process.")
    print(f"  mapped task instances          : {result['runs']} (parallelism {args.parallelism})")
    print(
        f"  triggerer command              : airflow triggerer"
        f"{' --skip-serve-logs' if args.skip_serve_logs else ''}"
    )
    print(f"  stack boot                     : {result['boot_seconds']} s")
    print(f"  trigger -> >= {args.min_deferred} deferred      : {result['seconds_to_defer']} s")
    print(
        f"  deferred during window         : min {result['deferred_min']}, "
        f"end {result['deferred_end']}; TI states at end {result['ti_states_end']}"
    )
    print(f"  stand-in run states at end     : {result['run_states']}")
    print(f"  poll interval                  : {args.poll_interval:.0f} s (x1.5 backoff)")
    print(f"  GET run requests in window     : {result['polls_in_window']}")
    print(f"  measurement window             : {result['window_seconds']} s")
    print(
        f"  triggerer CPU                  : {result['cpu_seconds']} s = "
        f"{result['cpu_seconds_per_minute']} s/min ({cpu_pct:.1f}% of one core; target < 10%)"
    )
    print(f"  triggerer peak memory, PSS sum : {result['peak_pss_sum_mib']} MiB (target < 300 MiB)")
    print(
        f"  triggerer peak RSS sum         : {result['peak_rss_sum_mib']} MiB (counts pages"
        " shared by the forked processes once per process)"
    )
    for proc in result["processes"]:
        print(
            f"    pid {proc['pid']:>7}: cpu {proc['cpu_seconds']:>6} s, peak RSS "
            f"{proc['peak_rss_mib']:>6} MiB, PSS {proc['peak_pss_mib']:>6} MiB, VmHWM "
            f"{proc['vm_hwm_mib']:>6} MiB  {proc['cmd']}"
        )
    print(
        f"  worker slots held while waiting: {result['held_stuck_max']} (max over samples, run"
        f" RUNNING > {args.grace:.0f} s; target 0)"
    )
    print(
        f"    incl. just-submitted tasks    : max {result['held_max']}, "
        f"end of window {result['held_end']}"
    )
    ok = (
        result["held_stuck_max"] == 0
        and result["deferred_min"] >= min(args.runs, args.min_deferred)
        and cpu_pct < 10
        and result["peak_pss_sum_mib"] < 300
    )
    print(f"  total wall time                : {result['total_seconds']} s")
    print(f"  verdict                        : {'PASS' if ok else 'FAIL'}")
    print("RESULT " + json.dumps(result), flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--min-deferred", type=int, default=190,
                        help="measure once this many task instances are deferred")  # fmt: skip
    parser.add_argument("--window", type=float, default=180.0, help="measurement seconds")
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--parallelism", type=int, default=8, help="LocalExecutor workers")
    parser.add_argument("--run-seconds", type=float, default=3600.0,
                        help="how long each stand-in run stays RUNNING")  # fmt: skip
    parser.add_argument("--defer-timeout", type=float, default=600.0,
                        help="give up when not enough are deferred by then")  # fmt: skip
    parser.add_argument("--grace", type=float, default=30.0,
                        help="a running TI whose run is RUNNING longer holds a slot")  # fmt: skip
    parser.add_argument("--skip-serve-logs", action="store_true",
                        help="triggerer without its log server child")  # fmt: skip
    parser.add_argument("--keep-home", action="store_true", help="keep AIRFLOW_HOME and logs")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_triggerer_stack_"))
    try:
        result = run_bench(args, root)
    except BaseException:
        print(f"bench_triggerer_stack: FAILED (logs under {root / 'home' / 'logs'})",
              file=sys.stderr)  # fmt: skip
        args.keep_home = True
        raise
    finally:
        if not args.keep_home:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if report(result, args) else 1)


if __name__ == "__main__":
    main()
