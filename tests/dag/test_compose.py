"""docker-compose.yaml and the Dockerfile cannot be run here (no Docker): check their shape."""

from __future__ import annotations

import json
import re

import yaml

from tests.dag.helpers import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}


def test_services_present():
    assert set(SERVICES) == {"postgres", "airflow-init", *AIRFLOW_SERVICES}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["airflow-init"]["command"] == ["airflow", "db", "migrate"]


def test_airflow_services_build_the_image_and_run_their_component():
    for name, component in AIRFLOW_SERVICES.items():
        service = SERVICES[name]
        assert service["build"] == ".", name
        assert service["command"] == ["airflow", component], name
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:8080/"
        )
        assert env["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "Asia/Tokyo"
        conn = json.loads(env["AIRFLOW_CONN_KFP_DEFAULT"])
        assert conn["conn_type"] == "kfp" and conn["extra"]["backend"] == "local"
        # prediction_app/ sits inside dags/ there: the registry is told where the project is.
        assert env["PREDICTION_PROJECT_ROOT"] == "/opt/airflow"


def test_mounts_match_what_the_dag_reads():
    # The DAG resolves pipelines/ and var/ next to dags/ (PROJECT_ROOT = /opt/airflow).
    expected = {
        "./dags": "/opt/airflow/dags",
        "./prediction_app": "/opt/airflow/dags/prediction_app",
        "./plugins": "/opt/airflow/plugins",
        "./pipelines": "/opt/airflow/pipelines",
        "./workflows": "/opt/airflow/workflows",
        "./var": "/opt/airflow/var",
    }
    for name in AIRFLOW_SERVICES:
        mounts = dict(v.split(":")[:2] for v in SERVICES[name]["volumes"])
        for source, target in expected.items():
            assert mounts.get(source) == target, (name, source)
            assert (REPO / source).is_dir() or source == "./var", source


def test_health_checks_and_start_order():
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    checks = {name: " ".join(SERVICES[name]["healthcheck"]["test"]) for name in AIRFLOW_SERVICES}
    assert "/api/v2/version" in checks["airflow-apiserver"]
    assert ":8974/health" in checks["airflow-scheduler"]
    assert "SCHEDULER__ENABLE_HEALTH_CHECK" in " ".join(
        SERVICES["airflow-scheduler"]["environment"]
    )
    assert "--job-type DagProcessorJob" in checks["airflow-dag-processor"]
    assert "--job-type TriggererJob" in checks["airflow-triggerer"]
    for name in AIRFLOW_SERVICES:
        depends = SERVICES[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert SERVICES["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_builds_both_environments():
    text = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert base.startswith("apache/airflow:3.3.2")
    requirements = (REPO / "requirements.txt").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)", requirements, re.M)
    assert airflow_pin and base.startswith(f"apache/airflow:{airflow_pin.group(1)}")
    assert "-r /tmp/kfp-bridge/requirements.txt" in text
    assert "pip install --no-cache-dir --no-deps /tmp/kfp-bridge" in text
    assert "/opt/airflow/.venv-pipeline" in text and "kfp-pipelines/requirements.txt" in text
    for copied in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), path
