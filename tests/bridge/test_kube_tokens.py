"""Multi-user Kubeflow behind Istio: service-account tokens that expire, and the header refusal.

Against the stand-in's ``multi-user-istio`` profile (``kfp_bridge/testing/kfp_api/istio.py``)
and a loopback Kubernetes TokenRequest endpoint reached through a kubeconfig the test writes
(``kfp_bridge/testing/kube_api.py``), with the cncf-kubernetes provider's ``KubernetesHook``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import pytest

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.exceptions import AuthError
from kfp_bridge.hooks import kube_tokens
from kfp_bridge.hooks.kfp import KfpConnectionError, KubeflowPipelineHook
from kfp_bridge.run_event import Outcome, RunEvent
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn
from kfp_bridge.testing.kube_api import KubeApiStandIn
from kfp_bridge.triggers.kfp import KubeflowPipelineRunTrigger
from kfp_bridge.waiting import WaitPolicy

SPEC = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "schemaVersion": "2.1.0"}
SA = ("team-a", "airflow-runner")
SA_USER = "system:serviceaccount:team-a:airflow-runner"


@pytest.fixture
def istio_server():
    with KfpApiStandIn(profile="multi-user-istio") as server:
        server.set_multi_user(access={SA_USER: ["team-a"], "alice@example.com": ["team-a"]})
        yield server


@pytest.fixture
def kube(istio_server, tmp_path, monkeypatch):
    """The TokenRequest endpoint; its tokens are reviewable by the KFP stand-in."""
    with KubeApiStandIn([SA], on_mint=istio_server.register_token) as kube:
        path = kube.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv(
            "AIRFLOW_CONN_KUBE_STANDIN",
            json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(path)}}),
        )
        yield kube


def trigger_wait(run_id: str, run_name: str) -> RunEvent:
    """The event the trigger of connection ``test_kfp`` fires first for the run (fast polls)."""
    trigger = KubeflowPipelineRunTrigger(
        kfp_conn_id="test_kfp",
        run_id=run_id,
        run_name=run_name,
        policy=WaitPolicy(poll_interval=0.01, max_poll_interval=0.05),
    )

    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return RunEvent.from_payload(asyncio.run(asyncio.wait_for(first(), 30)))


def token_file_extra(path) -> dict:
    """A ``kfp`` connection's extra reading the service-account token from ``path``."""
    return {"auth": "sa_token_file", "credentials_path": str(path), "namespace": "team-a"}


def token_request_extra(**more) -> dict:
    return {
        "auth": "kubernetes_token_request",
        "namespace": "team-a",
        "kubernetes_conn_id": "kube_standin",
        "serviceaccount": "airflow-runner",
        "request_timeout": 5,
        **more,
    }


def write_token(path, token: str) -> None:
    """As the kubelet does: a new file swapped in atomically."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)


class SteppedClock:
    """The providers' clock; ``jump()`` makes an hour pass and the server expire its tokens."""

    def __init__(self, server: KfpApiStandIn) -> None:
        self.server = server
        self.offset = 0.0
        self.calls = 0
        self.jump_at: int | None = None

    def __call__(self) -> float:
        self.calls += 1
        if self.jump_at is not None and self.calls == self.jump_at:
            self.jump()
        return self.now()

    def now(self) -> float:
        """The same clock, for the Kubernetes stand-in (not counted)."""
        return time.time() + self.offset

    def jump(self, seconds: float = 3600) -> None:
        self.server.expire_tokens()  # every token issued so far is past its expiry
        self.offset += seconds


# -- the token file (ServiceAccountTokenVolumeCredentials) ----------------------------------
def test_token_file_is_read_again_only_when_the_kubelet_replaces_it(tmp_path):
    path = tmp_path / "token"
    write_token(path, "first")
    provider = kube_tokens.ServiceAccountTokenFile(path)
    assert (provider(), provider(), provider.reads) == ("first", "first", 1)
    write_token(path, "second")
    assert (provider(), provider.reads) == ("second", 2)


