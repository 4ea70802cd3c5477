"""The stand-in KFP API server driven by the real ``kfp.Client`` 2.17.3 (the reference client).

Runs in ``.venv-pipeline`` (``make test`` does that). Every endpoint the stand-in
serves is called here the way a KFP user calls it; what the SDK cannot do against
the stand-in is a stand-in defect. Where the real server behaves badly for the
SDK (the filter's double decode, terminate ending FAILED), the test asserts the
real behaviour, so the stand-in cannot quietly become kinder again.
"""

from __future__ import annotations

import json
from pathlib import Path

import kfp
import kfp_server_api
import pytest
from kfp_server_api.exceptions import ApiException

from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "bridge" / "fixtures" / "tiny_pipeline.yaml"
PRODUCTION = REPO / "pipelines" / "compiled" / "daily_prediction.yaml"
# kfp.Client warns on every construction that it needs KFP >= 2.0.0-beta.2
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


def name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": name}]}
    )


def error_body(err: ApiException) -> dict:
    return json.loads(err.body)


def _stand_in(profile: str = "api-server"):
    with KfpApiStandIn(profile=profile) as stand_in:
        stand_in.set_schedule(pending=1, running=1)
        yield stand_in


def _client(url: str, tmp_path, monkeypatch):
    """kfp.Client on ``url``, its local context file kept under ``tmp_path``."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))
    return kfp.Client(host=url)


@pytest.fixture
def server():
    yield from _stand_in()


@pytest.fixture
def client(server, tmp_path, monkeypatch):
    return _client(server.url, tmp_path, monkeypatch)


def wait_state(client: kfp.Client, run_id: str, states: set[str], polls: int = 20) -> str:
    for _ in range(polls):
        state = client.get_run(run_id).state
        if state in states:
            return state
    raise AssertionError(f"run {run_id} never reached {states} (last {state})")


def test_healthz(client):
    health = client.get_kfp_healthz()
    assert health.multi_user is False
    assert health.pipeline_store == "database"


def test_experiments_create_get_list_delete(client):
    created = client.create_experiment("daily-prediction", description="d")
    assert created.experiment_id and created.storage_state == "AVAILABLE"
    assert client.get_experiment(experiment_name="daily-prediction").experiment_id == (
        created.experiment_id
    )
    assert client.get_experiment(experiment_id=created.experiment_id).description == "d"
    # create_experiment of an existing name returns it (kfp.Client looks it up first)
    assert client.create_experiment("daily-prediction").experiment_id == created.experiment_id
    listed = client.list_experiments(filter=name_filter("daily-prediction"))
    assert [e.experiment_id for e in listed.experiments] == [created.experiment_id]
    client.delete_experiment(created.experiment_id)
    with pytest.raises(ApiException) as err:
        client.get_experiment(experiment_id=created.experiment_id)
    assert err.value.status == 404


def test_empty_lists_leave_the_field_out(client):
    listed = client.list_runs()
    assert listed.runs is None and listed.next_page_token is None and listed.total_size is None


def test_run_from_package_get_and_succeed(client, server):
    result = client.create_run_from_pipeline_package(
        str(TINY),
        arguments={"message": "hi", "repeat": 2},
        run_name="tiny-1",
        experiment_name="contract",
        enable_caching=False,
    )
    run = client.get_run(result.run_id)
    assert run.display_name == "tiny-1"
    assert run.runtime_config.parameters == {"message": "hi", "repeat": 2}
    assert run.pipeline_spec["pipelineInfo"]["name"]
    finished = client.wait_for_run_completion(result.run_id, timeout=30, sleep_duration=0)
    assert finished.state == "SUCCEEDED"
    assert finished.error is None
    names = [t.display_name for t in finished.run_details.task_details]
    assert "executor" in names and finished.state_history[-1].state == "SUCCEEDED"


def test_list_runs_with_filter_sort_and_pagination(client):
    exp = client.create_experiment("paging")
    ids = [
        client.run_pipeline(
            exp.experiment_id, f"r-{i}", pipeline_package_path=str(TINY), params={"message": "m"}
        ).run_id
        for i in range(5)
    ]
    seen, token = [], ""
    while True:
        page = client.list_runs(
            experiment_id=exp.experiment_id, page_size=2, page_token=token, sort_by="name"
        )
        seen += [r.display_name for r in page.runs]
        assert page.total_size == 5
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"r-{i}" for i in range(5)]
    only = client.list_runs(experiment_id=exp.experiment_id, filter=name_filter("r-3"))
    assert [r.run_id for r in only.runs] == [ids[3]]
    # a page token with a different filter is refused (server/list_request_util.go)
    first = client.list_runs(experiment_id=exp.experiment_id, page_size=2)
    with pytest.raises(ApiException) as err:
        client.list_runs(
            experiment_id=exp.experiment_id,
            page_token=first.next_page_token,
            filter=name_filter("r-1"),
        )
    assert (
        err.value.status == 400 and "page token does not match" in error_body(err.value)["message"]
    )
    with pytest.raises(ApiException) as err:
        client.list_runs(experiment_id=exp.experiment_id, sort_by="colour desc")
    assert err.value.status == 400


def test_terminate_ends_failed_and_twice_is_400(client, server):
    server.set_schedule(pending=0, running=1000, canceling=1)
    run = client.create_run_from_pipeline_package(str(TINY), {"message": "x"}, run_name="t")
    assert wait_state(client, run.run_id, {"RUNNING"}) == "RUNNING"
    client.terminate_run(run.run_id)
    assert client.get_run(run.run_id).state == "CANCELING"
    final = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    assert final.state == "FAILED" and final.error is None
    with pytest.raises(ApiException) as err:
        client.terminate_run(run.run_id)
    assert err.value.status == 400
    body = error_body(err.value)
    assert set(body) == {"code", "message", "details"} and body["code"] == 3


def test_failed_run_has_no_error_text_but_a_pod_log(client, server):
    server.set_schedule(pending=0, running=1, outcome="FAILED", error="ValueError: bad input")
    run = client.create_run_from_pipeline_package(str(TINY), {"message": "x"}, run_name="f")
    final = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    assert final.state == "FAILED" and final.error is None
    failed = [t for t in final.run_details.task_details if t.state == "FAILED"]
    assert all(t.error is None for t in final.run_details.task_details)
    task = next(t for t in failed if t.display_name == "greet")
    pod = task.child_tasks[0].pod_name
    # the log endpoint is plain HTTP (apiserver/main.go); kfp.Client has no method for it
    api = client._run_api.api_client
    response = api.call_api(
        f"/apis/v1alpha1/runs/{run.run_id}/nodes/{pod}/log",
        "GET",
        _preload_content=False,
        auth_settings=["Bearer"],
    )
    assert "ValueError: bad input" in response.data.decode()
    server.remove_task_logs(run.run_id)
    gone = api.call_api(
        f"/apis/v1alpha1/runs/{run.run_id}/nodes/{pod}/log", "GET", _preload_content=False
    )
    assert gone.status == 200  # the handler writes 200 before it reads the log
    assert "not found" in json.loads(gone.data)["error_message"]


def test_pipelines_and_versions_upload_list_get_delete(client):
    pipeline = client.upload_pipeline(str(TINY), pipeline_name="tiny", description="t")
    assert pipeline.display_name == "tiny" and pipeline.pipeline_id
    assert client.get_pipeline_id("tiny") == pipeline.pipeline_id
    assert client.get_pipeline(pipeline.pipeline_id).description == "t"
    version = client.upload_pipeline_version(
        str(PRODUCTION), pipeline_version_name="v2", pipeline_id=pipeline.pipeline_id
    )
    versions = client.list_pipeline_versions(pipeline.pipeline_id, sort_by="created_at desc")
    assert {v.display_name for v in versions.pipeline_versions} == {"tiny", "v2"}
    got = client.get_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id)
    assert got.pipeline_spec["pipeline_spec"]["pipelineInfo"]["name"] == "daily-prediction"
    assert "platform_spec" in got.pipeline_spec  # the kfp-kubernetes second document
    listed = client.list_pipelines(filter=name_filter("tiny"))
    assert [p.pipeline_id for p in listed.pipelines] == [pipeline.pipeline_id]
    with pytest.raises(ApiException) as err:  # a second upload of the same name
        client.upload_pipeline(str(TINY), pipeline_name="tiny")
    assert err.value.status == 409
    # run by pipeline id alone: the latest version (resource_manager.go). kfp.Client's
    # run_pipeline insists on both ids, so this goes through its generated RunServiceApi.
    exp = client.create_experiment("by-pipeline")
    run = client._run_api.run_service_create_run(
        kfp_server_api.V2beta1Run(
            display_name="latest",
            experiment_id=exp.experiment_id,
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline.pipeline_id
            ),
        )
    )
    # latest = newest created_at, ties (same second) by the larger id (storage/pipeline_store.go)
    latest = max(versions.pipeline_versions, key=lambda v: (v.created_at, v.pipeline_version_id))
    assert run.pipeline_version_reference.pipeline_version_id == latest.pipeline_version_id
    with pytest.raises(ApiException) as err:  # versions exist: refused without cascade
        client.delete_pipeline(pipeline.pipeline_id)
    assert err.value.status == 400
    for v in versions.pipeline_versions:
        client.delete_pipeline_version(pipeline.pipeline_id, v.pipeline_version_id)
    client.delete_pipeline(pipeline.pipeline_id)
    assert client.get_pipeline_id("tiny") is None


def test_missing_pipeline_version_is_500(client):
    exp = client.create_experiment("missing")
    with pytest.raises(ApiException) as err:
        client.run_pipeline(exp.experiment_id, "x", pipeline_id="nope", version_id="nope")
    assert err.value.status == 500
    assert "PipelineVersion nope not found" in error_body(err.value)["message"]


def test_an_inline_spec_that_is_no_pipeline_spec_is_a_500_naming_it(client):
    """resource/resource_manager.go wraps template/template.go's refusal as internal: the 500
    the bridge must treat as permanent, with upstream's words (kfp_api._BAD_INPUT_500)."""
    exp = client.create_experiment("bad-spec")
    run = kfp_server_api.V2beta1Run(
        display_name="bad", experiment_id=exp.experiment_id, pipeline_spec={"not": "a spec"}
    )
    with pytest.raises(ApiException) as err:
        client._run_api.run_service_create_run(run=run)
    assert err.value.status == 500
    message = error_body(err.value)["message"]
    assert "Failed to fetch a template with an invalid pipeline spec manifest" in message
    assert message.endswith("InvalidInputError: unknown template format: pipeline spec is invalid")


