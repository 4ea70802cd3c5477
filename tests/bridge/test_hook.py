"""KubeflowPipelineHook: reading ``kfp`` connections and building the right backend."""

from __future__ import annotations

import pytest

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.kfp_api import KfpApiBackend
from kfp_bridge.exceptions import AuthError
from kfp_bridge.hooks.kfp import KfpConnectionError, KubeflowPipelineHook
from kfp_bridge.testing.kfp_api.server import write_google_credentials

SPEC = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}}


@pytest.fixture
def google_credentials(kfp_server, tmp_path, monkeypatch):
    """Google default credentials (a service account) whose token endpoint is the stand-in."""
    path = write_google_credentials(kfp_server.url, tmp_path / "sa.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


def test_hook_identity():
    assert KubeflowPipelineHook.conn_type == "kfp"
    assert KubeflowPipelineHook.default_conn_name == "kfp_default"
    assert KubeflowPipelineHook.hook_name == "Kubeflow Pipelines"
    assert KubeflowPipelineHook().kfp_conn_id == "kfp_default"


def test_kfp_conn_id_fixture_drives_the_stand_in(kfp_server, kfp_conn_id):
    backend = KubeflowPipelineHook(kfp_conn_id=kfp_conn_id).get_conn()
    status = backend.submit(RunRequest(display_name="via-hook", pipeline_spec=SPEC))
    assert [r["run_id"] for r in kfp_server.runs()] == [status.run_id]


def test_kfp_backend_from_connection_fields(make_conn, kfp_server):
    hook = make_conn(
        host=kfp_server.url,
        password="sa-token",
        extra={
            "backend": "kfp",
            "auth": "token",
            "namespace": "team-a",
            "ui_host": "https://ui.example.com",
            "verify_ssl": "false",
            "request_timeout": "7.5",
        },
    )
    backend = hook.get_conn()

    assert isinstance(backend, KfpApiBackend)
    assert backend.host == kfp_server.url
    assert backend.namespace == "team-a"
    assert backend.request_timeout == 7.5
    assert backend.run_url("r1") == "https://ui.example.com/#/runs/details/r1"
    assert hook.get_conn() is backend  # built once per hook

    kfp_server.require_token("sa-token")
    backend.healthz()
    assert kfp_server.requests()[-1]["authorization"] == "Bearer sa-token"


def test_host_and_port_fields_are_combined(make_conn, kfp_server):
    port = kfp_server.url.rsplit(":", 1)[1]
    hook = make_conn(host="127.0.0.1", port=int(port), schema="http")
    assert hook.get_conn().host == kfp_server.url
    assert hook.test_connection()[0] is True


def test_host_without_scheme_defaults_to_https(make_conn):
    hook = make_conn(host="abc-dot-asia-northeast1.pipelines.googleusercontent.com")
    assert hook.get_conn().host == "https://abc-dot-asia-northeast1.pipelines.googleusercontent.com"


def test_form_prefixed_extra_keys_are_read(make_conn, kfp_server):
    hook = make_conn(host=kfp_server.url, extra={"extra__kfp__namespace": "team-b"})
    assert hook.get_conn().namespace == "team-b"


def test_password_alone_means_token_auth_and_none_means_no_header(make_conn, kfp_server):
    make_conn(host=kfp_server.url, password="t0ken-value").get_conn().healthz()
    make_conn("other", host=kfp_server.url).get_conn().healthz()
    assert [r["authorization"] for r in kfp_server.requests()] == ["Bearer t0ken-value", None]


def test_google_auth_uses_default_credentials_and_refreshes(
    make_conn, kfp_server, google_credentials
):
    kfp_server.require_token("unused")  # tokens are checked; the token endpoint adds its own
    kfp_server.set_token_lifetime(1)  # expired at once: google-auth refreshes before each call
    backend = make_conn(host=kfp_server.url, extra={"auth": "google"}).get_conn()

    run_id = backend.submit(RunRequest(display_name="g", pipeline_spec=SPEC)).run_id
    backend.get_run(run_id)

    tokens = [r["authorization"] for r in kfp_server.requests()]
    assert tokens == ["Bearer standin-google-token-1", "Bearer standin-google-token-2"]


def test_google_auth_without_credentials_is_a_clear_error(make_conn, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    hook = make_conn(host="https://kfp.example.com", extra={"auth": "google"})
    with pytest.raises(AuthError, match="application default credentials"):
        hook.get_conn()


def test_vertex_backend_from_connection(make_conn, google_credentials):
    from kfp_bridge.backends.vertex import VertexBackend

    hook = make_conn(
        extra={"backend": "vertex", "project_id": "proj", "location": "asia-northeast1"}
    )
    backend = hook.get_conn()
    assert isinstance(backend, VertexBackend)
    assert backend.parent == "projects/proj/locations/asia-northeast1"
    assert backend.client.api_endpoint == "asia-northeast1-aiplatform.googleapis.com:443"


def test_local_backend_from_connection(make_conn, tmp_path):
    from kfp_bridge.backends.local import LocalBackend

    python = tmp_path / "python"
    python.write_text("")
    hook = make_conn(
        extra={
            "backend": "local",
            "local_state_dir": str(tmp_path / "runs"),
            "local_python": str(python),
        }
    )
    backend = hook.get_conn()
    assert isinstance(backend, LocalBackend)
    assert backend.state_dir == (tmp_path / "runs").resolve()
    assert backend.python == str(python)


def test_local_backend_defaults_under_kfp_bridge_home(make_conn, tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_BRIDGE_HOME", str(tmp_path))
    backend = make_conn(extra={"backend": "local"}).get_conn()
    assert backend.state_dir == (tmp_path / "var" / "kfp_local").resolve()
    assert backend.python == str(tmp_path / ".venv-pipeline" / "bin" / "python")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "http://h", "extra": {"backend": "airflow"}}, "extra.backend must be one of"),
        ({"host": "http://h", "extra": {"auth": "basic"}}, "extra.auth must be one of"),
        ({"extra": {"backend": "kfp"}}, "host"),
        ({"host": "ftp://h"}, "host must be an http"),
        ({"host": "http://h:"}, "host has a ':' after the host but no port number"),
        ({"host": "h:", "port": 8888}, "host has a ':' after the host but no port number"),
        ({"host": "https://h:x/pipeline"}, "host has a ':' after the host but no port"),
        ({"host": "http://h", "extra": {"auth": "token"}}, "password"),
        ({"host": "http://h", "extra": {"request_timeout": "soon"}}, "extra.request_timeout"),
        ({"host": "http://h", "extra": {"request_timeout": 0}}, "extra.request_timeout"),
        ({"host": "http://h", "extra": {"verify_ssl": "maybe"}}, "extra.verify_ssl"),
        ({"host": "http://h", "extra": {"ui_host": "ui.example.com"}}, "extra.ui_host"),
        ({"extra": {"backend": "vertex", "project_id": "p"}}, "extra.location"),
        ({"extra": {"backend": "local", "local_python": "/nope/python"}}, "extra.local_python"),
    ],
)
def test_bad_settings_name_the_field(make_conn, fields, message):
    hook = make_conn(**fields)
    with pytest.raises(KfpConnectionError, match=message) as err:
        hook.get_conn()
    assert "'test_kfp'" in str(err.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [("soon", "must be a number of seconds, got 'soon'"), (-1, "must be positive, got -1")],
)
def test_a_bad_request_timeout_with_dex_names_the_field_and_its_problem(make_conn, value, problem):
    """The Dex login is built before the backend checks the setting: the same clear error."""
    hook = make_conn(
        host="http://h", login="u", password="p", extra={"auth": "dex", "request_timeout": value}
    )
    with pytest.raises(KfpConnectionError, match=f"extra.request_timeout {problem}") as err:
        hook.get_conn()
    assert "'test_kfp'" in str(err.value)


