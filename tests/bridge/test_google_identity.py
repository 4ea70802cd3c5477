"""Which Google identity each request carries: KFP bearer tokens, Vertex, and the triggerer.

The real Google provider hook, google-auth and the real clients run; Google's token
and IAM endpoints are answered by ``tests/bridge/google_fakes.py`` (recorded), the
KFP API by the stand-in server, which records every ``Authorization`` header.
The source identity is a service-account key in a Google Cloud connection
(``deployer@src-proj``); the identity to act as is ``runner@run-proj``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from kfp_bridge.backends.base import RunRequest
from kfp_bridge.exceptions import AuthError
from kfp_bridge.hooks.kfp import KfpConnectionError, KubeflowPipelineHook
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger
from kfp_bridge.waiting import WaitPolicy
from tests.bridge.google_fakes import google_apis, google_connection, service_account_key

SOURCE = "deployer@src-proj.iam.gserviceaccount.com"
RUNNER = "runner@run-proj.iam.gserviceaccount.com"
MIDDLE = "mid@mid-proj.iam.gserviceaccount.com"
SPEC = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "schemaVersion": "2.1.0"}


@pytest.fixture
def connections(kfp_server, monkeypatch):
    """``kfp_google`` (auth=google, the stand-in) and ``google_cloud_default`` (the key)."""

    def define(**google_extra) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
            google_connection(service_account_key(SOURCE, "src-proj"), **google_extra),
        )

    monkeypatch.setenv(
        "AIRFLOW_CONN_KFP_GOOGLE",
        json.dumps({"conn_type": "kfp", "host": kfp_server.url, "extra": {"auth": "google"}}),
    )
    define()
    return define


def _kfp_tokens(kfp_server) -> list[str | None]:
    return [r["authorization"] for r in kfp_server.requests()]


def test_kfp_requests_carry_the_impersonated_token(kfp_server, connections):
    with google_apis() as google:
        hook = KubeflowPipelineHook("kfp_google", impersonation_chain=RUNNER)
        backend = hook.get_conn()
        run_id = backend.submit(RunRequest(display_name="who", pipeline_spec=SPEC)).run_id
        backend.get_run(run_id)

    assert _kfp_tokens(kfp_server) == ["Bearer impersonated-1"] * 2
    [grant] = google.of("oauth2.googleapis.com/token")
    assert grant.authorization is None  # a JWT signed with the connection's key
    [iam] = google.of("generateAccessToken")
    assert f"/serviceAccounts/{RUNNER}:generateAccessToken" in iam.url
    assert iam.authorization == "Bearer source-token-1"  # asked as the source identity
    assert not iam.body.get("delegates")
    assert iam.body["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]


def test_a_chain_impersonates_its_last_account_through_the_others(kfp_server, connections):
    with google_apis() as google:
        KubeflowPipelineHook(
            "kfp_google", impersonation_chain=[MIDDLE, RUNNER]
        ).get_conn().healthz()
    [iam] = google.of("generateAccessToken")
    assert f"/serviceAccounts/{RUNNER}:" in iam.url
    assert iam.body["delegates"] == [MIDDLE]
    assert _kfp_tokens(kfp_server) == ["Bearer impersonated-1"]


def test_the_connection_field_applies_unless_the_argument_is_given(kfp_server, connections):
    connections(impersonation_chain=f"{MIDDLE}, other@o-proj.iam.gserviceaccount.com")
    with google_apis() as google:
        KubeflowPipelineHook("kfp_google").get_conn().healthz()
        KubeflowPipelineHook("kfp_google", impersonation_chain=RUNNER).get_conn().healthz()
    first, second = google.of("generateAccessToken")
    assert "/serviceAccounts/other@o-proj.iam.gserviceaccount.com:" in first.url
    assert first.body["delegates"] == [MIDDLE]
    assert f"/serviceAccounts/{RUNNER}:" in second.url  # the argument wins
    assert not second.body.get("delegates")


def test_without_a_chain_the_connection_identity_itself_is_used(kfp_server, connections):
    with google_apis() as google:
        KubeflowPipelineHook("kfp_google").get_conn().healthz()
    assert not google.of("generateAccessToken")
    assert _kfp_tokens(kfp_server) == ["Bearer source-token-1"]


def test_a_missing_default_connection_means_application_default_credentials(
    kfp_server, connections, monkeypatch, tmp_path
):
    monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT")
    key = tmp_path / "adc.json"
    key.write_text(json.dumps(service_account_key(SOURCE, "src-proj")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with google_apis():
        KubeflowPipelineHook("kfp_google", impersonation_chain=RUNNER).get_conn().healthz()
    assert _kfp_tokens(kfp_server) == ["Bearer impersonated-1"]


def test_a_missing_named_google_connection_is_named(connections):
    hook = KubeflowPipelineHook("kfp_google", gcp_conn_id="gcp_elsewhere")
    with pytest.raises(KfpConnectionError, match=r"'gcp_elsewhere'.*not defined"):
        hook.get_conn()


def test_refused_impersonation_is_an_auth_error(kfp_server, connections):
    with google_apis(refuse_impersonation=True):
        backend = KubeflowPipelineHook("kfp_google", impersonation_chain=RUNNER).get_conn()
        with pytest.raises(AuthError, match="Google credentials could not be used"):
            backend.healthz()
    assert kfp_server.requests() == []  # nothing reached KFP without a token


def test_vertex_requests_carry_the_impersonated_token_to_the_regional_endpoint(
    connections, monkeypatch
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_VERTEX_GOOGLE",
        json.dumps(
            {
                "conn_type": "kfp",
                "extra": {
                    "backend": "vertex",
                    "location": "asia-northeast1",
                    "api_transport": "rest",
                },
            }
        ),
    )
    name = "projects/run-proj/locations/asia-northeast1/pipelineJobs/job-1"
    job = {"name": name, "displayName": "job", "state": "PIPELINE_STATE_RUNNING"}
    with google_apis(vertex_jobs={name: job}) as google:
        backend = KubeflowPipelineHook("vertex_google", impersonation_chain=RUNNER).get_conn()
        status = backend.get_run("job-1")

    # No project in the kfp connection: the impersonated account's project, as in the provider.
    assert backend.parent == "projects/run-proj/locations/asia-northeast1"
    assert status.state.value == "RUNNING"
    [get] = google.of("aiplatform")
    assert get.url.startswith(f"https://asia-northeast1-aiplatform.googleapis.com:443/v1/{name}")
    assert get.authorization == "Bearer impersonated-1"
    assert status.url == (
        "https://console.cloud.google.com/vertex-ai/locations/asia-northeast1/pipelines/runs/"
        "job-1?project=run-proj"
    )


def test_the_kfp_connection_project_wins_over_the_google_connection(connections, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_VERTEX_GOOGLE",
        json.dumps(
            {
                "conn_type": "kfp",
                "extra": {"backend": "vertex", "location": "us-central1", "project_id": "ml-prod"},
            }
        ),
    )
    with google_apis():
        backend = KubeflowPipelineHook("vertex_google", impersonation_chain=RUNNER).get_conn()
    assert backend.parent == "projects/ml-prod/locations/us-central1"


def test_vertex_without_any_project_names_the_field(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", google_connection(is_anonymous=True))
    monkeypatch.setenv(
        "AIRFLOW_CONN_VERTEX_NOPROJ",
        json.dumps({"conn_type": "kfp", "extra": {"backend": "vertex", "location": "us-central1"}}),
    )
    with pytest.raises(KfpConnectionError, match=r"extra\.project_id is required"):
        KubeflowPipelineHook("vertex_noproj").get_conn()


def test_the_triggerer_refreshes_the_token_during_a_long_wait(kfp_server, kfp_backend, connections):
    """A wait longer than a token's life: the triggerer's requests get fresh tokens.

    The trigger is rebuilt from its stored kwargs (as the triggerer does, through
    Airflow's own kwargs encoding) and run in Airflow's ``TriggerRunner``.
    """
    from airflow.jobs.triggerer_job_runner import TriggerRunner
    from airflow.models.trigger import Trigger

    kfp_server.set_schedule(pending=0, running=12)
    run_id = kfp_backend.submit(RunRequest(display_name="long", pipeline_spec=SPEC)).run_id
    queued = KubeflowPipelineRunTrigger(
        kfp_conn_id="kfp_google",
        run_id=run_id,
        policy=WaitPolicy(poll_interval=0.25, max_poll_interval=0.25),
        impersonation_chain=[MIDDLE, RUNNER],
    )
    _, kwargs = queued.serialize()
    stored = Trigger._decrypt_kwargs(Trigger.encrypt_kwargs(kwargs))
    assert stored["impersonation_chain"] == [MIDDLE, RUNNER]  # the chain, never a token
    assert "token" not in json.dumps(stored).lower()
    trigger = KubeflowPipelineRunTrigger(**stored)

    async def run_in_triggerer() -> dict:
        runner = TriggerRunner()
        runner.triggers[1] = {"task": None, "name": "t", "events": 0, "is_watcher": False}
        await runner.run_trigger(1, trigger, None, None)
        return runner.events[0].event.payload

    # Each impersonated token is valid for ~1 s; the wait takes ~3 s.
    with google_apis(impersonated_valid_seconds=1.0) as google:
        event = RunEvent.from_payload(asyncio.run(asyncio.wait_for(run_in_triggerer(), 60)))

    assert event.outcome is Outcome.SUCCEEDED
    polls = [r["authorization"] for r in kfp_server.requests() if run_id in r["path"]]
    tokens = list(dict.fromkeys(polls))  # in order of first use
    assert len(tokens) >= 3, polls
    assert tokens == [f"Bearer impersonated-{n}" for n in range(1, len(tokens) + 1)]
    assert len(polls) > len(tokens)  # a token is reused while valid, not fetched per request
    iam = google.of("generateAccessToken")
    assert len(iam) == len(tokens)  # one IAM call per token, each for the same chain
    assert all(f"/serviceAccounts/{RUNNER}:" in c.url for c in iam)
    assert {c.authorization for c in iam} == {"Bearer source-token-1"}
