"""Logins at the ingress in front of the KFP API: Kubeflow's Dex/oauth2-proxy and Google IAP.

The stand-in's ``dex`` and ``iap`` profiles (``kfp_bridge/testing/kfp_api/dex.py``,
``iap.py``) play the ingress; the hook builds the backend from a ``kfp`` connection
with ``auth=dex`` (login/password) or ``auth=iap`` (``iap_client_id`` and the Google
Cloud connection's identity).
"""

from __future__ import annotations

import json

import pytest
import requests
from airflow.sdk.log import redact

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.exceptions import AuthError
from kfp_bridge.hooks.kfp import KfpConnectionError, KubeflowPipelineHook
from kfp_bridge.testing.kfp_api import iap
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, write_google_credentials

SPEC = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {"train": {}}}}}
USER, PASSWORD = "user@example.com", "12341234"


@pytest.fixture
def dex_server():
    with KfpApiStandIn(profile="dex") as server:
        yield server


@pytest.fixture
def iap_server(tmp_path, monkeypatch):
    with KfpApiStandIn(profile="iap") as server:
        path = write_google_credentials(server.url, tmp_path / "sa.json")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        yield server


def dex_hook(make_conn, server, **extra):
    return make_conn(host=server.url, login=USER, password=PASSWORD, extra={"auth": "dex", **extra})


# -- the dex profile itself -------------------------------------------------------------
def test_dex_profile_refuses_api_calls_without_a_session_as_oauth2_proxy_does(dex_server):
    api = requests.get(f"{dex_server.url}/apis/v2beta1/healthz", allow_redirects=False)
    assert (api.status_code, api.headers["Content-Type"], api.text) == (
        401,
        "application/json",
        "{}",
    )
    page = requests.get(f"{dex_server.url}/k8s/pod/logs?podname=p", allow_redirects=False)
    assert page.status_code == 403 and "/oauth2/start" in page.text  # the sign-in page
    dex_server.configure_dex(api_routes=False, skip_provider_button=True)
    api = requests.get(f"{dex_server.url}/apis/v2beta1/healthz", allow_redirects=False)
    assert api.status_code == 302 and api.headers["Location"].startswith("/dex/auth?")


# -- auth=dex -------------------------------------------------------------------------
def test_dex_login_gives_the_session_cookie_and_the_api_answers(make_conn, dex_server):
    backend = dex_hook(make_conn, dex_server).get_conn()
    checked = backend.check()
    assert "healthy" in checked and "identity: the ingress's session cookie" in checked
    run = backend.submit(RunRequest(display_name="dex-run", pipeline_spec=SPEC))
    assert backend.get_run(run.run_id).run_id == run.run_id
    assert dex_server.dex_stats()["logins"] == 1  # one login for every call so far
    cookie = backend._cookie_session.cookie()
    assert cookie.startswith("oauth2_proxy_kubeflow=")
    value = cookie.split("=", 1)[1]
    assert value not in redact(f"echoed {value}")  # registered with the secrets masker
    assert PASSWORD not in redact(f"echoed {PASSWORD}")


def test_dex_session_expiry_logs_in_again_without_failing_a_call(make_conn, dex_server):
    backend = dex_hook(make_conn, dex_server).get_conn()
    run_id = backend.submit(RunRequest(display_name="dex-expiry", pipeline_spec=SPEC)).run_id
    dex_server.expire_dex_sessions()  # 24 h later: oauth2-proxy answers 401 {}

    assert backend.get_run(run_id).run_id == run_id
    assert backend.get_run(run_id).state in (RunState.RUNNING, RunState.SUCCEEDED)
    stats = dex_server.dex_stats()
    # refused: the sign-in page each login starts from, and the one call with the old cookie
    assert (stats["logins"], stats["refused"]) == (2, 3)


def test_dex_redirect_to_the_login_page_logs_in_again(make_conn, dex_server):
    """Set-ups without ``api_routes`` (and oidc-authservice) answer with a 302 instead."""
    dex_server.configure_dex(api_routes=False, skip_provider_button=True)
    backend = dex_hook(make_conn, dex_server).get_conn()
    backend.healthz()
    dex_server.expire_dex_sessions()
    backend.check_access()
    assert dex_server.dex_stats()["logins"] == 2


