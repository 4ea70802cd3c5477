"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from kfp_bridge import __version__


def _field(label: str, schema_type: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": [schema_type, "null"], **extra},
    }


def _kubernetes_token_fields() -> dict[str, Any]:
    """Form fields of auth=sa_token_file / kubernetes_token_request (hooks/kube_tokens.py).

    No name contains ``token`` or ``service_account``: Airflow masks the values of such
    extras everywhere, and a path or account name must stay readable in errors.
    """
    return {
        "credentials_path": _field(
            "Token file (sa_token_file)",
            "string",
            "Projected token with audience pipelines.kubeflow.org; default "
            "$KF_PIPELINES_SA_TOKEN_PATH or /var/run/secrets/kubeflow/pipelines/token",
        ),
        "kubernetes_conn_id": _field(
            "Kubernetes connection (kubernetes_token_request)",
            "string",
            "cncf-kubernetes connection (kubeconfig) allowed to create serviceaccounts/token",
        ),
        "serviceaccount": _field(
            "Service account (kubernetes_token_request)",
            "string",
            "Whose token is minted, e.g. default-editor",
        ),
        "serviceaccount_namespace": _field(
            "Service account namespace", "string", "Default: the namespace field"
        ),
        "audience": _field("Token audience", "string", "Default pipelines.kubeflow.org"),
        "expiration_seconds": _field(
            "Token lifetime (s)", "integer", "Requested lifetime, at least 600; default 3600"
        ),
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "kfp-bridge",
        "name": "Kubeflow Pipelines bridge",
        "description": "Run compiled Kubeflow Pipelines on a KFP API server, Vertex AI Pipelines "
        "or locally (kfp.local), with reattach on retry and a deferrable wait.",
        "state": "ready",
        "source-date-epoch": 1764201600,
        "versions": [__version__, "0.1.0"],
        "integrations": [
            {
                "integration-name": "Kubeflow Pipelines",
                "external-doc-url": "https://www.kubeflow.org/docs/components/pipelines/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Kubeflow Pipelines",
                "python-modules": ["kfp_bridge.operators.kfp"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Kubeflow Pipelines",
                "python-modules": ["kfp_bridge.hooks.kfp"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Kubeflow Pipelines",
                "python-modules": ["kfp_bridge.triggers.kfp"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "kfp_bridge.hooks.kfp.KubeflowPipelineHook",
                "hook-name": "Kubeflow Pipelines",
                "connection-type": "kfp",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "KFP API endpoint",
                        "login": "Dex user (auth=dex)",
                        "password": "Bearer token (auth=token) or Dex password (auth=dex)",
                    },
                    "placeholders": {
                        "host": "https://xxxx-dot-us-central1.pipelines.googleusercontent.com",
                        "backend": "kfp",
                        "auth": "google",
                    },
                },
                "conn-fields": {
                    "backend": _field(
                        "Backend",
                        "string",
                        "kfp (KFP API server), vertex (Vertex AI Pipelines) or local (kfp.local)",
                        enum=["kfp", "vertex", "local", None],
                    ),
                    "auth": _field(
                        "Authentication",
                        "string",
                        "none, token (the password field), google (the task's Google Cloud "
                        "connection, gcp_conn_id, impersonated when asked), sa_token_file (a "
                        "projected service-account token file, re-read when it changes), "
                        "kubernetes_token_request (a token minted through kubernetes_conn_id), "
                        "dex (Kubeflow's ingress login: login and password) or iap (a Google "
                        "ID token for the IAP client id)",
                        enum=[
                            "none",
                            "token",
                            "google",
                            "sa_token_file",
                            "kubernetes_token_request",
                            "dex",
                            "iap",
                            None,
                        ],
                    ),
                    "iap_client_id": _field(
                        "IAP client id",
                        "string",
                        "auth=iap: the OAuth client id of the IAP-secured Kubeflow "
                        "(...apps.googleusercontent.com), the ID token's audience",
                    ),
                    "dex_connector": _field(
                        "Dex connector",
                        "string",
                        "auth=dex: local (static users, default) or ldap, when Dex offers both",
                        enum=["local", "ldap", None],
                    ),
                    "namespace": _field("Namespace", "string", "Kubeflow profile namespace"),
                    "user": _field(
                        "User (identity header)",
                        "string",
                        "Only for the API server reached without Istio: multi-user Kubeflow's "
                        "Istio refuses the header (RBAC: access denied); use a token there",
                    ),
                    **_kubernetes_token_fields(),
                    "user_header": _field(
                        "Identity header", "string", "Default kubeflow-userid (KFP's USERID_HEADER)"
                    ),
                    "ui_host": _field("UI host", "string", "Base URL for run links, if not host"),
                    "verify_ssl": _field("Verify SSL", "boolean", "Verify TLS certificates"),
                    "request_timeout": _field("Request timeout (s)", "number", "Per API call"),
                    "project_id": _field(
                        "Project ID",
                        "string",
                        "Vertex AI project (default: the Google Cloud connection's)",
                    ),
                    "location": _field("Location", "string", "Vertex AI region"),
                    "api_transport": _field(
                        "Vertex API transport",
                        "string",
                        "grpc (default) or rest (e.g. behind a proxy without HTTP/2)",
                        enum=["grpc", "rest", None],
                    ),
                    "local_state_dir": _field(
                        "Local state directory", "string", "Where local runs keep their state"
                    ),
                    "local_python": _field(
                        "Pipeline interpreter", "string", "Python of the pipeline environment"
                    ),
                },
            }
        ],
        "config": {
            "kfp_bridge": {
                "description": "Settings of the Kubeflow Pipelines bridge.",
                "options": {
                    "default_deferrable": {
                        "description": "Whether KubeflowPipelineRunOperator defers by default "
                        "(waits in the triggerer instead of a worker slot).",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": None,
                        "default": "True",
                    }
                },
            }
        },
        "extra-links": ["kfp_bridge.links.kfp.KubeflowRunLink"],
        "notifications": [
            "kfp_bridge.notifications.slack.KfpSlackNotifier",
            "kfp_bridge.notifications.slack.KfpSlackRunSummaryNotifier",
            "kfp_bridge.notifications.slack.KfpSlackDeadlineNotifier",
        ],
    }
