"""Fixtures for the bridge's tests: a stand-in KFP API server on 127.0.0.1.

Use them from any test under ``tests/bridge`` by naming them as arguments:

- ``kfp_server``: a :class:`~kfp_bridge.testing.kfp_api.server.KfpApiStandIn` running
  in this process (``.url``, ``.runs()``, ``.requests()``, ``.set_schedule()``,
  ``.inject()``, ``.set_run_state()``, ``.delete_run()``, ``.require_token()``).
  Runs go PENDING -> RUNNING -> SUCCEEDED, one poll each, unless told otherwise.
- ``kfp_server_multi_user``: the same, behaving like multi-user Kubeflow
  (namespace required on lists and experiments).
- ``kfp_server_process``: the stand-in in a separate process, for tests whose
  triggerer/worker runs elsewhere; a :class:`~kfp_bridge.testing.kfp_api.server.StandInControl`
  with the same control methods and ``.url``.
- ``kfp_backend``: a ``KfpApiBackend`` pointed at ``kfp_server`` (2 s timeout).
- ``kfp_conn_id``: the id of an Airflow connection of type ``kfp`` to
  ``kfp_server`` (set as an ``AIRFLOW_CONN_*`` env var, so subprocesses
  started by the test inherit it).

Outside pytest (benchmarks, e2e scripts): ``standin_process()`` or
``python -m kfp_bridge.testing.kfp_api.server --port 0``, see that module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kfp_bridge.testing.kfp_api.server import (
    KfpApiStandIn,
    StandInControl,
    airflow_connection_json,
    standin_process,
)

STANDIN_CONN_ID = "kfp_standin"


@pytest.fixture
def kfp_server() -> Iterator[KfpApiStandIn]:
    with KfpApiStandIn() as server:
        yield server


@pytest.fixture
def kfp_server_multi_user() -> Iterator[KfpApiStandIn]:
    with KfpApiStandIn(multi_user=True) as server:
        yield server


@pytest.fixture
def kfp_server_process() -> Iterator[StandInControl]:
    with standin_process() as control:
        yield control


@pytest.fixture
def kfp_backend(kfp_server: KfpApiStandIn):
    from kfp_bridge.backends.kfp_api import KfpApiBackend

    backend = KfpApiBackend(kfp_server.url, request_timeout=2.0)
    yield backend
    backend.close()


@pytest.fixture
def kfp_conn_id(kfp_server: KfpApiStandIn, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{STANDIN_CONN_ID.upper()}",
        airflow_connection_json(kfp_server.url, request_timeout=2),
    )
    return STANDIN_CONN_ID