def test_recurring_runs_create_list_enable_disable_delete(client):
    exp = client.create_experiment("schedules")
    job = client.create_recurring_run(
        exp.experiment_id,
        "daily",
        cron_expression="0 0 21 * * *",
        pipeline_package_path=str(TINY),
        params={"message": "m"},
    )
    assert job.status == "ENABLED" and job.trigger.cron_schedule.cron == "0 0 21 * * *"
    listed = client.list_recurring_runs(experiment_id=exp.experiment_id)
    assert [j.recurring_run_id for j in listed.recurring_runs] == [job.recurring_run_id]
    client.disable_recurring_run(job.recurring_run_id)
    assert client.get_recurring_run(job.recurring_run_id).status == "DISABLED"
    client.enable_recurring_run(job.recurring_run_id)
    assert client.get_recurring_run(job.recurring_run_id).mode == "ENABLE"
    client.delete_recurring_run(job.recurring_run_id)
    with pytest.raises(ApiException) as err:
        client.get_recurring_run(job.recurring_run_id)
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:  # robfig/cron v1: 5 or 6 fields
        client.create_recurring_run(
            exp.experiment_id, "bad", cron_expression="0 6 * *", pipeline_package_path=str(TINY)
        )
    assert err.value.status == 400 and "robfig/cron" in error_body(err.value)["message"]