def test_token_file_path_defaults_like_the_kfp_sdk(tmp_path, monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    assert str(kube_tokens.ServiceAccountTokenFile().path) == (
        "/var/run/secrets/kubeflow/pipelines/token"
    )
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "t"))
    assert kube_tokens.ServiceAccountTokenFile().path == tmp_path / "t"


def test_missing_or_empty_token_file_is_a_clear_auth_error(tmp_path):
    with pytest.raises(AuthError, match=r"token file .*missing.*No such file"):
        kube_tokens.ServiceAccountTokenFile(tmp_path / "missing")()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AuthError, match="is empty"):
        kube_tokens.ServiceAccountTokenFile(tmp_path / "empty")()


def test_backend_polling_across_expiry_uses_the_rewritten_token_file(
    istio_server, make_conn, tmp_path
):
    istio_server.set_schedule(pending=2, running=4)
    path = tmp_path / "token"
    first = istio_server.issue_token(SA_USER)
    write_token(path, first)
    backend = make_conn(host=istio_server.url, extra=token_file_extra(path)).get_conn()
    run_id = backend.submit(RunRequest(display_name="file", pipeline_spec=SPEC)).run_id
    assert backend.get_run(run_id).state is RunState.PENDING

    # the token expires; the kubelet has already written its successor
    istio_server.expire_tokens(first)
    second = istio_server.issue_token(SA_USER)
    write_token(path, second)
    states = [backend.get_run(run_id).state for _ in range(6)]
    assert states[-1] is RunState.SUCCEEDED

    sent = [r["authorization"] for r in istio_server.requests()]
    assert set(sent) == {f"Bearer {first}", f"Bearer {second}"}
    assert sent.index(f"Bearer {second}") > max(
        i for i, s in enumerate(sent) if s == f"Bearer {first}"
    )


def test_without_renewal_the_expired_token_is_a_401(istio_server, make_conn):
    """The control: a fixed token (auth=token) ends in 401 once it has expired."""
    token = istio_server.issue_token(SA_USER)
    backend = make_conn(
        host=istio_server.url, password=token, extra={"namespace": "team-a"}
    ).get_conn()
    run_id = backend.submit(RunRequest(display_name="fixed", pipeline_spec=SPEC)).run_id
    istio_server.expire_tokens()
    with pytest.raises(AuthError, match=r"HTTP 401.*Review.Status.Authenticated is false"):
        backend.get_run(run_id)


# -- TokenRequest through the cncf-kubernetes hook ------------------------------------------
def test_token_request_mints_a_pipelines_audience_token_through_the_kubeconfig(
    istio_server, kube, make_conn
):
    hook = make_conn(host=istio_server.url, extra=token_request_extra())
    ok, message = hook.test_connection()
    assert ok is True, message
    assert kube.minted == [
        {
            "namespace": "team-a",
            "name": "airflow-runner",
            "audiences": ["pipelines.kubeflow.org"],
            "seconds": 3600,
        }
    ]
    (experiments,) = [r for r in istio_server.requests() if r["path"].endswith("/experiments")]
    assert experiments["user"] is None  # the token alone: Istio lets it through
    assert experiments["authorization"].startswith("Bearer eyJ")  # a JWT, as Kubernetes mints
    assert "namespace team-a accepted" in message


def test_trigger_wait_renews_the_minted_token_across_its_expiry(
    istio_server, kube, make_conn, monkeypatch
):
    clock = SteppedClock(istio_server)
    monkeypatch.setattr(kube_tokens, "_now", clock)
    kube.clock = clock.now
    istio_server.set_schedule(pending=3, running=3)
    make_conn(host=istio_server.url, extra=token_request_extra())
    backend = KubeflowPipelineHook(kfp_conn_id="test_kfp").get_conn()
    run_id = backend.submit(RunRequest(display_name="wait", pipeline_spec=SPEC)).run_id

    clock.calls, clock.jump_at = 0, 3  # an hour passes between the trigger's 2nd and 3rd poll
    event = trigger_wait(run_id, "wait")
    assert (event.outcome, event.state) == (Outcome.SUCCEEDED, RunState.SUCCEEDED), event.message
    assert clock.calls >= 3  # the jump happened during the wait
    # one token for the submission, one for the wait's start (a new hook), one after the jump
    assert len(kube.minted) == 3
    polls = [r for r in istio_server.requests() if r["path"].endswith(run_id)]
    assert len({p["authorization"] for p in polls}) == 2


