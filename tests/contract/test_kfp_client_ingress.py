"""The real ``kfp.Client`` against the stand-in's ingress profiles: ``dex``, ``iap``, ``argo-gc``.

Where the SDK has the same option as the bridge it must agree with the profile:
``cookies=`` after the Kubeflow docs' Dex login (``KFPClientManager``, kubeflow/website
``.../user-guides/core-functions/connect-api.md``), ``existing_token=`` with an ID token
for the IAP client id (google-auth ``fetch_id_token``, as IAP's "Programmatic
authentication" page shows), and plain calls to a server whose workflows are collected.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import kfp
import pytest
import requests
from kfp_server_api.exceptions import ApiException

from kfp_bridge.testing.kfp_api import iap
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, write_google_credentials

pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


@pytest.fixture(autouse=True)
def _no_local_context(tmp_path, monkeypatch):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))


def dex_cookies(url: str, username: str, password: str, connector: str = "local") -> str:
    """The docs' ``KFPClientManager._get_session_cookies`` steps, in short."""
    s = requests.Session()
    resp = s.get(url, allow_redirects=True)
    if resp.status_code == 403:  # oauth2-proxy's sign-in page
        parts = urlsplit(resp.url)
        start = parts._replace(path="/oauth2/start", query=urlencode({"rd": parts.path}))
        resp = s.get(start.geturl(), allow_redirects=True)
    parts = urlsplit(resp.url)
    if re.search(r"/auth$", parts.path):
        parts = parts._replace(path=f"{parts.path}/{connector}")
    login_url = parts.geturl()
    if not re.search(r"/auth/.*/login$", parts.path):
        login_url = s.get(login_url, allow_redirects=True).url
    resp = s.post(login_url, data={"login": username, "password": password})
    assert resp.history, "no redirect after the login POST: credentials refused"
    return "; ".join(f"{c.name}={c.value}" for c in s.cookies)


def test_dex_cookies_from_the_docs_flow_open_the_api_to_kfp_client():
    with KfpApiStandIn(profile="dex") as server:
        cookies = dex_cookies(server.url, "user@example.com", "12341234")
        assert cookies.startswith("oauth2_proxy_kubeflow=")
        client = kfp.Client(host=server.url, cookies=cookies)
        assert client.get_kfp_healthz().multi_user is False
        created = client.create_experiment("dex-contract")
        assert client.get_experiment(experiment_id=created.experiment_id).display_name == (
            "dex-contract"
        )

        bare = kfp.Client(host=server.url, namespace="team-a")  # no healthz at construction
        with pytest.raises(ApiException) as err:
            bare.list_experiments()
        assert (err.value.status, err.value.body) == (401, "{}")  # oauth2-proxy errorJSON

        server.expire_dex_sessions()  # the SDK keeps its cookie: a new client is needed
        with pytest.raises(ApiException) as err:
            client.list_experiments()
        assert err.value.status == 401


def test_dex_at_kubeflows_pipeline_path_as_the_docs_connect():
    """The docs' example ``api_url="http://localhost:8080/pipeline"``: the UI server's basePath."""
    with KfpApiStandIn(profile="dex") as server:
        server.set_ui_routes()
        api_url = f"{server.url}/pipeline"
        client = kfp.Client(
            host=api_url, cookies=dex_cookies(api_url, "user@example.com", "12341234")
        )
        created = client.create_experiment("at-pipeline")
        listed = client.list_experiments().experiments
        assert [e.experiment_id for e in listed] == [created.experiment_id]
        assert any(r["path"] == "/pipeline/apis/v2beta1/experiments" for r in server.requests())


def test_dex_ldap_connector_and_wrong_password_as_the_docs_flow_sees_them():
    with KfpApiStandIn(profile="dex") as server:
        server.configure_dex(users={"local": {"a@example.com": "x"}, "ldap": {"jane": "pw"}})
        cookies = dex_cookies(server.url, "jane", "pw", connector="ldap")
        assert kfp.Client(host=server.url, cookies=cookies).list_experiments() is not None
        with pytest.raises(AssertionError, match="credentials refused"):
            dex_cookies(server.url, "jane", "wrong", connector="ldap")


def test_iap_id_token_as_existing_token(tmp_path, monkeypatch):
    import google.auth.transport.requests
    import google.oauth2.id_token

    with KfpApiStandIn(profile="iap") as server:
        path = write_google_credentials(server.url, tmp_path / "sa.json")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        request = google.auth.transport.requests.Request()
        token = google.oauth2.id_token.fetch_id_token(request, iap.CLIENT_ID)

        client = kfp.Client(host=server.url, existing_token=token)
        assert client.get_kfp_healthz().pipeline_store == "database"
        client.create_experiment("iap-contract")

        other = google.oauth2.id_token.fetch_id_token(request, "other.apps.googleusercontent.com")
        wrong = kfp.Client(host=server.url, existing_token=other, namespace="team-a")
        with pytest.raises(ApiException) as err:
            wrong.list_experiments()
        assert err.value.status == 401
        assert "Invalid IAP credentials: JWT audience doesn't match" in err.value.body


def test_a_collected_run_still_answers_kfp_client():
    spec_path = str(
        Path(__file__).resolve().parents[1] / "bridge" / "fixtures" / "tiny_pipeline.yaml"
    )
    with KfpApiStandIn(profile="argo-gc") as server:
        client = kfp.Client(host=server.url)
        run = client.create_run_from_pipeline_package(spec_path, arguments={}, run_name="gc")
        for _ in range(10):
            state = client.get_run(run.run_id).state
            if state == "SUCCEEDED":
                break
        assert state == "SUCCEEDED"
        assert run.run_id in server.state.collected  # the workflow is gone
        details = client.get_run(run.run_id).run_details.task_details
        assert {d.display_name for d in details} >= {"greet", "executor"}