def test_filter_is_decoded_twice(client):
    """``server/list_request_util.go`` parseAPIFilter: ``+`` is a space, a stray ``%`` a 400."""
    client.create_experiment("daily+hourly")
    with pytest.raises(ValueError, match="No experiment is found"):
        client.get_experiment(experiment_name="daily+hourly")
    with pytest.raises(ApiException) as err:
        client.get_experiment(experiment_name="100%")
    assert err.value.status == 400 and "invalid URL escape" in error_body(err.value)["message"]
    client.create_experiment("tägliche Vorhersage 日次")  # spaces and non-ASCII survive
    assert client.get_experiment(experiment_name="tägliche Vorhersage 日次").display_name


def test_unknown_request_field_is_refused(client):
    """protojson with DiscardUnknown: false (common/utils.go CustomMarshaler)."""
    api = client._experiment_api.api_client
    with pytest.raises(ApiException) as err:
        api.call_api(
            "/apis/v2beta1/experiments",
            "POST",
            body={"display_name": "x", "colour": "red"},
            header_params={"Content-Type": "application/json"},
            response_type="V2beta1Experiment",
        )
    assert err.value.status == 400 and "unknown field" in error_body(err.value)["message"]


def test_2_5_0_error_bodies_carry_error(server, client):
    server.set_server_version("2.5.0")
    with pytest.raises(ApiException) as err:
        client.get_run("nope")
    body = error_body(err.value)
    assert err.value.status == 404 and body["error"] == body["message"]