def test_trigger_wait_with_a_fixed_token_fails_on_expiry(istio_server, make_conn):
    """The control for the test above: without renewal the same wait ends in AUTH_ERROR."""
    istio_server.set_schedule(pending=3, running=3)
    token = istio_server.issue_token(SA_USER)
    make_conn(host=istio_server.url, password=token, extra={"namespace": "team-a"})
    backend = KubeflowPipelineHook(kfp_conn_id="test_kfp").get_conn()
    run_id = backend.submit(RunRequest(display_name="fixed", pipeline_spec=SPEC)).run_id
    istio_server.expire_tokens()
    event = trigger_wait(run_id, "fixed")
    assert event.outcome is Outcome.AUTH_ERROR
    assert token not in event.message


def test_token_request_refused_by_kubernetes_names_the_service_account(
    istio_server, kube, make_conn
):
    hook = make_conn(host=istio_server.url, extra=token_request_extra(serviceaccount="nobody"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "AuthError" in message and "team-a/nobody" in message and "HTTP 404" in message
    assert kube.minted == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kubernetes_conn_id": None}, "needs extra.kubernetes_conn_id"),
        ({"serviceaccount": None}, "needs extra.serviceaccount"),
        ({"namespace": None}, "service account's namespace"),
        ({"expiration_seconds": 60}, "at least 600"),
        ({"expiration_seconds": "soon"}, "whole number of seconds"),
        ({"user": "alice@example.com"}, "exclude each other"),
    ],
)
def test_token_settings_are_checked_before_any_request(
    istio_server, kube, make_conn, extra, message
):
    hook = make_conn(host=istio_server.url, extra=token_request_extra(**extra))
    with pytest.raises(KfpConnectionError, match=message):
        hook.get_conn()
    assert kube.minted == [] and istio_server.requests() == []


def test_minted_tokens_never_reach_the_log(istio_server, kube, make_conn, caplog):
    caplog.set_level(logging.DEBUG)
    hook = make_conn(host=istio_server.url, extra=token_request_extra())
    hook.get_conn().healthz()
    token = istio_server.requests()[-1]["authorization"].split(" ", 1)[1]
    assert "Minted a token for service account team-a/airflow-runner" in caplog.text
    assert token not in caplog.text


# -- the identity header behind Istio, and what the connection test says -------------------
def test_user_header_behind_istio_fails_with_what_to_use_instead(istio_server, make_conn):
    hook = make_conn(
        host=istio_server.url, extra={"namespace": "team-a", "user": "alice@example.com"}
    )
    ok, message = hook.test_connection()
    assert ok is False
    assert "HTTP 403 'RBAC: access denied'" in message
    assert "`user` header option does not work behind Istio" in message
    assert "auth=sa_token_file" in message and "auth=kubernetes_token_request" in message
    with pytest.raises(AuthError, match="does not work behind Istio"):
        hook.get_conn().submit(RunRequest(display_name="h", pipeline_spec=SPEC))
    assert istio_server.runs() == []


def test_user_header_still_works_without_istio(make_conn, kfp_server_multi_user):
    ok, message = make_conn(
        host=kfp_server_multi_user.url,
        extra={"namespace": "team-a", "user": "alice@example.com"},
    ).test_connection()
    assert ok is True, message
    assert "identity: header kubeflow-userid" in message and "Istio" not in message


