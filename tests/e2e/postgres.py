"""A throwaway PostgreSQL server for the Airflow stacks of the e2e and browser tests.

Cloud Composer runs Airflow on PostgreSQL, so the stacks that run the scheduler,
backfills and parallel runs use one too: Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``, apt package ``postgresql``), a fresh
cluster made by ``initdb`` in a temporary folder, listening on a free loopback
port and a socket in that folder, started and stopped with ``pg_ctl``. The
system service is never touched. PostgreSQL refuses to run as root, so as root
the cluster belongs to the ``postgres`` user the package creates (``runuser``).

    with PostgresServer() as server:
        url = server.create_database("e2e")   # postgresql+psycopg2://...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.airflow_stack import free_port

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "apt-get install -y postgresql"


def server_bin() -> Path | None:
    """Newest installed server's bin folder, or None."""
    if not PG_ROOT.is_dir():
        return None
    versions = sorted(
        (p for p in PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    try:
        import psycopg2  # noqa: F401  (Airflow's driver, requirements-dev.txt)
    except ImportError:
        return "psycopg2 is not installed (make setup)"
    if server_bin() is None:
        return f"no PostgreSQL server under {PG_ROOT} ({INSTALL_HINT})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root and there is no 'postgres' user ({INSTALL_HINT})"
        if shutil.which("runuser") is None:
            return "running as root and 'runuser' is missing (util-linux)"
    return None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL server")
        self.bin = bin_dir
        self.port = free_port()
        self.user = "airflow"
        self.root: Path | None = None
        self._as: list[str] = []

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if proc.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n{tail}"
            )
        return proc

    def start(self) -> PostgresServer:
        # Not under pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="kfp-bridge-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def describe(self) -> dict[str, str | int]:
        """What another process needs to use (and stop) this running server: ``attach``."""
        assert self.root is not None, "the server is not started"
        return {"bin": str(self.bin), "port": self.port, "root": str(self.root)}

    @classmethod
    def attach(cls, described: dict) -> PostgresServer:
        """The running server another process started (its ``describe()``)."""
        server = cls.__new__(cls)
        server.bin, server.port, server.user = Path(described["bin"]), described["port"], "airflow"
        server.root = Path(described["root"])
        server._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return server

    def create_database(self, name: str) -> str:
        """A new database; its SQLAlchemy URL for Airflow (psycopg2)."""
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.root is None:
            return
        pid_file = self.root / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                "-w", "-t", "60", "stop",
            )  # fmt: skip
        if pid is not None and pid_file.exists():  # pg_ctl could not stop it: our postmaster
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