def test_dex_log_reading_logs_in_again_too(make_conn, dex_server):
    backend = dex_hook(make_conn, dex_server).get_conn()
    run_id = backend.submit(RunRequest(display_name="dex-log", pipeline_spec=SPEC)).run_id
    dex_server.set_run_state(run_id, "SUCCEEDED")
    node = dex_server.set_task_log(run_id, "train", "line 1\nthe log\n")
    dex_server.expire_dex_sessions()
    assert backend.task_log_tail(run_id, node).endswith("the log")
    assert dex_server.dex_stats()["logins"] == 2


def test_dex_relogin_is_bounded_when_the_ingress_keeps_refusing(make_conn, dex_server):
    backend = dex_hook(make_conn, dex_server).get_conn()
    backend.healthz()
    dex_server.inject("status", times=2, status=401, path="healthz$")
    with pytest.raises(AuthError, match="HTTP 401"):
        backend.healthz()
    assert dex_server.dex_stats()["logins"] == 2  # one new login, then the error


def test_dex_cookie_expiring_on_arrival_is_a_clear_error(make_conn, dex_server):
    dex_server.configure_dex(session_seconds=0)  # Set-Cookie already expired: no cookie kept
    with pytest.raises(AuthError, match="ended without a session cookie"):
        dex_hook(make_conn, dex_server).get_conn().healthz()


def test_dex_profile_in_a_separate_process_is_driven_over_http(make_conn):
    from kfp_bridge.testing.kfp_api.server import standin_process

    with standin_process(profile="dex") as control:
        control.configure_dex(users={"local": {"ops@example.com": "s3cret-pw"}})
        backend = make_conn(
            host=control.url, login="ops@example.com", password="s3cret-pw", extra={"auth": "dex"}
        ).get_conn()
        backend.healthz()
        control.expire_dex_sessions()
        backend.check_access()
        assert control.dex_stats()["logins"] == 2


def test_dex_ldap_connector_is_chosen_when_dex_offers_several(make_conn, dex_server):
    dex_server.configure_dex(users={"local": {"admin@example.com": "x"}, "ldap": {"jane": "pw"}})
    backend = make_conn(
        host=dex_server.url,
        login="jane",
        password="pw",
        extra={"auth": "dex", "dex_connector": "ldap"},
    ).get_conn()
    backend.healthz()
    assert dex_server.dex_stats()["logins"] == 1


def test_dex_wrong_password_is_an_auth_error_without_the_password(make_conn, dex_server):
    backend = make_conn(
        host=dex_server.url, login=USER, password="wrong-pw-123", extra={"auth": "dex"}
    ).get_conn()
    with pytest.raises(AuthError, match=r"Dex refused the login of user 'user@example.com'") as err:
        backend.healthz()
    assert "wrong-pw-123" not in str(err.value)
    assert dex_server.dex_stats()["failed_logins"] == 1


def test_dex_needs_login_and_password_before_any_request(make_conn, dex_server):
    hook = make_conn(host=dex_server.url, password=PASSWORD, extra={"auth": "dex"})
    with pytest.raises(KfpConnectionError, match="'dex' but the login or the password is empty"):
        hook.get_conn()
    hook = dex_hook(make_conn, dex_server, dex_connector="saml")
    with pytest.raises(KfpConnectionError, match=r"extra.dex_connector must be one of local, ldap"):
        hook.get_conn()
    assert dex_server.requests() == []