def test_kfp_1x_has_no_v2beta1(server, client):
    server.set_server_version("1.8.5")
    with pytest.raises(ApiException) as err:
        client.list_experiments()
    assert err.value.status == 404 and err.value.body.strip() in (b"Not Found", "Not Found")


@pytest.fixture
def multi_user_server():
    with KfpApiStandIn(multi_user=True) as stand_in:
        stand_in.set_multi_user(
            tokens={
                "good-token": ("alice@example.com", ["pipelines.kubeflow.org"]),
                "other-audience": ("alice@example.com", ["https://kubernetes.default"]),
            },
            access={"alice@example.com": ["team-a"], "bob@example.com": ["team-b"]},
        )
        yield stand_in


def test_multi_user_bearer_token(multi_user_server, tmp_path, monkeypatch):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))
    url = multi_user_server.url
    assert kfp.Client(host=url, namespace="team-a").get_kfp_healthz().multi_user is True
    anonymous = kfp.Client(host=url, namespace="team-a")
    with pytest.raises(ApiException) as err:
        anonymous.list_experiments()
    assert err.value.status == 401
    wrong_audience = kfp.Client(host=url, namespace="team-a", existing_token="other-audience")
    with pytest.raises(ApiException) as err:
        wrong_audience.list_experiments()
    assert err.value.status == 401 and "audience" in error_body(err.value)["message"]
    alice = kfp.Client(host=url, namespace="team-a", existing_token="good-token")
    exp = alice.create_experiment("mu")
    assert exp.namespace == "team-a"
    run = alice.create_run_from_pipeline_package(
        str(TINY), {"message": "m"}, run_name="mu-1", experiment_name="mu", namespace="team-a"
    )
    assert alice.get_run(run.run_id).display_name == "mu-1"
    elsewhere = kfp.Client(host=url, namespace="team-b", existing_token="good-token")
    with pytest.raises(ApiException) as err:
        elsewhere.list_experiments()
    assert err.value.status == 403
    no_namespace = kfp.Client(host=url, existing_token="good-token")
    with pytest.raises(ApiException) as err:
        no_namespace.list_runs()
    assert err.value.status == 400 and "namespace" in error_body(err.value)["message"]


