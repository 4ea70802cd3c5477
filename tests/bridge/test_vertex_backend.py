"""VertexBackend: request building, job ids and state mapping, without the network.

Vertex AI cannot be reached from the test machine, so these tests hand the
backend a recording stand-in for the GAPIC ``PipelineServiceClient`` — the one
place a test double is used. It stores real ``aiplatform_v1`` messages and
raises real ``google.api_core`` exceptions, so everything on the bridge's side
of that boundary (ids, request messages, state and error mapping, reattach
and re-run decisions) runs for real. The backend was not run against Vertex.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from google.api_core import exceptions as gexc
from google.cloud import aiplatform_v1
from google.protobuf import timestamp_pb2

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.vertex import (
    MAX_JOB_ID_LENGTH,
    VertexBackend,
    job_id_for,
    map_state,
)
from kfp_bridge.exceptions import (
    AuthError,
    BackendError,
    PipelineSpecError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.failures import parse_failure

TINY = Path(__file__).parent / "fixtures" / "tiny_pipeline.yaml"
PS = aiplatform_v1.PipelineState
VERTEX_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")


class RecordingPipelineServiceClient:
    """Answers the four PipelineServiceClient calls the backend makes, from memory."""

    def __init__(self) -> None:
        self.jobs: dict[str, aiplatform_v1.PipelineJob] = {}
        self.calls: list[tuple[str, object]] = []
        self.fail_next: list[Exception] = []
        self.clock = 1_700_000_000

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def create_pipeline_job(self, request, timeout=None):
        self.calls.append(("create", request))
        self._maybe_fail()
        name = f"{request.parent}/pipelineJobs/{request.pipeline_job_id}"
        if name in self.jobs:
            raise gexc.AlreadyExists(f"PipelineJob {name} already exists")
        job = aiplatform_v1.PipelineJob(request.pipeline_job)
        job.name = name
        job.state = PS.PIPELINE_STATE_PENDING
        self.clock += 1
        job.create_time = timestamp_pb2.Timestamp(seconds=self.clock)
        self.jobs[name] = job
        return job

    def get_pipeline_job(self, name, timeout=None):
        self.calls.append(("get", name))
        self._maybe_fail()
        if name not in self.jobs:
            raise gexc.NotFound(f"PipelineJob {name} not found")
        return self.jobs[name]

    def list_pipeline_jobs(self, request, timeout=None):
        self.calls.append(("list", request))
        self._maybe_fail()
        wanted = re.fullmatch(r'display_name="(.*)"', request.filter).group(1)
        jobs = [j for j in self.jobs.values() if j.display_name == wanted]
        return sorted(jobs, key=lambda j: j.create_time, reverse=True)

    def cancel_pipeline_job(self, name, timeout=None):
        self.calls.append(("cancel", name))
        self._maybe_fail()
        job = self.get_pipeline_job(name)
        if job.state not in (
            PS.PIPELINE_STATE_PENDING,
            PS.PIPELINE_STATE_RUNNING,
            PS.PIPELINE_STATE_QUEUED,
            PS.PIPELINE_STATE_PAUSED,
        ):
            raise gexc.FailedPrecondition(f"Cannot cancel {name} in state {job.state.name}")
        job.state = PS.PIPELINE_STATE_CANCELLING


@pytest.fixture(scope="module")
def tiny_spec() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture
def gapic() -> RecordingPipelineServiceClient:
    return RecordingPipelineServiceClient()


@pytest.fixture
def backend(gapic) -> VertexBackend:
    return VertexBackend("my-proj", "asia-northeast1", client=gapic)


def request_for(
    spec: dict, name: str = "daily_prediction__predict__2026-11-26T21:00:00+00:00", **kw
) -> RunRequest:
    return RunRequest(display_name=name, pipeline_spec=spec, **kw)


# -- job ids ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "daily_prediction__predict__2026-11-26T21:00:00+00:00",
        "2026 starts with a digit",
        "___",
        "Ünïcödé ラン",
        "x" * 300,
    ],
)
def test_job_ids_follow_vertex_rules_and_are_deterministic(name):
    job_id = job_id_for(name)
    assert VERTEX_ID.match(job_id)
    assert len(job_id) <= MAX_JOB_ID_LENGTH
    assert job_id == job_id_for(name)
    assert VERTEX_ID.match(job_id_for(name, attempt=12))
    assert len(job_id_for(name, attempt=12)) <= MAX_JOB_ID_LENGTH


def test_job_ids_stay_unique_after_sanitising():
    names = ["a__b", "a--b", "A B", "a.b", "a_b"]
    ids = {job_id_for(n) for n in names}
    assert len(ids) == len(names)
    assert job_id_for("a__b").startswith("a-b-")


def test_rerun_ids_are_numbered():
    first = job_id_for("run")
    assert job_id_for("run", 2) == f"{first}-r2"
    assert job_id_for("run", 3) == f"{first}-r3"


# -- state mapping ------------------------------------------------------------------------
def test_every_pipeline_state_maps():
    expected = {
        PS.PIPELINE_STATE_UNSPECIFIED: RunState.RUNTIME_STATE_UNSPECIFIED,
        PS.PIPELINE_STATE_QUEUED: RunState.PENDING,
        PS.PIPELINE_STATE_PENDING: RunState.PENDING,
        PS.PIPELINE_STATE_RUNNING: RunState.RUNNING,
        PS.PIPELINE_STATE_SUCCEEDED: RunState.SUCCEEDED,
        PS.PIPELINE_STATE_FAILED: RunState.FAILED,
        PS.PIPELINE_STATE_CANCELLING: RunState.CANCELING,
        PS.PIPELINE_STATE_CANCELLED: RunState.CANCELED,
        PS.PIPELINE_STATE_PAUSED: RunState.PAUSED,
    }
    assert {s: map_state(s) for s in PS} == expected
    assert not map_state(PS.PIPELINE_STATE_PAUSED).is_success
    assert not map_state(PS.PIPELINE_STATE_PAUSED).is_terminal
    assert map_state(PS.PIPELINE_STATE_CANCELLED).is_terminal
    assert map_state("PIPELINE_STATE_RUNNING") is RunState.RUNNING
    assert map_state(int(PS.PIPELINE_STATE_FAILED)) is RunState.FAILED


# -- request building ---------------------------------------------------------------------
def test_create_request_carries_everything(backend, tiny_spec):
    create = backend.build_create_request(
        request_for(
            tiny_spec,
            parameters={"message": "hi", "repeat": 2, "tags": ["a"], "fail": False},
            pipeline_root="gs://bucket/root",
            service_account="runner@my-proj.iam.gserviceaccount.com",
            experiment="Daily Prediction",
            labels={"Team": "Reco"},
        )
    )

    assert isinstance(create, aiplatform_v1.CreatePipelineJobRequest)
    assert create.parent == "projects/my-proj/locations/asia-northeast1"
    assert create.pipeline_job_id == job_id_for(
        "daily_prediction__predict__2026-11-26T21:00:00+00:00"
    )
    job = create.pipeline_job
    assert job.display_name == "daily_prediction__predict__2026-11-26T21:00:00+00:00"
    assert aiplatform_v1.PipelineJob.to_dict(job)["pipeline_spec"] == tiny_spec
    values = aiplatform_v1.PipelineJob.RuntimeConfig.to_dict(job.runtime_config)
    assert values["parameter_values"] == {
        "message": "hi",
        "repeat": 2,
        "tags": ["a"],
        "fail": False,
    }
    assert job.runtime_config.gcs_output_directory == "gs://bucket/root"
    assert job.service_account == "runner@my-proj.iam.gserviceaccount.com"
    assert dict(job.labels) == {"team": "reco", "experiment": "daily-prediction"}


def test_caching_choice_reaches_every_task(backend, tiny_spec):
    job = backend.build_pipeline_job(request_for(tiny_spec, enable_caching=False))
    spec = aiplatform_v1.PipelineJob.to_dict(job)["pipeline_spec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert {t["cachingOptions"]["enableCache"] for t in tasks.values()} == {False}


def test_platform_spec_is_refused_with_a_pointer_to_the_vertex_variant(backend, gapic, tiny_spec):
    request = request_for(tiny_spec, platform_spec={"platforms": {"kubernetes": {}}})
    with pytest.raises(PipelineSpecError, match="Vertex variant"):
        backend.submit(request)
    assert gapic.calls == []


def test_uploaded_pipeline_reference_is_refused(backend, tiny_spec):
    with pytest.raises(BackendError, match="KFP API server"):
        backend.build_pipeline_job(request_for(tiny_spec, pipeline_id="p"))


def test_list_request_filters_on_the_exact_display_name(backend):
    req = backend.list_request('a "quoted" name')
    assert req.parent == "projects/my-proj/locations/asia-northeast1"
    assert req.filter == 'display_name="a \\"quoted\\" name"'
    assert req.order_by == "create_time desc"


# -- submit / reattach / re-run -----------------------------------------------------------
def test_submit_twice_returns_the_same_job(backend, gapic, tiny_spec):
    first = backend.submit(request_for(tiny_spec))
    second = backend.submit(request_for(tiny_spec))

    assert first.run_id == second.run_id == job_id_for(first.display_name)
    assert first.state is RunState.PENDING
    assert [c for c, _ in gapic.calls].count("create") == 1
    assert first.url == (
        "https://console.cloud.google.com/vertex-ai/locations/asia-northeast1/pipelines/runs/"
        f"{first.run_id}?project=my-proj"
    )


@pytest.mark.parametrize("ended", [PS.PIPELINE_STATE_FAILED, PS.PIPELINE_STATE_CANCELLED])
def test_rerun_after_failed_or_canceled_gets_a_numbered_id(backend, gapic, tiny_spec, ended):
    first = backend.submit(request_for(tiny_spec))
    gapic.jobs[backend.job_name(first.run_id)].state = ended

    second = backend.submit(request_for(tiny_spec))

    assert second.run_id == f"{first.run_id}-r2"
    found = backend.find_runs(first.display_name)
    assert [s.run_id for s in found] == [second.run_id, first.run_id]
    assert [s.state for s in found] == [RunState.PENDING, map_state(ended)]


def test_create_race_returns_the_job_the_other_worker_made(backend, gapic, tiny_spec):
    job_name = backend.job_name(job_id_for("racy"))
    original_get = gapic.get_pipeline_job
    seen = []

    def get_then_lose_the_race(name, timeout=None):
        if not seen:  # first lookup: not there yet; another worker creates it meanwhile
            seen.append(name)
            gapic.create_pipeline_job(
                aiplatform_v1.CreatePipelineJobRequest(
                    parent=backend.parent,
                    pipeline_job_id=job_id_for("racy"),
                    pipeline_job=aiplatform_v1.PipelineJob(display_name="racy"),
                )
            )
            raise gexc.NotFound("not yet")
        return original_get(name, timeout)

    gapic.get_pipeline_job = get_then_lose_the_race
    status = backend.submit(request_for(tiny_spec, name="racy"))
    assert status.run_id == job_id_for("racy")
    assert list(gapic.jobs) == [job_name]


def test_a_job_with_other_parameters_is_not_returned_but_run_under_the_next_id(
    backend, gapic, tiny_spec
):
    """The operator set yesterday's SUCCEEDED job aside (other parameters): a new job runs.

    Numbers come back from Vertex as floats (``google.protobuf.Value``), also inside
    lists and structs: those are still the same parameters, so the job is reused.
    """
    params = {"message": "2026-01-01", "repeat": 3, "tags": [1, 2], "options": {"k": [1]}}
    old = backend.submit(request_for(tiny_spec, parameters=params))
    gapic.jobs[backend.job_name(old.run_id)].state = PS.PIPELINE_STATE_SUCCEEDED

    same = backend.submit(request_for(tiny_spec, parameters=params))
    assert (same.run_id, same.state) == (old.run_id, RunState.SUCCEEDED)

    today = {**params, "message": "2026-01-02"}
    new = backend.submit(request_for(tiny_spec, parameters=today))
    assert new.run_id == f"{old.run_id}-r2" and new.state is RunState.PENDING
    assert new.parameters["message"] == "2026-01-02"
    again = backend.submit(request_for(tiny_spec, parameters=today))
    assert again.run_id == new.run_id
    assert [c for c, _ in gapic.calls].count("create") == 2


def test_ids_used_up_by_ended_or_other_jobs_refuse_with_both_reasons(
    backend, gapic, tiny_spec, monkeypatch
):
    monkeypatch.setattr("kfp_bridge.backends.vertex.MAX_ATTEMPTS", 2)
    first = backend.submit(request_for(tiny_spec, parameters={"message": "a"}))
    gapic.jobs[backend.job_name(first.run_id)].state = PS.PIPELINE_STATE_FAILED
    second = backend.submit(request_for(tiny_spec, parameters={"message": "b"}))
    assert second.run_id == f"{first.run_id}-r2"
    with pytest.raises(BackendError, match="FAILED/CANCELED or ran with other parameters"):
        backend.submit(request_for(tiny_spec, parameters={"message": "c"}))


def test_create_race_with_a_job_of_other_parameters_moves_on(backend, gapic, tiny_spec):
    original_get = gapic.get_pipeline_job
    seen = []

    def get_then_lose_the_race(name, timeout=None):
        if not seen:  # another worker creates the id meanwhile, for other parameters
            seen.append(name)
            gapic.create_pipeline_job(
                aiplatform_v1.CreatePipelineJobRequest(
                    parent=backend.parent,
                    pipeline_job_id=job_id_for("racy"),
                    pipeline_job=aiplatform_v1.PipelineJob(
                        display_name="racy",
                        runtime_config={"parameter_values": {"message": "other"}},
                    ),
                )
            )
            raise gexc.NotFound("not yet")
        return original_get(name, timeout)

    gapic.get_pipeline_job = get_then_lose_the_race
    status = backend.submit(request_for(tiny_spec, name="racy", parameters={"message": "ours"}))
    assert status.run_id == job_id_for("racy", 2)
    assert status.parameters == {"message": "ours"}


def test_failed_job_reports_its_error(backend, gapic, tiny_spec):
    run_id = backend.submit(request_for(tiny_spec)).run_id
    job = gapic.jobs[backend.job_name(run_id)]
    job.state = PS.PIPELINE_STATE_FAILED
    job.error = {"code": 9, "message": "The DAG failed because some tasks failed."}

    status = backend.get_run(run_id)
    assert status.state is RunState.FAILED
    assert status.error == "The DAG failed because some tasks failed."


def test_failed_tasks_add_their_errors_and_the_exit_status_tells_permanent(
    backend, gapic, tiny_spec
):
    run_id = backend.submit(request_for(tiny_spec)).run_id
    job = gapic.jobs[backend.job_name(run_id)]
    job.state = PS.PIPELINE_STATE_FAILED
    job.error = {"code": 9, "message": "The DAG failed because some tasks failed."}
    task = aiplatform_v1.PipelineTaskDetail(
        task_name="predict-and-write", state=aiplatform_v1.PipelineTaskDetail.State.FAILED
    )
    task.error.message = (
        "The replica workerpool0-0 exited with a non-zero status of 65. Termination reason: Error."
    )
    job.job_detail.task_details.append(task)
    job.job_detail.task_details.append(
        aiplatform_v1.PipelineTaskDetail(
            task_name="exit-handler", state=aiplatform_v1.PipelineTaskDetail.State.SUCCEEDED
        )
    )

    status = backend.get_run(run_id)
    assert status.failure is not None and status.failure.permanent  # data, parsed once here
    error = status.error
    assert error.splitlines() == [
        "The DAG failed because some tasks failed.",
        "task predict-and-write: The replica workerpool0-0 exited with a non-zero status of 65. "
        "Termination reason: Error.",
    ]
    assert parse_failure(error).permanent


# -- cancel -------------------------------------------------------------------------------
def test_cancel_running_then_finished(backend, gapic, tiny_spec):
    run_id = backend.submit(request_for(tiny_spec)).run_id
    backend.cancel(run_id)
    assert backend.get_run(run_id).state is RunState.CANCELING
    gapic.jobs[backend.job_name(run_id)].state = PS.PIPELINE_STATE_CANCELLED
    backend.cancel(run_id)  # FailedPrecondition: already ended, no error
    with pytest.raises(RunNotFoundError):
        backend.cancel("unknown-job")


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (gexc.ServiceUnavailable("down"), TransientBackendError),
        (gexc.InternalServerError("oops"), TransientBackendError),
        (gexc.DeadlineExceeded("slow"), TransientBackendError),
        (gexc.TooManyRequests("quota"), TransientBackendError),
        (gexc.Unauthenticated("who"), AuthError),
        (gexc.PermissionDenied("no"), AuthError),
        (gexc.InvalidArgument("bad spec"), BackendError),
    ],
)
def test_errors_map(backend, gapic, tiny_spec, exc, error):
    run_id = backend.submit(request_for(tiny_spec)).run_id
    gapic.fail_next.append(exc)
    with pytest.raises(error) as raised:
        backend.get_run(run_id)
    if error is BackendError:
        assert not isinstance(raised.value, (AuthError, RunNotFoundError))
    assert backend.get_run(run_id).run_id == run_id


def test_missing_job_is_not_found(backend):
    with pytest.raises(RunNotFoundError):
        backend.get_run("gone")


def test_constructor_needs_project_and_location():
    with pytest.raises(ValueError, match="project_id"):
        VertexBackend("", "asia-northeast1", client=object())
    with pytest.raises(ValueError, match="location"):
        VertexBackend("p", "", client=object())


def test_check_lists_jobs_with_the_credentials(backend, gapic):
    assert backend.check() == (
        "Vertex AI Pipelines reachable in projects/my-proj/locations/asia-northeast1"
    )
    assert [call for call, _ in gapic.calls] == ["list"]
    gapic.fail_next.append(gexc.PermissionDenied("caller lacks aiplatform.pipelineJobs.list"))
    with pytest.raises(AuthError, match="Vertex AI User"):
        backend.check()
