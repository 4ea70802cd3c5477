"""Fixtures for the bridge's tests: a stand-in KFP API server on 127.0.0.1.

Use them from any test under ``tests/bridge`` by naming them as arguments:

The stand-in comes from the ``kfp_api`` fixture of kfp-bridge's pytest plugin, as in a
user's CI (``docs/testing.md``); ``kfp_api_options`` below sets its connection.

- ``kfp_api``: the plugin's fixture; a ``kfp_api`` marker picks a profile and the like.
- ``kfp_server``: its :class:`~kfp_bridge.testing.kfp_api.server.KfpApiStandIn` running
  in this process (``.url``, ``.runs()``, ``.requests()``, ``.set_schedule()``,
  ``.inject()``, ``.set_run_state()``, ``.delete_run()``, ``.require_token()``).
  Runs go PENDING -> RUNNING -> SUCCEEDED, one poll each, unless told otherwise.
- ``kfp_server_multi_user``: the same, behaving like multi-user Kubeflow
  (namespace required on lists and experiments).
- ``kfp_server_process``: the stand-in in a separate process, for tests whose
  triggerer/worker runs elsewhere; a :class:`~kfp_bridge.testing.kfp_api.server.StandInControl`
  with the same control methods and ``.url``.
- ``kfp_backend``: a ``KfpApiBackend`` pointed at ``kfp_server`` (2 s timeout).
- ``kfp_conn_id``: the id of the plugin's Airflow connection of type ``kfp`` to
  ``kfp_server`` (an ``AIRFLOW_CONN_*`` env var, so subprocesses started by the test
  inherit it; 2 s request timeout).
- ``make_conn``: defines a ``kfp`` connection (``test_kfp`` unless named) from keyword
  fields and returns its hook.

Outside pytest (benchmarks, e2e scripts): ``standin_process()`` or
``python -m kfp_bridge.testing.kfp_api.server --port 0``, see that module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kfp_bridge.hooks.kfp import KubeflowPipelineHook
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, StandInControl, standin_process
from kfp_bridge.testing.pytest_plugin import KfpApi

STANDIN_CONN_ID = "kfp_standin"


@pytest.fixture
def kfp_api_options() -> dict[str, Any]:
    return {"conn_id": STANDIN_CONN_ID, "extra": {"request_timeout": 2}}


@pytest.fixture
def kfp_server(kfp_api: KfpApi) -> KfpApiStandIn:
    return kfp_api.server


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
def kfp_conn_id(kfp_api: KfpApi) -> str:
    return kfp_api.conn_id


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., KubeflowPipelineHook]:
    """Define a ``kfp`` connection from keyword arguments (as the env var JSON form)."""

    def make(conn_id: str = "test_kfp", **fields: Any) -> KubeflowPipelineHook:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kfp", **fields})
        )
        return KubeflowPipelineHook(kfp_conn_id=conn_id)

    return make
