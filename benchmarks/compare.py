"""KFP-only vs Airflow + kfp-bridge, measured: three target dates, one injected failure.

    .venv/bin/python benchmarks/compare.py [--first-date 2026-11-25] [--work-dir DIR]
        [--json FILE] [--keep]                                          (make compare)

Three ways run the same two components on the local backend over three consecutive JST
target dates D1..D3, each on its own copy of the same demo warehouse:

* **KFP-only, naive**: ``daily_prediction_kfp_only_naive.yaml`` compiled under
  ``faketime 'D0 06:00'`` (D0 = D1 - 1, TZ=Asia/Tokyo), each run under ``faketime 'Dn 06:00'``;
* **KFP-only, placeholder**: ``daily_prediction_kfp_only.yaml``; kfp.local 2.17 cannot resolve
  the schedule/create time placeholders, so each run's scheduled time (Dn-1 21:00:00Z, what a
  recurring run on ``0 0 21 * * *`` gets) is fed explicitly (``benchmarks/kfp_only/local.py``);
* **ours**: the real DAG through real Airflow, ``airflow dags test daily_prediction
  DnT06:00:00+09:00`` (the logical date the scheduler gives that run), retries shortened with
  ``DAILY_PREDICTION_RETRY_DELAY_SECONDS`` (the DAG reads it; nothing else differs).

Injected failure: the page views of D2-1 are withheld while D2 runs (late data), so the
features step's source check fails on every try. The data then "arrives" and D2 is rerun on
D3 at 10:00 JST the way each side can. Slack goes to one loopback webhook (a path per way).
Prints one side-by-side table (markdown) and, with ``--json``, the facts behind it.
Needs Debian's ``faketime`` (``make compare`` installs it when it can).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kfp_bridge.backends import _procfs as procfs
from kfp_bridge.backends._kfp_local_log import strip_ansi, task_started

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = REPO / ".venv" / "bin" / "airflow"
PIPELINE_PY = REPO / ".venv-pipeline" / "bin" / "python"
WAREHOUSE_TOOL = REPO / "benchmarks" / "compare_warehouse.py"
JST = dt.timezone(dt.timedelta(hours=9), "JST")
WAYS = ("naive", "placeholder", "ours")
TITLES = {
    "naive": "KFP-only, naive (date at compile time)",
    "placeholder": "KFP-only, placeholder (date at run time)",
    "ours": "ours (Airflow + kfp-bridge)",
}
RETRY_DELAY_SECONDS = 1  # both sides: ours via the DAG's env, KFP-only via set_retry backoff


# -- measuring one run: wall time, processes, CPU ------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, start time, CPU ticks used so far), from /proc."""
    return {
        pid: (
            int(fields[procfs.PARENT]),
            int(fields[procfs.START_TIME]),
            int(fields[procfs.USER_TICKS]) + int(fields[procfs.SYSTEM_TICKS]),
        )
        for pid, fields in procfs.processes()
    }


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a][:4]
    text = " ".join(Path(w).name if w.startswith("/") else w for w in words)
    return " ".join(text.split())[:60]


class ProcessCounter(threading.Thread):
    """Every process descending from ``root`` while it runs, sampled every 50 ms.

    Counts and CPU are floors: a process living less than the interval can be missed, and
    CPU used after a process's last sample is not seen. Sampling (rather than the
    ``RUSAGE_CHILDREN`` of the root) also sees processes nobody waits for, such as the local
    backend's detached runner.
    """

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.done = root, threading.Event()
        self.cpu: dict[tuple[int, int], int] = {}
        self.commands: dict[tuple[int, int], str] = {}

    def run(self) -> None:
        while True:
            self.sample()
            if self.done.wait(0.05):
                return

    def sample(self) -> None:
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        # Known processes stay roots of the walk: an orphan is reparented away from its tree.
        stack = [self.root] + [
            pid for pid, start in self.cpu if table.get(pid, ())[1:2] == (start,)
        ]
        visited = set()
        while stack:
            pid = stack.pop()
            if pid in visited or pid not in table:
                continue
            visited.add(pid)
            key = (pid, table[pid][1])
            if key not in self.cpu:
                self.commands[key] = _command(pid)
            self.cpu[key] = max(self.cpu.get(key, 0), table[pid][2])
            stack.extend(children.get(pid, ()))

    @property
    def count(self) -> int:
        return len(self.cpu)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values()) / _TICK


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    processes: int
    commands: list[str]
    log: str


