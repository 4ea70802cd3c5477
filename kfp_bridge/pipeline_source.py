"""Where a compiled pipeline file comes from: a local path or a ``gs://`` object.

On Cloud Composer the deploy step puts the compiled pipeline in a bucket, so
``pipeline_file`` may be ``gs://BUCKET/OBJECT``: it is read with the Google
provider's ``GCSHook`` on the task's Google Cloud connection and impersonation
chain (the identity that reaches KFP or Vertex reads the file too). A missing
object or a refused read is a ``PipelineSpecError`` naming the URI, which the
operator turns into a failure without retries: a retry would read the same
nothing. Any other scheme is refused before anything is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from urllib.parse import urlsplit

from kfp_bridge.exceptions import PipelineSpecError
from kfp_bridge.pipeline_spec import CompiledPipeline, load_pipeline, parse_pipeline

GCS_SCHEME = "gs"


def load_compiled_pipeline(
    location: str,
    *,
    gcp_conn_id: str,
    impersonation_chain: str | Sequence[str] | None = None,
) -> CompiledPipeline:
    """The compiled pipeline at ``location`` (a local path or ``gs://``), parsed and checked.

    A pipeline read from GCS has no local ``path`` (backends that run a file, the
    local one, write the parsed documents instead).
    """
    scheme = urlsplit(location).scheme if "://" in location else ""
    if not scheme:
        return load_pipeline(location)
    if scheme != GCS_SCHEME:
        raise PipelineSpecError(
            f"pipeline_file {location!r}: only local paths and gs:// URIs are supported"
        )
    text = read_gcs_object(
        location, gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain
    )
    return dataclasses.replace(parse_pipeline(text, source=location), path=None)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b.yaml`` -> ``("bucket", "a/b.yaml")``; both parts required."""
    parts = urlsplit(uri)
    bucket, name = parts.netloc, parts.path.lstrip("/")
    if parts.scheme != GCS_SCHEME or not bucket or not name or parts.query or parts.fragment:
        raise PipelineSpecError(f"{uri!r} is not a gs://BUCKET/OBJECT URI")
    return bucket, name


def read_gcs_object(
    uri: str, *, gcp_conn_id: str, impersonation_chain: str | Sequence[str] | None = None
) -> str:
    """The text of one GCS object, read once (no retries) through the provider's GCSHook."""
    bucket, name = split_gcs_uri(uri)
    import google.auth.exceptions
    from airflow.sdk.exceptions import AirflowNotFoundException
    from google.api_core import exceptions as gexc

    from kfp_bridge.hooks.google_cloud import BridgeGCSHook

    try:
        hook = BridgeGCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    except AirflowNotFoundException:
        raise PipelineSpecError(
            f"compiled pipeline {uri}: Google Cloud connection {gcp_conn_id!r} is not defined"
        ) from None
    try:
        data = hook.download(bucket_name=bucket, object_name=name, num_max_attempts=1)
    except gexc.NotFound as err:
        raise PipelineSpecError(
            f"compiled pipeline {uri} not found (no such bucket or object): {err.message}"
        ) from None
    except gexc.Forbidden as err:
        raise PipelineSpecError(
            f"compiled pipeline {uri}: reading it was refused (HTTP 403) for "
            f"{_identity(hook)}: {err.message}. Grant storage.objects.get "
            "(roles/storage.objectViewer) on the bucket."
        ) from None
    except google.auth.exceptions.RefreshError as err:
        raise PipelineSpecError(
            f"compiled pipeline {uri}: the Google credentials of {_identity(hook)} could not "
            f"be used: {err}"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PipelineSpecError(f"compiled pipeline {uri} is not UTF-8 text: {err}") from None


def _identity(hook: object) -> str:
    """The connection and, when impersonating, the target (argument or connection field)."""
    chain = getattr(hook, "impersonation_chain", None)
    text = f"Google Cloud connection {getattr(hook, 'gcp_conn_id', '?')!r}"
    if chain:
        text += f" impersonating {chain if isinstance(chain, str) else chain[-1]}"
    return text
