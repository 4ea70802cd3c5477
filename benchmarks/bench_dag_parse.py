"""Parse time of the DAG files (prediction_workflows, deliver_predictions) against a trivial DAG.

Two figures, each the median over N fresh interpreters per file (interleaved):

- full parse: wall time of ``python -c "runpy.run_path(FILE)"``, Airflow import
  included; what parsing a file in a fresh process costs. Target ratio <= 1.5x.
- incremental: the interpreter first imports what a dag-processor has loaded
  before it parses any file (``airflow.dag_processing.processor``), then only the
  file's execution is timed; the extra work this DAG file adds per parse.

The registry's file is measured twice: with the repository's ``workflows/`` and with a
registry of ``--workflows`` copies of its daily entry (issue 19: 50 workflows, one file).

    .venv/bin/python benchmarks/bench_dag_parse.py [--runs 5] [--workflows 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = {
    name: REPO / "dags" / f"{name}.py" for name in ("prediction_workflows", "deliver_predictions")
}

TRIVIAL_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("trivial", schedule="0 6 * * *", start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
         catchup=False):
    EmptyOperator(task_id="noop")
"""

FULL = "import runpy, sys; runpy.run_path(sys.argv[1])"

# What a dag-processor has imported before it parses any file.
INCREMENTAL = """
import runpy, sys, time, warnings
warnings.simplefilter("ignore")
import airflow.sdk, airflow.dag_processing.processor
start = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - start)
"""


def many_workflows(directory: Path, count: int) -> Path:
    """A registry of ``count`` copies of workflows/daily_prediction.yaml (wf_001, ...)."""
    directory.mkdir()
    shutil.copy(REPO / "workflows" / "teams.yaml", directory / "teams.yaml")
    entry = (REPO / "workflows" / "daily_prediction.yaml").read_text()
    for i in range(1, count + 1):
        name = f"wf_{i:03d}"
        text = entry.replace("name: daily_prediction\n", f"name: {name}\n", 1)
        (directory / f"{name}.yaml").write_text(text)
    return directory


def full_seconds(path: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FULL, str(path)], cwd=REPO, env=env, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def incremental_seconds(path: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", INCREMENTAL, str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workflows", type=int, default=50, help="size of the big registry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trivial = Path(tmp) / "trivial_dag.py"
        trivial.write_text(TRIVIAL_DAG)
        env = {**os.environ, "AIRFLOW_HOME": tmp, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "PYTHONWARNINGS": "ignore"}  # fmt: skip
        env.pop("PREDICTION_WORKFLOWS_DIR", None)
        big = f"prediction_workflows[{args.workflows}]"
        files = {"trivial": (trivial, env), **{n: (p, env) for n, p in DAG_FILES.items()}}
        registry = many_workflows(Path(tmp) / "wf", args.workflows)
        big_env = {**env, "PREDICTION_WORKFLOWS_DIR": str(registry)}
        files[big] = (DAG_FILES["prediction_workflows"], big_env)
        for path, file_env in files.values():
            full_seconds(path, file_env)  # warm the file system cache and .pyc files
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift hits every file alike
            for label, (path, file_env) in files.items():
                samples.setdefault(("full", label), []).append(full_seconds(path, file_env))
                samples.setdefault(("incr", label), []).append(incremental_seconds(path, file_env))
    med = {key: statistics.median(values) * 1000 for key, values in samples.items()}
    print(f"median over {args.runs} fresh interpreters per figure")
    verdicts = []
    for kind, title in (("full", "full parse (Airflow import included)"),
                        ("incr", "incremental (after dag-processor imports)")):  # fmt: skip
        base = med[(kind, "trivial")]
        print(f"{title}:")
        print(f"  trivial DAG file                   {base:8.1f} ms")
        for name in files:
            if name == "trivial":
                continue
            ours = med[(kind, name)]
            print(f"  dags/{name + '.py':30} {ours:8.1f} ms   (+{ours - base:.1f} ms, "
                  f"{ours / base:.2f}x)")  # fmt: skip
            if kind == "full":
                verdicts.append((name, ours / base))
    for name, ratio in verdicts:
        print(f"target: {name} full-parse ratio <= 1.5x: {ratio:.2f}x "
              f"{'OK' if ratio <= 1.5 else 'OVER'}")  # fmt: skip


if __name__ == "__main__":
    main()