def test_multi_user_identity_header(multi_user_server, tmp_path, monkeypatch):
    """In-cluster callers send ``kubeflow-userid`` (kfp.Client: context.json header settings)."""
    context = tmp_path / "context.json"
    context.write_text(
        json.dumps(
            {
                "namespace": "team-b",
                "client_authentication_header_name": "kubeflow-userid",
                "client_authentication_header_value": "bob@example.com",
            }
        )
    )
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(context))
    bob = kfp.Client(host=multi_user_server.url)
    assert bob.create_experiment("b").namespace == "team-b"
    seen = multi_user_server.requests()[-1]
    assert seen["user"] == "bob@example.com" and seen["authorization"] is None
    assert isinstance(bob.list_experiments(), kfp_server_api.V2beta1ListExperimentsResponse)


def test_delete_recurring_run_with_a_propagation_policy(client, server):
    """v2beta1 ``DeleteRecurringRunRequest.propagation_policy`` (``recurring_run.proto``)."""
    exp = client.create_experiment("schedules")
    jobs = [
        client.create_recurring_run(
            exp.experiment_id,
            f"daily-{i}",
            cron_expression="0 0 21 * * *",
            pipeline_package_path=str(TINY),
            params={"message": "m"},
        )
        for i in range(2)
    ]
    with pytest.raises(ApiException) as err:
        client.recurring_runs.recurring_run_service_delete_recurring_run(
            jobs[0].recurring_run_id, propagation_policy="SOMETIMES"
        )
    assert err.value.status == 400 and "propagation_policy" in error_body(err.value)["message"]
    client.recurring_runs.recurring_run_service_delete_recurring_run(
        jobs[0].recurring_run_id, propagation_policy="ORPHAN"
    )
    client.delete_recurring_run(jobs[1].recurring_run_id)  # kfp.Client sends no policy
    assert server.stored("deleted_recurring_runs") == [
        {"recurring_run_id": jobs[0].recurring_run_id, "propagation_policy": "ORPHAN"},
        {
            "recurring_run_id": jobs[1].recurring_run_id,
            "propagation_policy": "DELETE_PROPAGATION_POLICY_UNSPECIFIED",
        },
    ]


# -- host = the UI server (ml-pipeline-ui), as the AI Platform Pipelines proxy and Kubeflow's
# /pipeline ingress give it (frontend/server/app.ts) ------------------------------------------
@pytest.fixture
def ui_server():
    yield from _stand_in("ui-proxy")


@pytest.fixture
def ui_client(ui_server, tmp_path, monkeypatch):
    return _client(ui_server.url, tmp_path, monkeypatch)


def test_kfp_client_works_through_the_ui_proxy(ui_client, ui_server):
    # the UI server answers healthz itself (handlers/healthz.ts HealthzStats): multi_user
    # has the API server's name, the pipeline store does not (pipelineStore), so the
    # generated model reads multi_user and no pipeline_store
    health = ui_client.get_kfp_healthz()
    assert health.multi_user is False and health.pipeline_store is None
    result = ui_client.create_run_from_pipeline_package(
        str(TINY), arguments={"message": "hi"}, run_name="ui-1", experiment_name="contract"
    )
    finished = ui_client.wait_for_run_completion(result.run_id, timeout=30, sleep_duration=0)
    assert finished.state == "SUCCEEDED"
    assert ui_client.list_runs(experiment_id=result.run_info.experiment_id).runs
    assert ui_client.list_experiments().experiments
    ui_server.set_api_server_ready(False)  # the UI's fetch fails: still 200, with the fields
    assert ui_client.get_kfp_healthz().multi_user is False  # of its last success


def test_kfp_client_reads_no_multi_user_from_a_ui_server_without_its_api_server(
    ui_server, tmp_path, monkeypatch
):
    ui_server.set_api_server_ready(False)  # handlers/healthz.ts: 200, apiServerReady false
    client = _client(ui_server.url, tmp_path, monkeypatch)  # no namespace: __init__ asks healthz
    assert client.get_kfp_healthz().multi_user is None


