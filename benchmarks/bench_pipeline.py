"""Benchmark: the daily-prediction pipeline under kfp.local vs. the raw floor, same data.

    .venv-pipeline/bin/python benchmarks/bench_pipeline.py [--warehouse var/bench/warehouse]

Creates the 1,000,000-user data set (about 20M page views over 60 days) and a model if they
are missing, then, in one invocation, ``--repeat`` times (default 3, alternating):

* floor: in a fresh process, the same feature query, one scoring call over all users and
  contents (``score_users`` on the whole table: for the linear demo model one vectorised numpy
  evaluation of the whole (user, content) grid, else one ``predict_proba``), and one Parquet
  write, each timed, with peak RSS per phase;
* pipeline: the compiled ``daily_prediction.yaml`` run through ``kfp.local``
  (``SubprocessRunner(use_venv=False)``), wall time of the whole run and of the component
  process, and peak RSS of the component process (sampled with psutil).

Prints the figures of the median pair and every pair's totals, the median ratio
pipeline/floor and a ``VERDICT: PASS`` / ``VERDICT: FAIL`` line (targets: ratio <= 1.5, peak
RSS of every pipeline step in every pair <= 2 GiB); exits 1 on a miss. The median, because on
a shared 2-core machine one pair can be skewed by a neighbour's burst either way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TARGET_DATE = "2026-11-27"
END_DATE = "2026-11-26"
GIB = 1024**3
MAX_RATIO = 1.5
MAX_STEP_RSS = 2 * GIB


class RssSampler:
    """Peak RSS of this process (every 20 ms) or of its child processes (every 100 ms).

    Listing child processes scans /proc, so that mode samples less often: on a 2-core machine
    the sampler must not steal CPU from the pipeline it measures.
    """

    def __init__(self, children: bool) -> None:
        self.children = children
        self.interval = 0.1 if children else 0.02
        self.peak: dict[int, int] = {}
        self.first_seen: dict[int, float] = {}
        self.last_seen: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak.clear()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            procs = me.children(recursive=True) if self.children else [me]
            now = time.perf_counter()
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    if proc.pid not in self.names:
                        self.names[proc.pid] = " ".join(proc.cmdline())[:200]
                except psutil.Error:
                    continue
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), rss)
                self.first_seen.setdefault(proc.pid, now)
                self.last_seen[proc.pid] = now
            self._stop.wait(self.interval)


def floor(warehouse: str, model_uri: str, sha256: str) -> dict[str, dict[str, float]]:
    """Raw floor in this process: query, one predict call, one write."""
    from kfp_prediction.dates import TargetWindow
    from kfp_prediction.model import load_verified_model, model_feature_names
    from kfp_prediction.steps import predictions_table, score_users
    from kfp_prediction.warehouse import open_warehouse

    model, digest = load_verified_model(model_uri, sha256)
    names = model_feature_names(model)
    window = TargetWindow.build(TARGET_DATE, 28)
    wh = open_warehouse(warehouse)
    out: dict[str, dict[str, float]] = {}
    with RssSampler(children=False) as rss, tempfile.TemporaryDirectory() as tmp:

        def phase(name: str, fn):
            rss.reset()
            start = time.perf_counter()
            result = fn()
            peak = max(rss.peak.values(), default=psutil.Process().memory_info().rss)
            out[name] = {"seconds": time.perf_counter() - start, "peak_rss": peak}
            return result

        users, contents = phase("query", lambda: (wh.user_features(window), wh.contents()))

        def predict():  # one scoring call over all users x contents
            return score_users(model, names, users, contents)

        best, score = phase("predict", predict)

        def write():
            import pyarrow.parquet as pq

            rows = predictions_table(
                window,
                users,
                contents,
                best,
                score,
                digest,
                "floor",
                "floor",
                dt.datetime.now(dt.UTC),
            )
            pq.write_table(rows, Path(tmp) / "part.parquet", compression="zstd")

        phase("write", write)
    out["total"] = {
        "seconds": sum(v["seconds"] for v in out.values()),
        "peak_rss": max(v["peak_rss"] for v in out.values()),
    }
    return out


def run_pipeline(warehouse: str, model_uri: str, sha256: str) -> dict[str, object]:
    from kfp_prediction.local_run import run_local

    with tempfile.TemporaryDirectory() as root, RssSampler(children=True) as rss:
        start = time.perf_counter()
        run_local(
            TARGET_DATE,
            warehouse=warehouse,
            model_uri=model_uri,
            model_sha256=sha256,
            pipeline_root=root,
        )
        total = time.perf_counter() - start
        metrics = {}
        for path in Path(root).rglob("executor_output.json"):
            for artifact in json.loads(path.read_text()).get("artifacts", {}).values():
                for item in artifact.get("artifacts", []):
                    metrics.update(item.get("metadata", {}))
    executors = [pid for pid, name in rss.names.items() if "kfp.dsl.executor_main" in name]
    step = {
        "seconds": max(rss.last_seen[p] for p in executors)
        - min(rss.first_seen[p] for p in executors),
        "peak_rss": max(rss.peak[p] for p in executors),
    }
    return {"total_seconds": total, "predict-and-write": step, "metrics": metrics}


def ensure_inputs(warehouse: Path, model: Path) -> str:
    py = sys.executable
    if not (warehouse / "page_views").is_dir():
        subprocess.run(
            [
                py,
                "-m",
                "kfp_prediction.demo_data",
                "--warehouse",
                str(warehouse),
                "--size",
                "bench",
                "--end-date",
                END_DATE,
            ],
            check=True,
        )
    if not model.exists():
        subprocess.run(
            [
                py,
                "-m",
                "kfp_prediction.demo_model",
                "--warehouse",
                str(warehouse),
                "--out",
                str(model),
                "--target-date",
                TARGET_DATE,
            ],
            check=True,
        )
    return Path(f"{model}.sha256").read_text().split()[0]


def fmt(seconds: float, rss: float) -> str:
    return f"{seconds:7.2f} s   peak RSS {rss / GIB:5.2f} GiB"


def run_floor(warehouse: Path, model: Path) -> dict[str, dict[str, float]]:
    """The floor in a fresh process, like the pipeline's component (imports not timed)."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--floor-only",
            "--warehouse",
            str(warehouse),
            "--model",
            str(model),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default=str(ROOT / "var/bench/warehouse"))
    parser.add_argument("--model", default=str(ROOT / "var/bench/model.pkl"))
    parser.add_argument(
        "--repeat", type=int, default=3, help="floor/pipeline pairs; the verdict takes the median"
    )
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warehouse, model = Path(args.warehouse), Path(args.model)
    sha256 = ensure_inputs(warehouse, model)
    if args.floor_only:
        print(json.dumps(floor(str(warehouse), str(model), sha256)))
        return 0

    pairs = []
    for _ in range(max(args.repeat, 1)):  # alternate, so drift on a shared machine hits both
        raw = run_floor(warehouse, model)
        pipe = run_pipeline(str(warehouse), str(model), sha256)
        pairs.append((pipe["total_seconds"] / raw["total"]["seconds"], raw, pipe))
    pairs.sort(key=lambda pair: pair[0])
    ratio, raw, pipe = pairs[len(pairs) // 2]
    m = pipe["metrics"]
    print(
        f"\ndata: {warehouse}  target_date {TARGET_DATE}  users scored "
        f"{int(m.get('users_scored', 0)):,}  contents {int(m.get('contents_rows', 0))}"
    )
    print(f"median of {len(pairs)} floor/pipeline pairs:")
    print("raw floor (one process, same query / one predict call / one write):")
    for name in ("query", "predict", "write", "total"):
        print(f"  {name:<18}{fmt(raw[name]['seconds'], raw[name]['peak_rss'])}")
    print("pipeline through kfp.local (compiled YAML, SubprocessRunner):")
    step = pipe["predict-and-write"]
    print(
        f"  {'predict-and-write':<18}{fmt(step['seconds'], step['peak_rss'])}  (component process)"
    )
    for key in ("seconds_checks", "seconds_query", "seconds_score_and_write"):
        if key in m:
            print(f"    {key.removeprefix('seconds_'):<16}{m[key]:7.2f} s  (inside the component)")
    print(
        f"  {'total':<18}{pipe['total_seconds']:7.2f} s   (run call, incl. kfp.local orchestration)"
    )
    print("all pairs (floor s / pipeline s = ratio):")
    for r, f, p in sorted(pairs, key=lambda pair: pair[1]["total"]["seconds"]):
        print(f"  {f['total']['seconds']:6.2f} / {p['total_seconds']:6.2f} = {r:.2f}x")
    peak = max(p["predict-and-write"]["peak_rss"] for _, _, p in pairs)
    print(
        f"\nratio pipeline/floor (median): {ratio:.2f}x (target <= 1.5x)   "
        f"max step peak RSS: {peak / GIB:.2f} GiB (target <= 2 GiB)"
    )
    misses = verdict(ratio, peak)
    print("VERDICT: " + (f"FAIL ({'; '.join(misses)})" if misses else "PASS"))
    return 1 if misses else 0


def verdict(ratio: float, peak_rss: float) -> list[str]:
    """The targets missed (empty: pass): ratio <= 1.5 and every step's peak RSS <= 2 GiB."""
    misses = []
    if ratio > MAX_RATIO:
        misses.append(f"ratio {ratio:.2f}x > {MAX_RATIO}x")
    if peak_rss > MAX_STEP_RSS:
        misses.append(f"step peak RSS {peak_rss / GIB:.2f} GiB > {MAX_STEP_RSS / GIB:.0f} GiB")
    return misses


if __name__ == "__main__":
    sys.exit(main())