def run_measured(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 900) -> Measured:
    """Run ``cmd`` to completion with its output in ``log``; wall time, CPU, processes."""
    start = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        counter = ProcessCounter(process.pid)
        counter.start()
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            counter.done.set()
            counter.join()
            if process.poll() is None:  # timed out or interrupted: its whole process group
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return Measured(
        returncode,
        time.monotonic() - start,
        counter.cpu_seconds,
        counter.count,
        sorted(counter.commands.values()),
        str(log),
    )


# -- the loopback Slack webhook ---------------------------------------------------------------
class Webhook:
    """A Slack incoming webhook on 127.0.0.1: ``/services/T000/B000/<way>-<token>``."""

    def __init__(self) -> None:
        self.messages: dict[str, list[str]] = {way: [] for way in WAYS}
        self.tokens = {way: f"{way}-{secrets.token_hex(8)}" for way in WAYS}
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                way = self.path.rsplit("/", 1)[-1].split("-", 1)[0]
                text = json.loads(body or b"{}").get("text", "")
                webhook.messages.setdefault(way, []).append(text)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/services"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, way: str) -> str:
        return f"{self.base}/T000/B000/{self.tokens[way]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- one run of one way -------------------------------------------------------------------------
@dataclass
class Run:
    """One command of one way and what it did."""

    way: str
    label: str  # D1, D2, D3, rerun D2
    target_date: str  # the date this run is meant for
    command: str
    state: str = ""
    wrote: list[str] = field(default_factory=list)
    attempts: int = 0  # tries of the failed step (KFP-only) or pipeline runs started (ours)
    wall_s: float = 0.0
    pipeline_s: float | None = None  # ours: seconds inside the pipeline runs it started
    cpu_s: float = 0.0
    processes: int = 0
    commands: list[str] = field(default_factory=list)  # what the processes were
    slack: list[str] = field(default_factory=list)
    log: str = ""


def _run_seconds(state_file: Path) -> float:
    """How long a local backend run ran (its runner's start to finish)."""
    state = json.loads(state_file.read_text())
    start, end = state.get("started_at"), state.get("finished_at")
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _snapshot(warehouse: Path) -> dict[str, tuple[int, int]]:
    folder = warehouse / "predictions"
    return {
        p.stem: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(folder.glob("*.parquet"))
    }


def _written(before: dict, after: dict) -> list[str]:
    return sorted(name for name, stamp in after.items() if before.get(name) != stamp)