def test_the_ui_proxy_serves_logs_by_pod_name_and_not_the_api_log_route(ui_client, ui_server):
    ui_server.set_schedule(pending=0, running=1, outcome="FAILED", error="ValueError: bad input")
    run = ui_client.create_run_from_pipeline_package(str(TINY), {"message": "x"}, run_name="f")
    final = ui_client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    task = next(t for t in final.run_details.task_details if t.display_name == "greet")
    node_id = task.child_tasks[0].pod_name  # an Argo node id (server/api_converter.go)
    api = ui_client._run_api.api_client
    with pytest.raises(ApiException) as raised:
        api.call_api(f"/apis/v1alpha1/runs/{run.run_id}/nodes/{node_id}/log", "GET")
    body = raised.value.body
    body = body.decode() if isinstance(body, bytes) else body
    assert raised.value.status == 404 and "<html" in body.lower()
    workflow, _, node_hash = node_id.rpartition("-")
    pod = f"{workflow}-system-container-impl-{node_hash}"  # Argo 3.4+ POD_NAMES=v2
    response = api.call_api(
        "/k8s/pod/logs",
        "GET",
        query_params=[("podname", pod), ("runid", run.run_id)],
        _preload_content=False,
    )
    assert "ValueError: bad input" in response.data.decode()


def test_retry_reruns_only_the_failed_task_of_the_same_run(client, server):
    """``RetryRun`` through the generated client (kfp.Client 2.17 does not wrap it)."""
    server.set_schedule(pending=0, running=1, outcome="FAILED", failed_task="greet")
    run = client.create_run_from_pipeline_package(str(TINY), {"message": "x"}, run_name="r")
    runs = kfp_server_api.RunServiceApi(client._run_api.api_client)
    with pytest.raises(ApiException) as early:  # only a Failed/Error workflow is retried
        runs.run_service_retry_run(run.run_id)
    # common/util/workflow.go GenerateRetryExecution: util.NewBadRequestError, gRPC Aborted
    # (common/util/error.go), which grpc-gateway answers as 409 Conflict
    body = error_body(early.value)
    assert early.value.status == 409 and body["code"] == 10
    assert body["message"] == (
        f"Failed to retry a run: Failed to retry run {run.run_id}: BadRequestError: "
        "Workflow must be Failed/Error to retry: workflow cannot be retried"
    )
    assert body["details"][0]["message"] == "Workflow must be Failed/Error to retry"
    failed = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    assert failed.state == "FAILED"
    before = {t.display_name: t.state for t in failed.run_details.task_details}
    assert before["greet-driver"] == "SUCCEEDED" and before["greet"] == "FAILED"
    runs.run_service_retry_run(run.run_id)
    assert client.get_run(run.run_id).state == "RUNNING"
    final = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    assert final.state == "SUCCEEDED" and final.run_id == run.run_id
    states = [h.state for h in final.state_history]
    assert states[-3:] == ["FAILED", "RUNNING", "SUCCEEDED"]
    tasks = {t.display_name: t for t in final.run_details.task_details}
    assert [h.state for h in tasks["greet-driver"].state_history] == ["SUCCEEDED"]
    assert [h.state for h in tasks["greet"].state_history][-3:] == [
        "FAILED",
        "RUNNING",
        "SUCCEEDED",
    ]
    (view,) = [r for r in server.runs() if r["run_id"] == run.run_id]
    assert "greet" in view["reruns"] and "greet-driver" not in view["reruns"]
    assert len(server.runs()) == 1


# -- multi-user Kubeflow behind Istio (profile multi-user-istio: kfp_bridge/testing/kfp_api/
# istio.py), and the bridge's token options where kfp.Client has the same one -------------------
SA_USER = "system:serviceaccount:team-a:airflow-runner"


@pytest.fixture
def istio_server():
    with KfpApiStandIn(profile="multi-user-istio") as stand_in:
        stand_in.set_schedule(pending=1, running=1)
        stand_in.set_multi_user(access={SA_USER: ["team-a"]})
        yield stand_in