def test_the_vertex_location_example_is_a_generic_region(make_conn):
    with pytest.raises(KfpConnectionError, match=r"e\.g\. us-central1\)"):
        make_conn(extra={"backend": "vertex", "project_id": "p"}).get_conn()


def test_test_connection_reports_health_and_auth(make_conn, kfp_server, kfp_server_multi_user):
    ok, message = make_conn(host=kfp_server.url).test_connection()
    assert ok is True
    assert "single-user" in message

    # multi-user Kubeflow authenticates (apiserver/auth/): no identity is a 401
    anonymous = make_conn("anon", host=kfp_server_multi_user.url, extra={"namespace": "team-a"})
    ok, message = anonymous.test_connection()
    assert ok is False and "AuthError" in message and "401" in message
    multi = make_conn(
        "multi",
        host=kfp_server_multi_user.url,
        extra={"namespace": "team-a", "user": "alice@example.com"},
    )
    ok, message = multi.test_connection()
    assert ok is True
    assert message.startswith(f"KFP API at {kfp_server_multi_user.url} is healthy (multi-user); ")

    kfp_server.require_token("right")
    ok, message = make_conn("wrong", host=kfp_server.url, password="wrong").test_connection()
    assert ok is False
    assert "AuthError" in message
    assert "401" in message


