"""``pipeline_file`` as ``gs://``: read with the Google provider's GCS hook, same identity.

The real ``GCSHook`` / google-cloud-storage client makes the calls; Google's token,
IAM and Cloud Storage endpoints are answered and recorded by ``google_fakes``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException

from kfp_bridge.exceptions import PipelineSpecError
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from kfp_bridge.pipeline_source import load_compiled_pipeline, split_gcs_uri
from tests.bridge._helpers import TINY_PIPELINE, TaskInstance, TaskStateStore, task_context
from tests.bridge.google_fakes import google_apis, google_connection, service_account_key

RUNNER = "runner@run-proj.iam.gserviceaccount.com"
URI = "gs://composer-bucket/data/pipelines/tiny pipeline.yaml"
OBJECT = "composer-bucket/data/pipelines/tiny pipeline.yaml"
LOGICAL_DATE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def google_connection_env(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        google_connection(service_account_key("deployer@src-proj.iam.gserviceaccount.com", "p")),
    )


def test_a_gs_pipeline_is_read_as_the_impersonated_identity():
    with google_apis(objects={OBJECT: TINY_PIPELINE.read_bytes()}) as google:
        compiled = load_compiled_pipeline(
            URI, gcp_conn_id="google_cloud_default", impersonation_chain=RUNNER
        )
    assert compiled.path is None  # nothing local to run as-is
    assert {"message", "repeat"} <= set(compiled.parameters)
    [read] = google.of("storage.googleapis.com")
    assert "/b/composer-bucket/o/data%2Fpipelines%2Ftiny%20pipeline.yaml" in read.url
    assert read.authorization.startswith("Bearer impersonated-")
    # (google-cloud-storage refreshes its own copy of the credentials once more)
    iam = google.of("generateAccessToken")
    assert iam and all(f"/serviceAccounts/{RUNNER}:" in c.url for c in iam)


@pytest.mark.parametrize(
    ("forbidden", "message"),
    [
        (False, f"compiled pipeline {URI} not found"),
        (True, f"compiled pipeline {URI}: reading it was refused \\(HTTP 403\\) for Google "
               f"Cloud connection 'google_cloud_default' impersonating {RUNNER}"),
    ],
)  # fmt: skip
def test_a_missing_or_forbidden_object_fails_once_naming_the_uri(forbidden, message):
    with (
        google_apis(forbidden={OBJECT} if forbidden else set()) as google,
        pytest.raises(PipelineSpecError, match=message),
    ):
        load_compiled_pipeline(URI, gcp_conn_id="google_cloud_default", impersonation_chain=RUNNER)
    assert len(google.of("storage.googleapis.com")) == 1  # read once, not retried


def test_the_operator_fails_without_retries_before_submitting(kfp_server, kfp_conn_id):
    op = KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file="gs://composer-bucket/missing.yaml",
        parameters={"message": "x"},
        kfp_conn_id=kfp_conn_id,
        retries=3,
        deferrable=False,
    )
    with (
        google_apis(),
        pytest.raises(AirflowFailException, match=r"gs://composer-bucket/missing\.yaml"),
    ):
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    assert kfp_server.requests() == []


def test_the_operator_submits_a_gs_pipeline(kfp_server, kfp_conn_id):
    op = KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file=URI,
        parameters={"message": "2026-11-27", "repeat": "2"},
        kfp_conn_id=kfp_conn_id,
        impersonation_chain=RUNNER,
        poll_interval=0.01,
        deferrable=False,
    )
    with google_apis(objects={OBJECT: TINY_PIPELINE.read_bytes()}):
        op.execute(task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE))
    [run] = kfp_server.runs()
    assert run["runtime_config"]["parameters"] == {"message": "2026-11-27", "repeat": 2}


@pytest.mark.parametrize(
    "uri", ["gs:///no-bucket.yaml", "gs://bucket-only", "gs://b/x.yaml?generation=1"]
)
def test_malformed_gs_uris_are_refused(uri):
    with pytest.raises(PipelineSpecError, match="is not a gs://BUCKET/OBJECT URI"):
        split_gcs_uri(uri)


def test_other_schemes_are_refused_before_any_read():
    with pytest.raises(PipelineSpecError, match="only local paths and gs:// URIs"):
        load_compiled_pipeline("s3://bucket/p.yaml", gcp_conn_id="google_cloud_default")
