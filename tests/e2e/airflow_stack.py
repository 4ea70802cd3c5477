"""A real Airflow 3.3 stack for end-to-end tests: api-server, scheduler, dag-processor, triggerer.

Isolated AIRFLOW_HOME with SQLite, or the PostgreSQL database given as
``database_url`` (see ``tests/e2e/postgres.py``), LocalExecutor, every listener on
127.0.0.1 and a free port. Each component runs in its own process group; ``stop`` ends
exactly those groups (SIGTERM, then SIGKILL after a grace period). Component
logs go to ``<home>/logs/<component>.log`` and are attached to errors.

    with AirflowStack(home, dags_folder=...) as stack:
        stack.airflow("dags", "trigger", "my_dag")
        stack.wait_for_run("my_dag", run_id, {"success"})
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.dag.helpers import home_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free port on 127.0.0.1 *below* the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, which the kernel may give next to a client
    socket (the components' connections to PostgreSQL, for one) before the server
    binds it: "address already in use". Ports below that range are never handed out
    to clients.
    """
    low, _ = _ephemeral_range()
    top = max(low, 11000)
    for _ in range(200):
        port = random.randrange(10000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 between 10000 and {top}")


def dags_folder(root: Path, dag_id: str, source: str) -> Path:
    """``root/dags`` holding one DAG file, ``<dag_id>.py``, from ``source`` (dedented)."""
    dags = root / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(textwrap.dedent(source))
    return dags


class AirflowStackError(RuntimeError):
    pass


class AirflowStack:
    def __init__(
        self,
        home: Path,
        *,
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        extra_env: Mapping[str, str] | None = None,
        component_args: Mapping[str, Sequence[str]] | None = None,
        database_url: str | None = None,
        serve_logs: bool = False,
    ) -> None:
        """``component_args``: extra CLI arguments per component, e.g.
        ``{"triggerer": ["--verbose"]}``. ``database_url``: an empty
        PostgreSQL database (SQLAlchemy URL) instead of SQLite in the home.

        ``serve_logs``: let the scheduler and the triggerer fork their log servers. Off by
        default: Airflow binds them to every interface (``airflow/utils/serve_logs/core.py``
        runs uvicorn with ``host=""``; the port settings cannot change the address), and
        the api-server reads the task logs from the shared home anyway.
        """
        self.home = Path(home)
        self.component_args = {k: list(v) for k, v in (component_args or {}).items()}
        if not serve_logs:
            for component in ("scheduler", "triggerer"):
                args = self.component_args.setdefault(component, [])
                if "--skip-serve-logs" not in args:
                    args.append("--skip-serve-logs")
        self.logs = self.home / "logs"
        self.api_port = free_port()
        self.scheduler_health_port = free_port()
        self.triggerer_log_port = free_port()
        self.worker_log_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.db_path = self.home / "airflow.db"
        self.database_url = database_url
        self.env = self._environment(dags_folder, plugins_folder, extra_env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.boot_seconds: float | None = None

    def _environment(self, dags: Path, plugins: Path, extra: Mapping[str, str]) -> dict[str, str]:
        env = home_env(self.home, dags, plugins)
        env.update(
            {
                # SQLite's default 5 s lock wait is too short for four components and a
                # CLI writing at once on a busy machine.
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url
                or f"sqlite:///{self.db_path}?timeout=60",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                    self.scheduler_health_port
                ),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.triggerer_log_port),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            }
        )
        env.update(extra)
        return env

    # -- commands ---------------------------------------------------------------------------

    def airflow(self, *args: str, check: bool = True, timeout: float = 300):
        """Run an ``airflow`` CLI command against this stack's database.

        A command that lost SQLite's write lock ("database is locked") is run again, up
        to five times in all, waiting 2, 4, 8 and 16 s between. The ``timeout`` in the
        URL does not cover every case: SQLite gives up at once, without calling its busy
        handler, when waiting could deadlock (a transaction that has read wants to write
        while another connection holds the write lock). If a later attempt fails too, the
        error shows the first lost lock as well: a command that had committed part of its
        work before may then fail for another reason ("already exists").
        """
        attempts = 5
        first_locked = ""
        for attempt in range(attempts):
            proc = subprocess.run(
                [str(BIN / "airflow"), *args],
                env=self.env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            locked = "database is locked" in proc.stderr
            if proc.returncode == 0 or not locked or attempt == attempts - 1:
                break
            first_locked = first_locked or proc.stderr[-1500:]
            time.sleep(2 ** (attempt + 1))
        if check and proc.returncode != 0:
            earlier = (
                f"\n(attempt 1 of {attempt + 1} lost the lock:)\n{first_locked}"
                if first_locked
                else ""
            )
            raise AirflowStackError(
                f"airflow {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}{earlier}"
            )
        return proc

    @property
    def database_kind(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Read the metadata database; ``?`` placeholders on either database.

        JSON columns come back as text on both (psycopg2 would decode them on PostgreSQL
        only). Timestamps come back as text on SQLite and as aware datetimes on PostgreSQL.
        """
        if self.database_url:
            import psycopg2
            import psycopg2.extras

            url = self.database_url.replace("postgresql+psycopg2://", "postgresql://")
            con = psycopg2.connect(url)
            try:
                psycopg2.extras.register_default_json(con, loads=str)
                psycopg2.extras.register_default_jsonb(con, loads=str)
                con.set_session(readonly=True, autocommit=True)
                with con.cursor() as cur:
                    cur.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))
                    return cur.fetchall()
            finally:
                con.close()
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, tuple(params)).fetchall()
        finally:
            con.close()

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> AirflowStack:
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.airflow("db", "migrate")
        for component in COMPONENTS:
            log = (self.logs / f"{component}.log").open("ab")
            self.procs[component] = subprocess.Popen(
                [str(BIN / "airflow"), component, *self.component_args.get(component, ())],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() ends its children too
            )
            log.close()
        try:
            self.wait_healthy(timeout=timeout - (time.monotonic() - started))
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as resp:
            return json.load(resp)

    def wait_healthy(self, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.health()
            except (urllib.error.URLError, OSError, ValueError) as err:
                last = err
            else:
                statuses = {
                    name: (last.get(name) or {}).get("status")
                    for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                }
                if all(status == "healthy" for status in statuses.values()):
                    return last
            time.sleep(1)
        raise AirflowStackError(f"stack not healthy after {timeout:.0f}s: {last}\n{self.tail()}")

    def _check_alive(self) -> None:
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowStackError(
                    f"{component} exited with {proc.returncode}\n{self.tail(component)}"
                )

    def tail(self, component: str | None = None, chars: int = 3000) -> str:
        names = [component] if component else list(self.procs)
        parts = []
        for name in names:
            path = self.logs / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self, grace: float = 20) -> None:
        """End every process group this stack started, and only those."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # The group may outlive its leader (task runners, api-server workers).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- waiting for runs -------------------------------------------------------------------

    def _scheduler_heartbeat(self) -> object:
        rows = self.query(
            "SELECT latest_heartbeat FROM job WHERE job_type = 'SchedulerJob' "
            "ORDER BY id DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    def wait_settled(self, beats: int = 3, timeout: float = 180) -> None:
        """Until nothing is left to happen: no callback waits for the dag-processor, and the
        scheduler heartbeated ``beats`` more times (as many loops at least) after that.

        For asserting that something did *not* happen (a second Slack message, an asset
        event after a failure): waits on the stack's progress, never a fixed time.
        """
        deadline = time.monotonic() + timeout
        seen, last = 0, self._scheduler_heartbeat()
        while seen < beats:
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"not settled after {timeout:.0f}s ({seen} heartbeats)\n{self.tail()}"
                )
            self._check_alive()
            time.sleep(0.5)
            pending = self.query("SELECT count(*) FROM callback WHERE type = 'dag_processor'")
            beat = self._scheduler_heartbeat()
            if pending[0][0]:
                seen, last = 0, beat  # count the loops from the last callback's pick-up
            elif beat != last:
                seen, last = seen + 1, beat

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has put ``dag_id`` in the metadata database."""
        deadline = time.monotonic() + timeout
        while not self.query("SELECT 1 FROM dag WHERE dag_id = ?", (dag_id,)):
            if time.monotonic() >= deadline:
                raise AirflowStackError(
                    f"{dag_id} not parsed after {timeout:.0f}s\n{self.tail('dag-processor')}"
                )
            time.sleep(1)

    def wait_for_run(self, dag_id: str, run_id: str, states: set[str], timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            self._check_alive()
            rows = self.query(
                "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            )
            state = rows[0][0] if rows else None
            if state in states:
                return state
            time.sleep(1)
        raise AirflowStackError(
            f"{dag_id}/{run_id} still {state!r} after {timeout:.0f}s\n{self.tail()}"
        )