# -- auth=iap -------------------------------------------------------------------------
def test_iap_profile_refuses_missing_and_foreign_credentials(iap_server):
    url = f"{iap_server.url}/apis/v2beta1/healthz"
    missing = requests.get(url, allow_redirects=False)
    assert missing.status_code == 302
    assert missing.headers["Location"].startswith("https://accounts.google.com/")
    access = requests.get(url, headers={"Authorization": "Bearer ya29.access-token"})
    assert (access.status_code, access.text) == (
        401,
        "Invalid IAP credentials: Unable to parse JWT",
    )
    other = iap_server.mint_id_token("other.apps.googleusercontent.com")
    wrong = requests.get(url, headers={"Authorization": f"Bearer {other}"})
    assert wrong.status_code == 401
    assert wrong.text == (
        "Invalid IAP credentials: JWT audience doesn't match this application ('aud' claim "
        f"(other.apps.googleusercontent.com) doesn't match expected value ({iap.CLIENT_ID}))"
    )
    right = iap_server.mint_id_token(iap.CLIENT_ID)
    proxy = requests.get(url, headers={"Proxy-Authorization": f"Bearer {right}"})
    assert proxy.status_code == 200


def test_iap_auth_sends_an_id_token_for_the_client_id(make_conn, iap_server):
    backend = make_conn(
        host=iap_server.url, extra={"auth": "iap", "iap_client_id": iap.CLIENT_ID}
    ).get_conn()
    assert "healthy" in backend.check()
    run_id = backend.submit(RunRequest(display_name="iap-run", pipeline_spec=SPEC)).run_id
    backend.get_run(run_id)
    token = iap_server.requests()[-1]["authorization"].split(" ", 1)[1]
    claims = iap.jwt_claims(token)
    assert claims["aud"] == iap.CLIENT_ID
    assert claims["email"] == "standin@standin-project.iam.gserviceaccount.com"
    assert iap_server.iap_stats() == {"minted": 1, "refused": []}  # cached while valid
    assert token not in redact(f"echoed {token}")


def test_iap_identity_reaches_a_multi_user_api_server_as_iap_sets_it(make_conn, iap_server):
    # KFP's default identity header is IAP's (backend/src/apiserver/common/const.go)
    iap_server.set_multi_user(
        user_header=iap.USER_HEADER,
        user_prefix=iap.USER_PREFIX,
        access={"standin@standin-project.iam.gserviceaccount.com": ["team-a"]},
    )
    backend = make_conn(
        host=iap_server.url,
        extra={"auth": "iap", "iap_client_id": iap.CLIENT_ID, "namespace": "team-a"},
    ).get_conn()
    backend.check_access()


def test_iap_expiring_id_tokens_are_minted_again(make_conn, iap_server):
    iap_server.configure_iap(token_seconds=60)  # inside google-auth's refresh threshold
    backend = make_conn(
        host=iap_server.url, extra={"auth": "iap", "iap_client_id": iap.CLIENT_ID}
    ).get_conn()
    backend.healthz()
    backend.healthz()
    assert iap_server.iap_stats()["minted"] == 2


def test_iap_wrong_client_id_is_an_auth_error_with_iaps_reason(make_conn, iap_server):
    backend = make_conn(
        host=iap_server.url,
        extra={"auth": "iap", "iap_client_id": "wrong.apps.googleusercontent.com"},
    ).get_conn()
    with pytest.raises(AuthError, match=r"HTTP 401.*JWT audience doesn't match this application"):
        backend.healthz()


def test_iap_needs_the_client_id_before_any_request(make_conn, iap_server):
    with pytest.raises(KfpConnectionError, match=r"extra.iap_client_id is empty"):
        make_conn(host=iap_server.url, extra={"auth": "iap"}).get_conn()
    assert iap_server.iap_stats()["minted"] == 0


def test_google_access_tokens_do_not_pass_iap(make_conn, iap_server):
    backend = make_conn(host=iap_server.url, extra={"auth": "google"}).get_conn()
    with pytest.raises(AuthError, match="Unable to parse JWT"):
        backend.healthz()