class Comparison:
    def __init__(self, work: Path, first: dt.date) -> None:
        self.work = work
        self.dates = [first + dt.timedelta(days=i) for i in range(3)]
        self.compile_day = first - dt.timedelta(days=1)
        self.rerun_at = dt.datetime.combine(self.dates[2], dt.time(10), tzinfo=JST)
        self.webhook = Webhook()
        self.runs: list[Run] = []
        self.warehouses = {way: work / f"warehouse-{way}" for way in WAYS}
        self.model = work / "models" / "demo_model.pkl"
        self.compiled = work / "compiled"
        self.airflow_home = work / "airflow"
        self.local_runs = work / "kfp-local-runs"
        self.notes: dict[str, Any] = {}

    # environments
    def _base_env(self) -> dict[str, str]:
        prefixes = ("AIRFLOW", "FAKETIME", "DAILY_PREDICTION_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.pop("LD_PRELOAD", None)
        env["PYTHONWARNINGS"] = "ignore"
        return env

    def _faked(self, when: dt.datetime) -> tuple[list[str], dict[str, str]]:
        """``faketime`` prefix for a JST wall-clock time (monotonic clocks left alone)."""
        env = self._base_env() | {"TZ": "Asia/Tokyo", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        return ["faketime", when.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S")], env

    def _airflow_env(self) -> dict[str, str]:
        digest = (self.model.parent / "demo_model.pkl.sha256").read_text().split()[0]
        home = self.airflow_home
        slack = {
            "conn_type": "slackwebhook",
            "host": self.webhook.base,
            "password": "T000/B000/" + self.webhook.tokens["ours"],
        }
        kfp = {
            "conn_type": "kfp",
            "extra": {"backend": "local", "local_state_dir": str(self.local_runs)},
        }
        return self._base_env() | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(kfp),
            "AIRFLOW_CONN_SLACK_DEFAULT": json.dumps(slack),
            "DAILY_PREDICTION_WAREHOUSE": str(self.warehouses["ours"]),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(self.model),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
            "KFP_BRIDGE_HOME": str(REPO),
            "DAILY_PREDICTION_POLL_SECONDS": "1",  # airflow dags test: no scheduler to race
            "DAILY_PREDICTION_RETRY_DELAY_SECONDS": str(RETRY_DELAY_SECONDS),
        }

    def _pipeline(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [str(PIPELINE_PY), *args],
            cwd=REPO,
            env=env or self._base_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise SystemExit(f"compare: {' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    # set-up
    def prepare(self) -> None:
        source = self.work / "warehouse-source"
        end = (self.dates[-1] - dt.timedelta(days=1)).isoformat()
        self._pipeline(
            "-m", "kfp_prediction.demo_data", "--warehouse", str(source), "--size", "demo",
            "--end-date", end,
        )  # fmt: skip
        self._pipeline(
            "-m", "kfp_prediction.demo_model", "--warehouse", str(source), "--out", str(self.model)
        )
        for warehouse in self.warehouses.values():
            shutil.copytree(source, warehouse)
        # The naive team compiles on D0 at 06:00 JST, with its laptop's clock.
        prefix, env = self._faked(dt.datetime.combine(self.compile_day, dt.time(6), tzinfo=JST))
        start = time.monotonic()
        subprocess.run(
            [*prefix, str(PIPELINE_PY), "-m", "benchmarks.kfp_only.compile", "--output-dir",
             str(self.compiled), "--kfp-only-retry-backoff", str(RETRY_DELAY_SECONDS),
             "--naive-clock", "system"],
            cwd=REPO, env=env, check=True, capture_output=True,
        )  # fmt: skip
        naive = (self.compiled / "daily_prediction_kfp_only_naive.yaml").read_text()
        self.notes["naive_compiled_dates"] = sorted(set(re.findall(r"'(\d{4}-\d\d-\d\d)'", naive)))
        self.notes["compile_s"] = round(time.monotonic() - start, 1)
        start = time.monotonic()
        migrate = subprocess.run(
            [str(AIRFLOW), "db", "migrate"], env=self._airflow_env(), capture_output=True, text=True
        )
        if migrate.returncode:
            raise SystemExit(f"compare: airflow db migrate failed:\n{migrate.stdout[-3000:]}")
        self.notes["airflow_db_migrate_s"] = round(time.monotonic() - start, 1)

    # one run of each way
    def _record(self, run: Run, cmd: list[str], env: dict[str, str]) -> Measured:
        warehouse = self.warehouses[run.way]
        before, slack_before = _snapshot(warehouse), len(self.webhook.messages[run.way])
        log = self.work / "logs" / f"{run.way}-{run.label.replace(' ', '-')}.log"
        log.parent.mkdir(exist_ok=True)
        measured = run_measured(cmd, env, log)
        run.wrote = _written(before, _snapshot(warehouse))
        run.slack = self.webhook.messages[run.way][slack_before:]
        run.wall_s, run.cpu_s = round(measured.wall_s, 1), round(measured.cpu_s, 1)
        run.processes, run.commands, run.log = measured.processes, measured.commands, measured.log
        self.runs.append(run)
        return measured

    def _kfp_only(self, way: str, label: str, date: dt.date, at: dt.datetime) -> None:
        """One run of a KFP-only variant, started at ``at`` (clock faked or time fed)."""
        name = (
            "daily_prediction_kfp_only_naive.yaml"
            if way == "naive"
            else ("daily_prediction_kfp_only.yaml")
        )
        args = [
            str(PIPELINE_PY), "-m", "benchmarks.kfp_only.local",
            "--pipeline", str(self.compiled / name),
            "--slack-webhook-url", self.webhook.url(way),
            "--warehouse", str(self.warehouses[way]), "--model-uri", str(self.model),
            "--pipeline-root", str(self.work / f"kfp-local-{way}"),
        ]  # fmt: skip
        if way == "naive":
            prefix, env = self._faked(at)
            cmd = [*prefix, *args]
        else:
            utc = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            cmd, env = [*args, "--scheduled-time", utc], self._base_env()
        run = Run(way, label, date.isoformat(), " ".join(Path(c).name for c in cmd[:3]) + " ...")
        measured = self._record(run, cmd, env)
        log = strip_ansi(Path(measured.log).read_text(errors="replace"))
        result = next(
            (json.loads(ln) for ln in reversed(log.splitlines()) if ln.startswith("{")), {}
        )
        run.state = result.get("state") or f"exit {measured.returncode}"
        run.attempts = sum(task_started(ln) == "features" for ln in log.splitlines())

    def _ours(self, label: str, date: dt.date) -> None:
        logical = f"{date.isoformat()}T06:00:00+09:00"
        cmd = [str(AIRFLOW), "dags", "test", "daily_prediction", logical]
        before = set(self.local_runs.glob("*/request.json")) if self.local_runs.exists() else set()
        run = Run("ours", label, date.isoformat(), f"airflow dags test daily_prediction {logical}")
        measured = self._record(run, cmd, self._airflow_env())
        started = set(self.local_runs.glob("*/request.json")) - before
        run.attempts = len(started)
        run.pipeline_s = round(sum(_run_seconds(p.parent / "state.json") for p in started), 1)
        run.state = "success" if measured.returncode == 0 else "failed"

    def _withhold(self, day: dt.date) -> None:
        tool = [str(WAREHOUSE_TOOL), "withhold", day.isoformat()]
        self._pipeline(*tool, *map(str, self.warehouses.values()))

    def _restore(self) -> None:
        self._pipeline(str(WAREHOUSE_TOOL), "restore", *map(str, self.warehouses.values()))

    def run_all(self) -> None:
        for index, date in enumerate(self.dates):
            label = f"D{index + 1}"
            at = dt.datetime.combine(date, dt.time(6), tzinfo=JST)  # the 06:00 JST slot
            if index == 1:
                self._withhold(date - dt.timedelta(days=1))
            try:
                self._kfp_only("naive", label, date, at)
                self._kfp_only("placeholder", label, date, at)
                self._ours(label, date)
            finally:
                if index == 1:
                    self._restore()
        # The late data has arrived; rerun D2 on D3 at 10:00 JST.
        self._kfp_only("naive", "rerun D2", self.dates[1], self.rerun_at)
        self._kfp_only("placeholder", "rerun D2", self.dates[1], self.rerun_at)
        self._ours("rerun D2", self.dates[1])
        self._backfill_plan()

    def _backfill_plan(self) -> None:
        """What ``airflow backfill create`` would run for D1..D3 (``--dry-run``: no scheduler)."""
        first, last = self.dates[0].isoformat(), self.dates[-1].isoformat()
        cmd = [
            str(AIRFLOW), "backfill", "create", "--dag-id", "daily_prediction",
            "--from-date", f"{first}T00:00:00+09:00", "--to-date", f"{last}T23:59:59+09:00",
            "--reprocess-behavior", "completed", "--dry-run",
        ]  # fmt: skip
        log = self.work / "logs" / "ours-backfill-dry-run.log"
        measured = run_measured(cmd, self._airflow_env(), log)
        text = Path(measured.log).read_text(errors="replace")
        logical = re.findall(r"\|\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00)\s*\|", text)
        targets = [dt.datetime.fromisoformat(t).astimezone(JST).date().isoformat() for t in logical]
        self.notes["backfill"] = {
            "command": " ".join(["airflow", *cmd[1:-1]]),
            "dry_run_logical_dates": logical,
            "dry_run_target_dates": targets,
            "dry_run_wall_s": round(measured.wall_s, 1),
        }

    # facts
    def partitions(self, way: str) -> dict[str, Any]:
        tool = [str(WAREHOUSE_TOOL), "partitions", str(self.warehouses[way])]
        return json.loads(self._pipeline(*tool))

    def secret_files(self, way: str) -> list[str]:
        """Files of this way's runs (logs, run folders, outputs) holding its webhook token."""
        token = self.webhook.tokens[way].split("-", 1)[1]
        roots = [self.work / "logs"]
        roots += (
            [self.airflow_home / "logs", self.local_runs]
            if way == "ours"
            else [self.work / f"kfp-local-{way}"]
        )
        found = []
        for root in roots:
            for path in root.rglob("*") if root.exists() else ():
                mine = root.name != "logs" or path.name.startswith(way)
                if mine and path.is_file() and token in path.read_text(errors="replace"):
                    found.append(str(path.relative_to(self.work)))
        return sorted(found)

    def facts(self) -> dict[str, Any]:
        ways = {}
        for way in WAYS:
            runs = [r for r in self.runs if r.way == way]
            messages = [m for r in runs for m in r.slack]
            ways[way] = {
                "runs": [asdict(r) for r in runs],
                "partitions": self.partitions(way),
                "partitions_after_d3": sorted({d for r in runs[:3] for d in r.wrote}),
                "times_written": {
                    d: sum(d in r.wrote for r in runs)
                    for d in sorted({d for r in runs for d in r.wrote})
                },
                "slack": [slack_facts(m, r) for r in runs for m in r.slack],
                "slack_count": len(messages),
                "secret_files": self.secret_files(way),
            }
        return {
            "produced_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "target_dates": [d.isoformat() for d in self.dates],
            "compile_day": self.compile_day.isoformat(),
            "rerun_at": self.rerun_at.isoformat(),
            "withheld_day": (self.dates[1] - dt.timedelta(days=1)).isoformat(),
            "ways": ways,
            **self.notes,
        }


def slack_facts(text: str, run: Run) -> dict[str, Any]:
    """What one message tells the person on call."""
    first = text.splitlines()[0] if text else ""
    if run.way != "ours":
        kind = "pipeline exit"
    elif re.search(r"\(try \d+ of \d+\)", first):
        kind = "failed try"
    else:
        kind = "run summary"
    return {
        "run": run.label,
        "kind": kind,
        "first_line": first,
        "failure": not any(s in first for s in ("SUCCEEDED", "COMPLETE")),
        "names_failed_component": bool(re.search(r"(?<![\w/-])features(?![\w/-])", text)),
        "names_try": bool(re.search(r"\btry \d+ of \d+", text)),
        "names_target_date": run.target_date in text,
        "run_link": bool(re.search(r"(https?|file)://\S+", text)),
    }


# -- the table ----------------------------------------------------------------------------------
def _yes(flags: list[bool]) -> str:
    if not flags:
        return "n/a"
    return "yes" if all(flags) else "no" if not any(flags) else f"{sum(flags)}/{len(flags)}"


def _run_cell(run: dict[str, Any]) -> str:
    wrote = ", ".join(run["wrote"]) or "nothing"
    if run["way"] == "ours":
        tries = f", {run['attempts']} tries = pipeline runs" if run["attempts"] > 1 else ""
    else:
        tries = f", features tried {run['attempts']} times in 1 run" if run["attempts"] > 1 else ""
    return f"{run['state']}{tries} → wrote {wrote}"


def render(facts: dict[str, Any]) -> str:
    ways = facts["ways"]
    d1, d2, d3 = facts["target_dates"]
    header = "| | " + " | ".join(TITLES[w] for w in WAYS) + " |"
    rows = [header, "|---|" + "---|" * len(WAYS)]

    def row(name: str, cells: list[str]) -> None:
        rows.append(f"| {name} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    row(
        "where the date comes from",
        [
            f"`datetime.now()` in the pipeline function: compiled on {facts['compile_day']} "
            f"under faketime, constant {', '.join(facts.get('naive_compiled_dates', []))}",
            "schedule/create time placeholder → JST date component; time **fed explicitly** "
            "(kfp.local 2.17 crashes on these placeholders)",
            "logical date of the run (`airflow dags test DAG DT06:00+09:00`, as the scheduler "
            "sets it) → `target_date(dag_run)`",
        ],
    )
    labels = ["D1", "D2", "D3", "rerun D2"]
    titles = {
        "D1": f"run for D1 {d1}",
        "D2": f"run for D2 {d2} (page views of {facts['withheld_day']} withheld)",
        "D3": f"run for D3 {d3}",
        "rerun D2": f"rerun D2 after the data arrived (on {facts['rerun_at'][:16]} JST)",
    }
    by_label = {w: {r["label"]: r for r in ways[w]["runs"]} for w in WAYS}
    for label in labels:
        row(titles[label], [_run_cell(by_label[w][label]) for w in WAYS])
    row(
        "partitions after D1..D3",
        [", ".join(ways[w]["partitions_after_d3"]) or "none" for w in WAYS],
    )
    row(
        "partitions at the end (times written)",
        [", ".join(f"{d} ({n})" for d, n in ways[w]["times_written"].items()) for w in WAYS],
    )
    row(
        "rerun one date: command",
        [
            "a one-off run of the same compiled file: writes the compile day again",
            "a one-off run: its create time gives the date *of the rerun day*; "
            "a past date cannot be rerun",
            "`airflow tasks clear daily_prediction -s D -e D` (here `airflow dags test` with D's "
            "logical date): a new pipeline run of the same name, that date's partition replaced",
        ],
    )
    backfill = facts.get("backfill", {})
    row(
        "backfill D1..D3",
        [
            "impossible without recompiling per date under a faked clock",
            "no backfill; catch-up runs (`no_catchup=false`) all get the catch-up moment as "
            "schedule time (KFP 2.17 `resource_manager.go` `CreateRun`, read, not run)",
            f"`{backfill.get('command', '?')}`: one command; dry run planned "
            f"{', '.join(backfill.get('dry_run_target_dates', [])) or '?'}",
        ],
    )
    row("Slack messages", [_slack_summary(ways[w]["slack"]) for w in WAYS])
    for key, name in (
        ("names_failed_component", "each failure message names the failed component"),
        ("names_try", "… the try"),
        ("names_target_date", "… the target date"),
        ("run_link", "… a run link"),
    ):
        cells = []
        for w in WAYS:
            checked = [m for m in ways[w]["slack"] if m["failure"] and m["kind"] != "run summary"]
            cells.append(_yes([m[key] for m in checked]))
        row(name, cells)
    row(
        "webhook secret in the run's files (logs, run folders, outputs)",
        [_secret_cell(w, ways[w]["secret_files"]) for w in WAYS],
    )
    for label in labels:
        cells = []
        for w in WAYS:
            run = by_label[w][label]
            inside = f" (runs {run['pipeline_s']})" if run["pipeline_s"] is not None else ""
            cells.append(f"{run['wall_s']}{inside} / {run['cpu_s']} / {run['processes']}")
        row(f"wall s / CPU s / processes, {label}", cells)
    notes = [
        f"Produced {facts['produced_at']} (load average {facts['load_average']}), demo data "
        f"(10,000 users), retries 3 with a {RETRY_DELAY_SECONDS} s first delay on both sides.",
        "Clocks: naive compiled and run under `faketime` (TZ=Asia/Tokyo); placeholder variant: "
        "scheduled time fed explicitly as the KFP 2.17 driver resolves it (D-1 21:00:00Z; the "
        "rerun's create time); ours: the logical date, real clock.",
        "Wall/CPU/processes are per command on kfp.local (every task a process); processes and "
        "CPU are sampled every 50 ms (floors). Ours is the whole `airflow dags test` command "
        "(Airflow's start, DAG parse, 1 s polls, retry delays); '(runs N)' is the time inside "
        "the pipeline runs it started. The metadata DB was migrated once beforehand "
        f"({facts.get('airflow_db_migrate_s', '?')} s).",
    ]
    return "\n".join([*rows, "", *notes])


def _secret_cell(way: str, files: list[str]) -> str:
    where = ", ".join(sorted({f.split("/")[0] + "/" for f in files}))
    found = f"in {len(files)} files ({where})" if files else "in no file"
    if way == "ours":
        return found + "; it lives in the Airflow connection `slack_default`"
    return found + "; it is a run parameter, stored with every run and the recurring run"


def _slack_summary(messages: list[dict[str, Any]]) -> str:
    if not messages:
        return "0"
    exits = [m for m in messages if m["kind"] == "pipeline exit"]
    if exits:
        failed = sum(m["failure"] for m in exits)
        ok = len(exits) - failed
        return f"{len(messages)}, one per pipeline exit ({failed} FAILED, {ok} SUCCEEDED)"
    tries = sum(m["kind"] == "failed try" for m in messages)
    summaries = sum(m["kind"] == "run summary" for m in messages)
    return (
        f"{len(messages)}: one per failed try ({tries}) + run summary ({summaries}); "
        "none on success"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 25))
    parser.add_argument("--work-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--json", type=Path, help="write the facts behind the table here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if shutil.which("faketime") is None:
        print("compare: needs Debian's faketime (apt-get install -y faketime)", file=sys.stderr)
        return 2
    if args.first_date + dt.timedelta(days=2) >= dt.date.today():
        print("compare: the three dates must be in the past (a backfill takes no future dates)")
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kfp-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(work, args.first_date)
    try:
        comparison.prepare()
        comparison.run_all()
        facts = comparison.facts()
    finally:
        comparison.webhook.close()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(render(facts))
    if args.json:
        args.json.write_text(json.dumps(facts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
