"""`make demo`: run the DAG for one target date through `airflow dags test`, and show it.

What `airflow dags test` alone does not do, and this wrapper adds:

- progress while it waits (the pipeline run's state and step, every few seconds);
- the failing step's error as soon as the run fails, and whether Airflow retries it
  (a permanent failure, i.e. bad input, fails the task at once);
- Ctrl-C / SIGTERM stops everything it started: `airflow dags test` ignores SIGTERM
  (so its process group is killed after a grace period) and the local pipeline runs
  detached (so it is canceled through the backend); the DAG run is then marked failed;
- a tidy metadata database afterwards: no trigger row is left for a later triggerer
  on the same database to pick up (`dags test` never runs the triggerer's own
  ``Trigger.clean_unused``), and the run's start time is when it really started
  (`dags test` records the logical date, which the UI shows as a run of hours or
  days), its triggering user "make demo".

The DAG stays paused: a demo must not switch on a daily production schedule behind
the user's back; `airflow dags unpause daily_prediction` does that deliberately.

A workflow of the registry (workflows/*.yaml) runs at its own scheduled time for the target
date (its daily cron, in its zone) and is watched on its own KFP connection; any other DAG
at 06:00 Asia/Tokyo on kfp_default unless --at / --kfp-conn-id say otherwise.

    python scripts/demo.py --date 2026-11-27 [--dag-id morning_ranking]
        (Airflow environment, AIRFLOW_HOME set)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

BIN = Path(sys.executable).parent
PROGRESS_SECONDS = 15.0  # a "still running" line at least this often
KILL_GRACE_SECONDS = 5.0
_STEP = re.compile(r"Executing task '([^']+)'|Task '([^']+)' finished with status (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of the `dags test` log worth repeating on screen (the operator's own words, and
# the task's state changes as the execution API records them).
_LOG_NEWS = re.compile(
    r"(?P<said>Reattaching to existing run .*|Submitted run \S+|Run \S+ \(.*\) is \w+ with other "
    r"parameters.*|Earlier run \S+ \(.*\) \w+ with other parameters.*)"
    r"|Task instance state updated.*new_state=(?P<state>\w+)"
)
_STATE_NEWS = {
    "up_for_retry": "the task failed; Airflow retries it after its retry delay "
    "(Ctrl-C stops the demo)",
    "failed": "the task failed (no retries left, or bad input that no retry can fix)",
    "deferred": "the task is deferred: the trigger waits for the pipeline run",
}


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say(text: str) -> None:
    print(f"make demo: {text}", flush=True)


DEFAULT_AT, DEFAULT_ZONE, DEFAULT_CONN = "06:00", "Asia/Tokyo", "kfp_default"
_DAILY_CRON = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")


class DemoSettings(NamedTuple):
    """How the demo runs one DAG: its daily time and zone, connection, target-date rule."""

    at: str
    zone: str
    kfp_conn_id: str
    target_tz: str = DEFAULT_ZONE
    partition: str = "daily"


def workflow_settings(dag_id: str) -> DemoSettings:
    """A registry workflow's daily run (HH:MM in its zone), connection and target-date rule;
    the defaults for any other DAG.

    The target date D's run is the one scheduled on D (the registry's daily rule); a
    workflow whose cron is not daily has no ``at`` (the caller needs --at).
    """
    from prediction_app.registry import load_registry

    for _, workflow in load_registry().workflows:
        if workflow.name == dag_id:
            match = _DAILY_CRON.match(workflow.schedule.cron.strip())
            return DemoSettings(
                f"{int(match[2]):02d}:{int(match[1]):02d}" if match else "",
                workflow.schedule.timezone,
                workflow.identity.kfp_conn_id,
                workflow.target_date.timezone,
                workflow.target_date.partition,
            )
    return DemoSettings(DEFAULT_AT, DEFAULT_ZONE, DEFAULT_CONN)


def scheduled_at(date: dt.date, at: str, zone: str):
    """The logical date of the run scheduled at ``at`` (HH:MM) in ``zone`` on ``date``."""
    import pendulum

    try:
        hour, minute = (int(part) for part in at.split(":"))
        return pendulum.datetime(date.year, date.month, date.day, hour, minute, tz=zone)
    except ValueError as exc:
        raise SystemExit(f"make demo: --at {at!r} is not a time HH:MM: {exc}") from None


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise SystemExit(f"make demo: DATE={text!r} is not a date (YYYY-MM-DD): {exc}") from None


class RunWatch:
    """Follows the pipeline runs of one task instance on the local backend and reports."""

    def __init__(self, backend, run_names: list[str]) -> None:
        self.backend = backend
        self.run_names = run_names
        self.before = {r.run_id for r in self._find()}
        self.seen: dict[str, tuple[str, str | None]] = {}
        self.started = time.monotonic()
        self.last_said = time.monotonic()

    def _find(self) -> list:
        return [r for name in self.run_names for r in self.backend.find_runs(name)]

    def new_runs(self) -> list:
        return [r for r in self._find() if r.run_id not in self.before]

    def _step(self, run_id: str) -> str | None:
        try:
            text = (self.backend.state_dir / run_id / "runner.log").read_text(errors="replace")
        except OSError:
            return None
        running: list[str] = []
        for started, finished, _ in _STEP.findall(_ANSI.sub("", text)):
            if started:
                running.append(started)
            elif finished in running:
                running.remove(finished)
        return running[-1] if running else None

    def tick(self, task_state: str | None) -> None:
        from kfp_bridge.failures import parse_failure

        for run in reversed(self.new_runs()):  # oldest first
            step = None if run.state.is_terminal else self._step(run.run_id)
            now = (run.state.value, step)
            if self.seen.get(run.run_id) == now:
                continue
            self.seen[run.run_id] = now
            where = f", step {step}" if step else ""
            say(f"pipeline run {run.run_id[:8]} {run.state.value}{where}")
            self.last_said = time.monotonic()
            if run.state.value == "FAILED":
                say("the pipeline run failed:")
                lines = (run.error or "no error recorded").splitlines()
                shown = lines if len(lines) <= 8 else [*lines[:3], "...", *lines[-3:]]
                for line in shown:
                    print(f"    {line}", flush=True)
                failure = parse_failure(run.error)
                if failure is not None and failure.permanent:
                    where = f" ({failure.input})" if failure.input else ""
                    say(f"bad input{where}: the task fails now, without retries")
                say(f"the whole run log: {self.backend.run_url(run.run_id)}")
        if time.monotonic() - self.last_said >= PROGRESS_SECONDS:
            runs = ", ".join(f"{s}{f' ({p})' if p else ''}" for s, p in self.seen.values())
            parts = [
                f"task {task_state}" if task_state else "",
                f"pipeline run {runs}" if runs else "",
            ]
            elapsed = time.monotonic() - self.started
            say(f"... {elapsed:.0f}s: {'; '.join(p for p in parts if p) or 'starting'}")
            self.last_said = time.monotonic()


class LogNews:
    """New lines of the `dags test` log that say something about the task."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.task_state: str | None = None

    def tick(self) -> None:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return
        complete, _, _ = chunk.rpartition(b"\n")
        self.offset += len(complete) + (1 if complete else 0)
        for line in complete.decode(errors="replace").splitlines():
            match = _LOG_NEWS.search(_ANSI.sub("", line))
            if match and match["said"]:
                say(match["said"])
            elif match and match["state"]:
                self.task_state = match["state"]
                if match["state"] in _STATE_NEWS:
                    say(_STATE_NEWS[match["state"]])