def test_connection_test_names_the_istio_topology(istio_server, make_conn, tmp_path):
    path = tmp_path / "token"
    write_token(path, istio_server.issue_token(SA_USER))
    ok, message = make_conn(host=istio_server.url, extra=token_file_extra(path)).test_connection()
    assert ok is True, message
    assert message.startswith(f"KFP API at {istio_server.url} is healthy (multi-user)")
    assert "API server (ml-pipeline)" in message and "identity: bearer token" in message
    assert "namespace team-a accepted" in message
    assert "Istio in front: the `user` header option will not work here" in message


def test_connection_test_names_the_ui_proxy_and_the_version(make_conn):
    with KfpApiStandIn(profile="ui-proxy", server_version="2.5.0") as ui:
        ok, message = make_conn(host=ui.url).test_connection()
    assert ok is True, message
    assert "(single-user)" in message and "UI server (ml-pipeline-ui" in message
    assert "KFP 2.5.0" in message and "Istio" not in message


def test_connection_test_names_the_plain_api_server(make_conn, kfp_server):
    ok, message = make_conn(host=kfp_server.url).test_connection()
    assert ok is True, message
    assert "(single-user)" in message and "API server (ml-pipeline)" in message
    assert "identity: none sent" in message and "KFP 2.x" in message


def test_the_real_kubernetes_client_reads_the_token_request_stand_in(kube, tmp_path):
    """The stand-in's answer parses as the kubernetes client's own TokenRequest model."""
    from kubernetes import client, config

    api = client.ApiClient(
        config.new_client_from_config(str(kube.write_kubeconfig(tmp_path / "kc"))).configuration
    )
    core = client.CoreV1Api(api)
    spec = client.V1TokenRequestSpec(audiences=["pipelines.kubeflow.org"], expiration_seconds=900)
    answer = core.create_namespaced_service_account_token(
        "airflow-runner", "team-a", client.AuthenticationV1TokenRequest(spec=spec)
    )
    assert answer.status.token.count(".") == 2
    assert 0 < answer.status.expiration_timestamp.timestamp() - time.time() <= 900
    with pytest.raises(client.exceptions.ApiException) as err:
        core.create_namespaced_service_account_token(
            "airflow-runner",
            "team-a",
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=["x"], expiration_seconds=60)
            ),
        )
    assert err.value.status == 422 and "less than 10 minutes" in err.value.body
    wrong = config.new_client_from_config(
        str(kube.write_kubeconfig(tmp_path / "bad", credential="nope"))
    )
    with pytest.raises(client.exceptions.ApiException) as err:
        client.CoreV1Api(wrong).create_namespaced_service_account_token(
            "airflow-runner", "team-a", client.AuthenticationV1TokenRequest(spec=spec)
        )
    assert err.value.status == 401


def test_the_form_offers_every_auth_mode():
    from kfp_bridge.get_provider_info import get_provider_info
    from kfp_bridge.hooks.kfp import AUTH_MODES

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert fields["auth"]["schema"]["enum"] == [*AUTH_MODES, None]
    for name in ("credentials_path", "kubernetes_conn_id", "serviceaccount", "audience"):
        assert name in fields


def test_renewed_tokens_are_masked_as_they_are_issued(istio_server, tmp_path, make_conn):
    """Each new token is registered with Airflow's masker; the JWT shape is redacted anyway."""
    from airflow.sdk.log import redact

    from kfp_bridge.redaction import redact_shapes

    path = tmp_path / "token"
    tokens = []
    backend = make_conn(host=istio_server.url, extra=token_file_extra(path)).get_conn()
    for _ in range(2):
        tokens.append(istio_server.issue_token(SA_USER))
        write_token(path, tokens[-1])
        backend.healthz()
    for token in tokens:
        assert token not in redact(f"service said: {token}")
        assert token not in redact_shapes(f"service said: {token}")


