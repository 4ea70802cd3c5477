"""pytest plugin: the ``kfp_api`` fixture, a KFP API emulator with a ready ``kfp`` connection.

Registered through the ``pytest11`` entry point, so installing kfp-bridge makes the
fixture available to every test; nothing else is needed::

    def test_my_dag_reaches_kfp(kfp_api):
        hook = KubeflowPipelineHook(kfp_conn_id=kfp_api.conn_id)
        assert hook.test_connection()[0]

The fixture starts :class:`~kfp_bridge.testing.kfp_api.server.KfpApiStandIn` on
127.0.0.1 (a free port), sets the Airflow connection as ``AIRFLOW_CONN_<ID>`` (so
subprocesses the test starts see it too), yields a :class:`KfpApi` and stops the server
afterwards. Options, on the test's ``kfp_api`` marker (they win), from a
``kfp_api_options`` fixture (override it in a ``conftest.py`` for a folder of tests), or
for the whole run::

    @pytest.mark.kfp_api(profile="ui-proxy", conn_id="kfp_ui", multi_user=False,
                         server_version="head", extra={"request_timeout": 2})

    @pytest.fixture
    def kfp_api_options():
        return {"conn_id": "kfp_ci", "extra": {"request_timeout": 2}}

    pytest --kfp-api-profile ui-proxy        # or kfp_api_profile = ui-proxy in the ini

The emulator is imported when the fixture is used, not when pytest loads the plugin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

DEFAULT_CONN_ID = "kfp_default"
_MARKER_OPTIONS = ("profile", "conn_id", "multi_user", "server_version", "schedule", "extra")


@dataclass
class KfpApi:
    """A running emulator and the Airflow connection to it.

    Control methods of the server (``set_schedule``, ``inject``, ``set_run_state``,
    ``runs``, ``requests``, ...) can be called on this object directly.
    """

    server: KfpApiStandIn
    conn_id: str
    conn_json: str  # the AIRFLOW_CONN_<ID> value
    profile: str = "api-server"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the connection's host."""
        return self.server.url

    @property
    def env(self) -> dict[str, str]:
        """The environment variable that defines the connection (for subprocesses)."""
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": self.conn_json}

    def connection(self) -> Any:
        """The same connection as an ``airflow.sdk.Connection`` object."""
        from airflow.sdk import Connection

        data = json.loads(self.conn_json)
        return Connection(
            conn_id=self.conn_id,
            conn_type=data["conn_type"],
            host=data["host"],
            extra=json.dumps(data["extra"]),
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.server, name)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kfp_bridge", "kfp-bridge KFP API emulator")
    group.addoption(
        "--kfp-api-profile",
        dest="kfp_api_profile",
        default=None,
        help="deployment profile of the kfp_api fixture: api-server (default) or ui-proxy",
    )
    parser.addini("kfp_api_profile", "default profile of the kfp_api fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kfp_api(profile, conn_id, multi_user, server_version, schedule, extra): "
        "options of the kfp_api fixture (kfp_bridge.testing)",
    )


def _checked(options: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_MARKER_OPTIONS))
    if unknown:
        raise pytest.UsageError(
            f"{where}: unknown option(s) {unknown}; known: {list(_MARKER_OPTIONS)}"
        )
    return options


def _options(request: pytest.FixtureRequest, defaults: dict[str, Any]) -> dict[str, Any]:
    marker = request.node.get_closest_marker("kfp_api")
    options = _checked(dict(defaults or {}), "kfp_api_options")
    options.update(_checked(dict(marker.kwargs) if marker else {}, "kfp_api marker"))
    config = request.config
    options.setdefault(
        "profile",
        config.getoption("kfp_api_profile") or config.getini("kfp_api_profile") or "api-server",
    )
    return options


@pytest.fixture
def kfp_api_options() -> dict[str, Any]:
    """Default options of ``kfp_api`` (none); override this fixture in a ``conftest.py``."""
    return {}


@pytest.fixture
def kfp_api(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kfp_api_options: dict[str, Any],
) -> Iterator[KfpApi]:
    """A KFP API emulator on 127.0.0.1 and a ``kfp`` connection to it (see the module)."""
    from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json

    options = _options(request, kfp_api_options)
    conn_id = options.pop("conn_id", DEFAULT_CONN_ID)
    extra = dict(options.pop("extra", None) or {})
    with KfpApiStandIn(**options) as server:
        conn_json = airflow_connection_json(server.url, **extra)
        api = KfpApi(server, conn_id, conn_json, options["profile"], extra)
        for name, value in api.env.items():
            monkeypatch.setenv(name, value)
        yield api
