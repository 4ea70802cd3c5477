# Airflow 3.3 image for the local stack (docker-compose.yaml) and the pattern for Cloud Composer:
# the Airflow side (requirements.txt + the kfp_bridge provider) in Airflow's own environment,
# the pipeline side (pipelines/requirements.txt, the kfp SDK) in a separate virtualenv that the
# local backend runs. The two cannot share one environment: kfp pins kubernetes<31, the
# cncf-kubernetes provider in every Airflow image pins kubernetes>=36.
FROM apache/airflow:3.3.2-python3.11

ENV KFP_BRIDGE_HOME=/opt/airflow

# Airflow side. apache-airflow is pinned in requirements.txt, so pip cannot move it.
COPY --chown=airflow:0 requirements.txt /tmp/kfp-bridge/requirements.txt
RUN pip install --no-cache-dir -r /tmp/kfp-bridge/requirements.txt

COPY --chown=airflow:0 pyproject.toml README.md /tmp/kfp-bridge/
COPY --chown=airflow:0 kfp_bridge /tmp/kfp-bridge/kfp_bridge
RUN pip install --no-cache-dir --no-deps /tmp/kfp-bridge

# Pipeline side: its own interpreter at $KFP_BRIDGE_HOME/.venv-pipeline (the local backend's
# default), with the components' package installed.
COPY --chown=airflow:0 pipelines /tmp/kfp-pipelines
RUN python -m venv /opt/airflow/.venv-pipeline \
    && /opt/airflow/.venv-pipeline/bin/pip install --no-cache-dir \
        -r /tmp/kfp-pipelines/requirements.txt /tmp/kfp-pipelines