def test_the_profile_runs_as_a_separate_process_with_token_controls(make_conn):
    """``python -m kfp_bridge.testing.kfp_api --profile multi-user-istio`` (for e2e triggerers)."""
    from kfp_bridge.testing.kfp_api.server import standin_process

    with standin_process(profile="multi-user-istio") as control:
        token = control.issue_token(SA_USER)
        backend = make_conn(
            host=control.url, password=token, extra={"namespace": "team-a"}
        ).get_conn()
        assert backend.healthz()["multi_user"] is True
        backend.check_access()
        control.expire_tokens(token)
        with pytest.raises(AuthError, match="HTTP 401"):
            backend.check_access()


def test_kfps_own_403_is_not_taken_for_istios(istio_server, make_conn):
    """A SubjectAccessReview refusal (resource_manager.go IsAuthorized) is KFP's JSON 403."""
    token = istio_server.issue_token(SA_USER)
    ok, message = make_conn(
        host=istio_server.url, password=token, extra={"namespace": "team-b"}
    ).test_connection()
    assert ok is False
    assert "HTTP 403 (no access)" in message and f"User '{SA_USER}' is not authorized" in message
    assert "Istio" not in message and "RBAC: access denied" not in message


# -- a token refused before its stated expiry: renewed once, then a clear error --------------
# TokenReview fails a token whose service account or bound pod is gone before its "exp"
# (kubernetes pkg/serviceaccount/claims.go, Validate); the stand-in's expire_tokens() is that.
def _run_call_tokens(server) -> list[str | None]:
    return [r["authorization"] for r in server.requests() if "/runs/" in r["path"]]


def test_a_revoked_minted_token_is_minted_again_and_the_call_retried_once(
    istio_server, kube, make_conn
):
    backend = make_conn(host=istio_server.url, extra=token_request_extra()).get_conn()
    run_id = backend.submit(RunRequest(display_name="revoked", pipeline_spec=SPEC)).run_id
    assert len(kube.minted) == 1
    istio_server.expire_tokens()  # revoked long before its hour is up
    assert backend.get_run(run_id).run_id == run_id
    assert len(kube.minted) == 2  # one new TokenRequest, not one per call
    sent = _run_call_tokens(istio_server)
    assert len(sent) == 2 and sent[0] != sent[1]  # the refused call, then the retry


def test_a_token_file_rotated_unseen_is_read_again_after_a_401(istio_server, make_conn, tmp_path):
    path = tmp_path / "token"
    first = istio_server.issue_token(SA_USER)
    write_token(path, first)
    backend = make_conn(host=istio_server.url, extra=token_file_extra(path)).get_conn()
    run_id = backend.submit(RunRequest(display_name="unseen", pipeline_spec=SPEC)).run_id
    # the kubelet's new token, written in place with the old size and time: stat sees nothing
    second = istio_server.issue_token(SA_USER, lifetime=7200)
    assert len(second) == len(first)
    before = path.stat()
    path.write_text(second + "\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    istio_server.expire_tokens(first)
    assert backend.get_run(run_id).run_id == run_id
    assert _run_call_tokens(istio_server) == [f"Bearer {first}", f"Bearer {second}"]


def test_a_second_401_is_a_permanent_error_naming_the_mode_and_connection(
    istio_server, make_conn, tmp_path
):
    path = tmp_path / "token"
    token = istio_server.issue_token(SA_USER)
    write_token(path, token)
    backend = make_conn(
        "istio_revoked", host=istio_server.url, extra=token_file_extra(path)
    ).get_conn()
    run_id = backend.submit(RunRequest(display_name="gone", pipeline_spec=SPEC)).run_id
    istio_server.expire_tokens()  # revoked, and the file keeps it
    with pytest.raises(AuthError) as raised:
        backend.get_run(run_id)
    message = str(raised.value)
    assert "refused a renewed token too (HTTP 401 twice" in message
    assert "auth=sa_token_file of connection 'istio_revoked'" in message
    assert "Review.Status.Authenticated is false" in message
    assert token not in message and token[:20] not in message
    assert len(_run_call_tokens(istio_server)) == 2  # renewed and retried once, no more