@pytest.fixture
def context_file(tmp_path, monkeypatch):
    context = tmp_path / "context.json"
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(context))
    return context


def test_istio_refuses_the_identity_header_with_envoys_plain_403(istio_server, context_file):
    context_file.write_text(
        json.dumps(
            {
                "namespace": "team-a",
                "client_authentication_header_name": "kubeflow-userid",
                "client_authentication_header_value": SA_USER,
            }
        )
    )
    with pytest.raises(ApiException) as err:
        kfp.Client(host=istio_server.url).list_experiments()
    body = err.value.body.decode() if isinstance(err.value.body, bytes) else err.value.body
    assert (err.value.status, body) == (403, "RBAC: access denied")
    assert istio_server.runs() == [] and istio_server.stored("experiments") == []


def test_existing_token_works_until_it_expires_and_needs_a_namespace(istio_server, context_file):
    token = istio_server.issue_token(SA_USER)
    client = kfp.Client(host=istio_server.url, namespace="team-a", existing_token=token)
    assert client.get_kfp_healthz().multi_user is True
    run = client.create_run_from_pipeline_package(
        str(TINY), {"message": "m"}, run_name="istio-1", experiment_name="mu", namespace="team-a"
    )
    assert client.get_run(run.run_id).display_name == "istio-1"
    with pytest.raises(ApiException) as err:
        kfp.Client(host=istio_server.url, existing_token=token).list_runs()
    assert err.value.status == 400 and "namespace" in error_body(err.value)["message"]
    wrong = istio_server.issue_token(SA_USER, audiences=("https://kubernetes.default.svc",))
    with pytest.raises(ApiException) as err:
        kfp.Client(host=istio_server.url, namespace="team-a", existing_token=wrong).list_runs(
            namespace="team-a"
        )
    assert err.value.status == 401 and "audience" in error_body(err.value)["message"]
    istio_server.expire_tokens(token)
    with pytest.raises(ApiException) as err:
        client.get_run(run.run_id)
    assert err.value.status == 401
    assert "Review.Status.Authenticated is false" in error_body(err.value)["message"]


def test_a_revoked_token_is_refused_like_an_expired_one(istio_server, context_file):
    """istio.py "Revocation": the review fails before ``exp``; kfp.Client sees the 401 of any
    failed review, and a newly issued token is accepted."""
    token = istio_server.issue_token(SA_USER)
    client = kfp.Client(host=istio_server.url, namespace="team-a", existing_token=token)
    run = client.create_run_from_pipeline_package(
        str(TINY), {"message": "m"}, run_name="revoked", experiment_name="mu", namespace="team-a"
    )
    istio_server.revoke_tokens_every(1)
    assert client.get_run(run.run_id).display_name == "revoked"  # revoked after this poll
    with pytest.raises(ApiException) as err:
        client.get_run(run.run_id)
    assert err.value.status == 401
    assert "Review.Status.Authenticated is false" in error_body(err.value)["message"]
    fresh = istio_server.issue_token(SA_USER)
    again = kfp.Client(host=istio_server.url, namespace="team-a", existing_token=fresh)
    assert again.get_run(run.run_id).display_name == "revoked"
    assert istio_server.revocation_stats()["revocations"] >= 1


