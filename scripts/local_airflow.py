"""``make airflow``: the Airflow UI on this machine, with the demo's settings.

Starts api-server, scheduler (LocalExecutor), dag-processor and triggerer on
127.0.0.1, each in its own process group with its log under
``$AIRFLOW_HOME/logs/<component>.log``; prints the URL and how to log in
(simple auth manager, user ``admin`` with a generated password kept in
``$AIRFLOW_HOME/simple_auth_manager_passwords.json``); on Ctrl-C (or SIGTERM)
stops every process group it started, and only those.

The Makefile passes the demo's environment (AIRFLOW_HOME=var/airflow, SQLite,
this repository's dags/ and plugins/, the ``kfp_default`` local connection, the
model digest); this script adds what a long-running stack needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

COMPONENTS = {
    "api-server": [],
    # Task logs are files under AIRFLOW_HOME that the api-server reads itself: no log
    # servers, which would listen on every interface.
    "scheduler": ["--skip-serve-logs"],
    "dag-processor": [],
    "triggerer": ["--skip-serve-logs"],
}
USER = "admin"
ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _password(home: Path) -> tuple[Path, str]:
    """The admin's password from the passwords file, created on first use."""
    path = home / "simple_auth_manager_passwords.json"
    passwords = json.loads(path.read_text()) if path.exists() else {}
    if USER not in passwords:
        passwords[USER] = "".join(secrets.choice(ALPHABET) for _ in range(16))
        path.write_text(json.dumps(passwords) + "\n")
        path.chmod(0o600)
    return path, passwords[USER]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stack_env(home: Path, port: int, passwords_file: Path) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    database = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{home}/airflow.db"
    if database.startswith("sqlite") and "timeout=" not in database:
        # wait for SQLite's lock rather than fail while four components write
        database += ("&" if "?" in database else "?") + "timeout=60"
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Tokyo",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            # With a real scheduler a trigger must not fire within seconds (README).
            "DAILY_PREDICTION_POLL_SECONDS": "15",
        }
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
            health = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", 8080)))
    args = parser.parse_args()
    home = Path(os.environ["AIRFLOW_HOME"])
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not _port_free(args.port):
        print(f"make airflow: port {args.port} on 127.0.0.1 is in use; try AIRFLOW_PORT=8081")
        return 1
    passwords_file, password = _password(home)
    env = stack_env(home, args.port, passwords_file)
    url = env["AIRFLOW__API__BASE_URL"]
    airflow = str(Path(sys.executable).with_name("airflow"))
    procs: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nmake airflow: stopping", ", ".join(procs), flush=True)
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs.values():  # children (task runners, workers) may outlive a leader
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        print("make airflow: stopped", flush=True)

    # SIGINT too: a shell may start us with it ignored (background jobs), Ctrl-C must work
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        for name, extra in COMPONENTS.items():
            with (logs / f"{name}.log").open("ab") as log:
                procs[name] = subprocess.Popen(
                    [airflow, name, *extra],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        print(f"make airflow: starting {', '.join(procs)} (logs in {logs}) ...", flush=True)
        ready = False
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"make airflow: {name} exited with {proc.returncode}:")
                    print(_tail(logs / f"{name}.log"))
                    return 1
            if not ready and _healthy(url):
                ready = True
                print(
                    f"\nAirflow UI: {url}\n"
                    f"Log in as {USER!r} with password {password!r} "
                    f"(kept in {passwords_file}).\n"
                    "Times are shown in your browser's time zone; pick Asia/Tokyo in the "
                    "user menu (Timezone) to see the schedule as the DAG does.\n"
                    "Unpause daily_prediction to schedule it (06:00 JST), trigger a run or a "
                    'backfill; each task\'s "Kubeflow run" link opens the local run page.\n'
                    "Ctrl-C stops everything started here.",
                    flush=True,
                )
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