def stop_group(proc: subprocess.Popen) -> None:
    """End `airflow dags test` and its process group: SIGTERM, then SIGKILL (it ignores TERM)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader


def tidy(dag_id: str, since: dt.datetime, *, failed: bool) -> str | None:
    """Leave the metadata DB as a scheduler would: no stray trigger, real times. Run state."""
    from airflow.models.dagrun import DagRun
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == dag_id, DagRun.run_after >= since)
            .order_by(DagRun.id.desc())
            .first()
        )
        if run is None:
            return None
        if failed:  # interrupted: what "mark failed" in the UI would leave
            for ti in run.get_task_instances(session=session):
                if ti.state not in (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED):
                    ti.set_state(TaskInstanceState.FAILED, session=session)
            run.set_state(DagRunState.FAILED)
        run.start_date = run.run_after  # dags test records the logical date here
        run.triggering_user_name = "make demo"
        session.flush()
        state = str(run.state)
    Trigger.clean_unused()
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, help="target date YYYY-MM-DD (JST)")
    parser.add_argument("--dag-id", default="daily_prediction")
    parser.add_argument("--task-id", default="predict")
    parser.add_argument("--at", help="scheduled time HH:MM (default: the workflow's, or 06:00)")
    parser.add_argument("--kfp-conn-id", help="default: the workflow's, or kfp_default")
    parser.add_argument("--log", default="var/airflow/dags-test.log")
    args = parser.parse_args(argv)
    date = parse_date(args.date)

    from kfp_bridge.hooks.kfp import KubeflowPipelineHook
    from kfp_bridge.operators.kfp import run_name_for
    from prediction_app.target_date import kfp_run_key

    settings = workflow_settings(args.dag_id)
    if not (args.at or settings.at):
        raise SystemExit(f"make demo: {args.dag_id} does not run daily; give --at HH:MM")
    logical = scheduled_at(date, args.at or settings.at, settings.zone)
    # The task's run name: the workflow's run_key (the target date of this manual run,
    # `airflow dags test` makes one, by its own target-date rule), or the provider's
    # default for a DAG without one.
    key = kfp_run_key(
        {"logical_date": logical, "run_after": logical, "run_type": "manual"},
        settings.target_tz,
        settings.partition,
    )
    run_names = [
        run_name_for(args.dag_id, args.task_id, key),
        run_name_for(args.dag_id, args.task_id, logical),
    ]
    backend = KubeflowPipelineHook(kfp_conn_id=args.kfp_conn_id or settings.kfp_conn_id).get_conn()
    watch = RunWatch(backend, run_names)
    news = LogNews(Path(args.log))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)

    def interrupt(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    say(
        f"running {args.dag_id} for target date {date} through airflow dags test "
        f"(log: {args.log}) ..."
    )
    with open(args.log, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "dags", "test", args.dag_id, logical.isoformat()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the terminal's Ctrl-C comes to us
        )
    try:
        while proc.poll() is None:
            news.tick()
            watch.tick(news.task_state)
            time.sleep(1)
        news.tick()
        watch.tick(news.task_state)
    except Interrupted as stop:
        say(f"{stop}: stopping airflow dags test and the pipeline run ...")
        stop_group(proc)
        for run in watch.new_runs():
            if not run.state.is_terminal:
                backend.cancel(run.run_id)
                say(f"canceled pipeline run {run.run_id}")
        tidy(args.dag_id, since, failed=True)
        say("stopped; the DAG run is marked failed")
        return 128 + stop.signum
    state = tidy(args.dag_id, since, failed=False)
    if state != "success":
        say(f"the DAG run {state or 'did not start'}; full log: {args.log}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