def test_test_connection_names_a_kfp_1x_server(make_conn, kfp_server):
    kfp_server.set_server_version("1.8.5")
    ok, message = make_conn(host=kfp_server.url).test_connection()
    assert ok is False
    assert "ApiVersionError" in message and "no v2beta1 endpoints (KFP < 2.0?)" in message


def test_user_identity_header_is_configurable(make_conn, kfp_server_multi_user):
    kfp_server_multi_user.set_multi_user(
        user_header="x-goog-authenticated-user-email", user_prefix="accounts.google.com:"
    )
    conn = make_conn(
        "iap",
        host=kfp_server_multi_user.url,
        extra={
            "namespace": "team-a",
            "user": "accounts.google.com:alice@example.com",
            "user_header": "x-goog-authenticated-user-email",
        },
    )
    assert conn.test_connection()[0] is True


def test_test_connection_of_the_local_backend_runs_its_interpreter(make_conn, tmp_path):
    from tests.bridge._helpers import PIPELINE_PYTHON

    ok, message = make_conn(
        extra={"backend": "local", "local_python": str(PIPELINE_PYTHON)}
    ).test_connection()
    assert ok is True and message.startswith("local backend: kfp 2."), message
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'No module named kfp' >&2; exit 1\n")
    broken.chmod(0o755)
    ok, message = make_conn(
        "broken", extra={"backend": "local", "local_python": str(broken)}
    ).test_connection()
    assert (ok, message) == (
        False,
        f"BackendError: pipeline interpreter {broken} cannot import kfp: No module named kfp",
    )


def test_test_connection_lists_experiments_in_the_namespace(make_conn, kfp_server_multi_user):
    ok, message = make_conn(host=kfp_server_multi_user.url).test_connection()
    assert ok is False
    assert "namespace" in message
    listed = [r for r in kfp_server_multi_user.requests() if r["path"].endswith("/experiments")]
    assert len(listed) == 1


def test_connection_type_is_registered_with_a_form():
    """Airflow 3.3 builds the form from provider info (conn-fields), not hook methods."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    fields = ("backend", "auth", "namespace", "ui_host", "project_id", "local_python")
    fields += ("credentials_path", "kubernetes_conn_id", "serviceaccount", "expiration_seconds")
    for field in fields:
        assert widgets[f"extra__kfp__{field}"].hook_class_name == (
            "kfp_bridge.hooks.kfp.KubeflowPipelineHook"
        )
    assert "host" in manager.field_behaviours["kfp"]["relabeling"]
    assert "get_connection_form_widgets" not in KubeflowPipelineHook.__dict__


def test_run_state_round_trip_through_the_hook(kfp_server, kfp_conn_id):
    backend = KubeflowPipelineHook(kfp_conn_id=kfp_conn_id).get_conn()
    run_id = backend.submit(RunRequest(display_name="r", pipeline_spec=SPEC)).run_id
    states = [backend.get_run(run_id).state for _ in range(3)]
    assert states == [RunState.PENDING, RunState.RUNNING, RunState.SUCCEEDED]


def test_every_slack_notifier_is_registered_and_importable():
    """The provider info lists each notifier class of kfp_bridge.notifications.slack."""
    import importlib
    import inspect

    from airflow.providers_manager import ProvidersManager

    registered = {n for n in ProvidersManager().notification if n.startswith("kfp_bridge.")}
    slack = importlib.import_module("kfp_bridge.notifications.slack")
    defined = {
        f"{slack.__name__}.{name}"
        for name, obj in vars(slack).items()
        if inspect.isclass(obj)
        and obj.__module__ == slack.__name__
        and not name.startswith("_")
        and name.endswith("Notifier")
    }
    assert {
        "kfp_bridge.notifications.slack.KfpSlackNotifier",
        "kfp_bridge.notifications.slack.KfpSlackRunSummaryNotifier",
        "kfp_bridge.notifications.slack.KfpSlackDeadlineNotifier",
    } <= defined
    assert registered == defined
