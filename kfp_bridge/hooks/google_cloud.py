"""Google credentials for the bridge, from a Google Cloud connection, as the Google provider does.

The Google provider's ``GoogleBaseHook`` reads a connection of type
``google_cloud_platform`` (key file, key in Secret Manager, credential config for
workload identity federation, or application default credentials when it holds
none of these) and applies an impersonation chain: the ``impersonation_chain``
argument, else the connection's own "Impersonation Chain" field (extra
``impersonation_chain``, comma-separated), so the argument wins. The project is the
connection's ``project`` extra, else the impersonated service account's project,
else the credentials'. Everything the bridge does against Google (the KFP bearer
token on AI Platform Pipelines, Vertex AI, ``gs://`` pipeline files) goes through
the hook built here, so a Cloud Composer user gets the identity the provider's own operators use.

This module imports the provider (about a second), so only the worker and the
triggerer import it, never the DAG file.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowNotFoundException

try:
    from airflow.providers.google.cloud.hooks.gcs import GCSHook
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
except ModuleNotFoundError as exc:  # an optional dependency: say which extra brings it
    raise ModuleNotFoundError(
        "kfp_bridge's Google features (auth=google or iap, gs:// pipeline files, the vertex "
        "backend) need the Google provider, apache-airflow-providers-google: "
        "pip install 'kfp-bridge[google]' (or [vertex]); Cloud Composer has it. "
        f"Import failed: {exc}",
        name=exc.name,
    ) from exc

log = logging.getLogger(__name__)


class _EmptyDefaultConnection:
    """A missing ``google_cloud_default`` reads as an empty Google Cloud connection.

    An empty Google Cloud connection means application default credentials to the
    provider. Cloud Composer defines ``google_cloud_default``; Airflow 3 no longer
    creates default connections, so elsewhere it is usually absent, and the bridge's
    ``auth=google`` (application default credentials) worked without it before. Any
    other missing connection id is an error, as in the provider.
    """

    @classmethod
    def get_connection(cls, conn_id: str) -> Any:
        try:
            return super().get_connection(conn_id)
        except AirflowNotFoundException:
            if conn_id != GoogleBaseHook.default_conn_name:  # google_cloud_default
                raise
        from airflow.sdk import Connection

        log.info(
            "No connection %r: using Google application default credentials, as an empty "
            "Google Cloud connection would",
            conn_id,
        )
        return Connection(conn_id=conn_id, conn_type="google_cloud_platform")


class BridgeGoogleHook(_EmptyDefaultConnection, GoogleBaseHook):
    """The Google provider's base hook (credentials, project, client options)."""


class BridgeGCSHook(_EmptyDefaultConnection, GCSHook):
    """The Google provider's GCS hook, on the same connection rules."""