def test_iap_through_the_google_connection_and_an_impersonation_chain(
    make_conn, iap_server, monkeypatch
):
    """The Google provider's hook impersonates; IAM generateIdToken mints for the client id."""
    from tests.bridge.google_fakes import google_apis, google_connection, service_account_key

    runner = "runner@run-proj.iam.gserviceaccount.com"
    source = service_account_key("deployer@src-proj.iam.gserviceaccount.com", "src-proj")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")  # the connection's key, not ADC
    make_conn(
        "google_cloud_default", **json.loads(google_connection(source, impersonation_chain=runner))
    )
    make_conn(host=iap_server.url, extra={"auth": "iap", "iap_client_id": iap.CLIENT_ID})
    with google_apis(id_token_minter=iap_server.mint_id_token) as google:
        backend = KubeflowPipelineHook("test_kfp").get_conn()
        backend.healthz()
        backend.check_access()
    [call] = google.of("generateIdToken")
    assert f"/serviceAccounts/{runner}:generateIdToken" in call.url
    assert call.body["audience"] == iap.CLIENT_ID and call.body["includeEmail"] is True
    assert call.authorization == "Bearer source-token-1"  # asked as the source identity
    tokens = {r["authorization"] for r in iap_server.requests()}
    [token] = tokens
    assert iap.jwt_claims(token.split(" ", 1)[1])["email"] == runner


def test_iap_from_user_credentials_names_what_to_use_instead():
    from google.oauth2.credentials import Credentials

    from kfp_bridge.hooks._iap import id_token_credentials

    with pytest.raises(AuthError, match="service-account key, an impersonation_chain"):
        id_token_credentials(Credentials(token="t"), iap.CLIENT_ID)


def test_iap_through_impersonation_uses_iam_generate_id_token():
    import google.auth.impersonated_credentials as imp
    from google.oauth2.credentials import Credentials

    from kfp_bridge.hooks._iap import id_token_credentials

    source = Credentials(token="t")
    target = imp.Credentials(source, "sa@p.iam.gserviceaccount.com", target_scopes=["x"])
    made = id_token_credentials(target, iap.CLIENT_ID)
    assert isinstance(made, imp.IDTokenCredentials)
    assert made._target_audience == iap.CLIENT_ID


# -- the connection form ------------------------------------------------------------------
def test_the_form_offers_the_ingress_logins():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for field in ("iap_client_id", "dex_connector"):
        assert widgets[f"extra__kfp__{field}"].hook_class_name == (
            "kfp_bridge.hooks.kfp.KubeflowPipelineHook"
        )
    behaviour = manager.field_behaviours["kfp"]
    assert "login" not in behaviour["hidden_fields"]  # the Dex user
    assert "Dex" in behaviour["relabeling"]["login"]


# -- the operator and its trigger behind the ingress ---------------------------------------
def _run_trigger(trigger) -> dict:
    import asyncio

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), 30))