def test_volume_credentials_and_the_bridge_read_the_same_renewed_token_file(
    istio_server, context_file, tmp_path, monkeypatch
):
    """kfp.Client's ServiceAccountTokenVolumeCredentials and auth=sa_token_file: same default
    path, and both follow the kubelet's rewrite across the old token's expiry."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    from kfp_bridge.hooks import kube_tokens

    assert (kube_tokens.SA_TOKEN_ENV, kube_tokens.DEFAULT_SA_TOKEN_PATH) == (
        KF_PIPELINES_SA_TOKEN_ENV,
        KF_PIPELINES_SA_TOKEN_PATH,
    )
    path = tmp_path / "token"
    monkeypatch.setenv(KF_PIPELINES_SA_TOKEN_ENV, str(path))

    def kubelet_writes(token: str) -> None:
        (tmp_path / "new").write_text(token)
        (tmp_path / "new").replace(path)

    first = istio_server.issue_token(SA_USER)
    kubelet_writes(first)
    sdk = kfp.Client(
        host=istio_server.url,
        namespace="team-a",
        credentials=ServiceAccountTokenVolumeCredentials(),
    )
    bridge = kube_tokens.ServiceAccountTokenFile()
    exp = sdk.create_experiment("volume", namespace="team-a")
    assert bridge() == first

    istio_server.expire_tokens(first)
    second = istio_server.issue_token(SA_USER)
    kubelet_writes(second)
    assert sdk.get_experiment(experiment_id=exp.experiment_id).namespace == "team-a"
    assert bridge() == second
    sent = [r["authorization"] for r in istio_server.requests()]
    assert sent[-1] == f"Bearer {second}" and f"Bearer {first}" in sent


def test_task_details_follow_the_pipeline_dag_and_retry_keeps_succeeded_tasks(client, server):
    """Every pipeline task has driver + DAG + executor nodes; ``:retry`` reruns only ``predict``."""
    server.set_schedule(pending=0, running=1, outcome="FAILED", failed_task="predict")
    params = {"target_date": "2026-12-04", "source_table": "p.d.t", "output_table": "p.d.o"}
    run = client.create_run_from_pipeline_package(str(PRODUCTION), params, run_name="dag")
    failed = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)
    states = {t.display_name: t.state for t in failed.run_details.task_details}
    assert states["features-driver"] == states["features"] == "SUCCEEDED"
    assert states["predict-driver"] == "SUCCEEDED" and states["predict"] == "FAILED"
    pods = {
        t.display_name: [c.pod_name for c in t.child_tasks or []]
        for t in failed.run_details.task_details
    }
    assert (
        len(pods["features"]) == len(pods["predict"]) == 1 and pods["features"] != pods["predict"]
    )

    kfp_server_api.RunServiceApi(client._run_api.api_client).run_service_retry_run(run.run_id)
    final = client.wait_for_run_completion(run.run_id, timeout=30, sleep_duration=0)

    assert final.state == "SUCCEEDED"
    tasks = {t.display_name: t for t in final.run_details.task_details}
    assert [h.state for h in tasks["features"].state_history] == ["RUNNING", "SUCCEEDED"]
    (view,) = server.runs()
    assert view["reruns"] == ["predict"]
    assert view["executions"] == {"features": 1, "predict": 2}


def test_retry_nodes_reach_kfp_client_as_argo_lists_them(server, client):
    """A task with a retry policy: ``executor`` is Argo's retry node, whose children are the
    attempts ``executor(N)``; each node is a task of ``run_details`` (api_converter.go)."""
    server.set_schedule(retry_attempts=2)
    run = client.create_run_from_pipeline_package(str(TINY), arguments={}, run_name="retried")
    for _ in range(10):
        got = client.get_run(run.run_id)
        if got.state == "SUCCEEDED":
            break
    assert got.state == "SUCCEEDED"
    details = got.run_details.task_details
    by_name: dict[str, list] = {}
    for d in details:
        by_name.setdefault(d.display_name, []).append(d)
    [greet] = by_name["greet"]
    [retry_id] = [c.pod_name for c in greet.child_tasks]
    # one retry node per task (greet, shout), each with its two attempts
    retry_nodes = [d for d in by_name["executor"] if len(d.child_tasks or []) == 2]
    assert len(retry_nodes) == 2
    assert len(by_name["executor(0)"]) == len(by_name["executor(1)"]) == 2
    assert all(not d.child_tasks for d in by_name["executor(1)"])  # attempts are pods
    assert all(d.state == "FAILED" for d in by_name["executor(0)"])  # retried by Argo
    workflow = retry_id.rsplit("-", 1)[0]
    assert all(c.pod_name.startswith(f"{workflow}-") for d in retry_nodes for c in d.child_tasks)
