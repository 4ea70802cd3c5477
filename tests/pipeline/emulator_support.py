"""Start and stop the BigQuery emulator (local-bigquery) on loopback for the emulator tests.

The emulator lives in its own virtualenv, ``.venv-bigquery-emulator`` (it needs Python 3.13;
``make bigquery-emulator`` builds it, ``make test`` runs that first). When it is missing the
tests are skipped with one line saying so, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfp_bridge.testing.processes import stop

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("BIGQUERY_EMULATOR_VENV") or ROOT / ".venv-bigquery-emulator")
PROJECT = "local-emulator"  # a valid project ID (6-30 characters)
START_SECONDS = 90.0


@dataclass(frozen=True)
class Emulator:
    rest: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    project: str = PROJECT

    def location(self, dataset: str) -> str:
        """A warehouse location for one dataset: explicit endpoints, anonymous credentials."""
        return (
            f"bigquery://{self.project}/{dataset}?endpoint={self.rest}"
            f"&read_endpoint={self.grpc}&credentials=anonymous"
        )


def unavailable(reason: str) -> None:
    """Skip with one line naming what is missing; under CI the missing emulator fails."""
    if os.environ.get("CI"):
        pytest.fail(f"BigQuery emulator unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"BigQuery emulator tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_emulator(data_dir: Path) -> Iterator[Emulator]:
    """``local-bigquery serve`` on two free loopback ports until the block ends."""
    exe = VENV / "bin" / "local-bigquery"
    home = VENV / "home"
    if not exe.exists() or not (home / ".duckdb").is_dir():
        unavailable(f"{exe} or its DuckDB extensions are missing (run `make bigquery-emulator`)")
    rest_port, grpc_port = _free_port(), _free_port()
    log_path = data_dir / "emulator.log"
    command = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(rest_port)]
    command += ["--grpc-port", str(grpc_port), "--data-dir", str(data_dir / "data")]
    command += ["--project", PROJECT]
    env = {**os.environ, "HOME": str(home)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{rest_port}", log_path)
        yield Emulator(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}")
    finally:
        stop(proc, grace=15)


def _wait_ready(proc: subprocess.Popen, rest: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    url = f"{rest}/bigquery/v2/projects/{PROJECT}/datasets"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            pytest.fail(f"BigQuery emulator exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"BigQuery emulator did not answer {url} within {START_SECONDS:.0f} s")