def _deferred_run(conn_id: str) -> dict:
    """Submit in the 'worker', wait in the 'triggerer' (a new hook, as there), complete."""
    from datetime import UTC, datetime

    from airflow.sdk.exceptions import TaskDeferred

    from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
    from tests.bridge._helpers import TINY_PIPELINE, TaskInstance, TaskStateStore, task_context

    def operator():
        return KubeflowPipelineRunOperator(
            task_id="predict",
            pipeline_file=str(TINY_PIPELINE),
            parameters={"message": "2026-11-27", "repeat": "2"},
            kfp_conn_id=conn_id,
            poll_interval=0.01,
            deferrable=True,
        )

    context = task_context(
        TaskInstance(), TaskStateStore(), datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(context)
    event = _run_trigger(deferred.value.trigger)
    return operator().execute_complete(context, event)


def test_a_dex_session_expiring_in_the_middle_of_a_wait_is_renewed(make_conn, dex_server):
    dex_server.set_schedule(pending=3, running=3)
    dex_server.configure_dex(session_requests=2)  # a session serves two requests only
    dex_hook(make_conn, dex_server)
    result = _deferred_run("test_kfp")
    [run] = dex_server.runs()
    assert result["run_id"] == run["run_id"] and run["state"] == "SUCCEEDED"
    stats = dex_server.dex_stats()
    assert stats["logins"] >= 4 and stats["failed_logins"] == 0  # renewed mid-wait, no failure


def test_an_iap_id_token_expiring_in_the_middle_of_a_wait_is_renewed(make_conn, iap_server):
    iap_server.set_schedule(pending=3, running=3)
    iap_server.configure_iap(token_seconds=60)  # stale for google-auth at once: minted again
    make_conn(host=iap_server.url, extra={"auth": "iap", "iap_client_id": iap.CLIENT_ID})
    result = _deferred_run("test_kfp")
    [run] = iap_server.runs()
    assert result["run_id"] == run["run_id"] and run["state"] == "SUCCEEDED"
    stats = iap_server.iap_stats()
    assert stats["minted"] >= 6 and stats["refused"] == []


def test_behind_kubeflows_ingress_the_ui_servers_log_route_logs_in_again(make_conn, dex_server):
    """Kubeflow routes ``/pipeline`` to ml-pipeline-ui; its ``/k8s/pod/logs`` is no API route,
    so an expired session there meets oauth2-proxy's sign-in page (HTTP 403), not a 401."""
    dex_server.set_ui_routes()
    dex_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    backend = dex_hook(make_conn, dex_server).get_conn()
    run_id = backend.submit(RunRequest(display_name="dex-ui", pipeline_spec=SPEC)).run_id
    for _ in range(5):
        if backend.get_run(run_id).state.is_terminal:
            break
    [run] = dex_server.runs()
    node = next(
        c["pod_name"]
        for d in run["run_details"]["task_details"]
        if d["display_name"] == "train"
        for c in d["child_tasks"]
    )
    assert "ValueError: asked to fail" in backend.task_log_tail(run_id, node)
    dex_server.expire_dex_sessions()
    logins, seen = dex_server.dex_stats()["logins"], len(dex_server.requests())

    assert "ValueError: asked to fail" in backend.task_log_tail(run_id, node)

    assert dex_server.dex_stats()["logins"] == logins + 1
    paths = [r["path"] for r in dex_server.requests()[seen:]]
    # refused (the sign-in page); the login starts at the host's root and oauth2-proxy's
    # callback sends it back there; the read again
    assert [p for p in paths if not p.startswith(("/dex/", "/oauth2/"))] == [
        "/k8s/pod/logs",
        "/",
        "/",
        "/k8s/pod/logs",
    ]
    page = requests.get(f"{dex_server.url}/k8s/pod/logs?podname=x", allow_redirects=False)
    assert page.status_code == 403  # what the expired session met there


def test_neither_the_cookie_nor_the_password_is_logged(make_conn, dex_server, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    backend = dex_hook(make_conn, dex_server).get_conn()
    backend.healthz()
    dex_server.expire_dex_sessions()
    backend.healthz()
    value = backend._cookie_session.cookie().split("=", 1)[1]
    assert "Dex" in caplog.text  # the logins are logged ...
    assert value not in caplog.text and PASSWORD not in caplog.text  # ... without secrets
    assert value not in repr(backend._cookie_session) and PASSWORD not in repr(backend)


def test_behind_kubeflows_ingress_at_its_pipeline_path(make_conn, dex_server):
    """The host users are given is ``https://<kubeflow>/pipeline``: the UI server serves every
    route under that base path too (frontend/server/app.ts getRegisterHandler)."""
    dex_server.set_ui_routes()
    dex_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    hook = make_conn(
        host=f"{dex_server.url}/pipeline",
        login=USER,
        password=PASSWORD,
        extra={"auth": "dex"},
    )
    backend = hook.get_conn()
    assert "healthy" in backend.check()
    run_id = backend.submit(RunRequest(display_name="at-pipeline", pipeline_spec=SPEC)).run_id
    assert backend.run_url(run_id) == f"{dex_server.url}/pipeline/#/runs/details/{run_id}"
    for _ in range(5):
        status = backend.get_run(run_id)
        if status.state.is_terminal:
            break
    assert status.error.splitlines()[0] == "task train failed: ValueError: asked to fail"
    paths = {r["path"] for r in dex_server.requests()}
    assert "/pipeline/k8s/pod/logs" in paths and "/pipeline/apis/v2beta1/runs" in paths
