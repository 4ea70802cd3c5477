"""Fixtures for the DAG, plugin and Slack tests.

Airflow reads AIRFLOW_HOME and the metadata database once per process, and the
bridge tests share this pytest process. So everything that needs Airflow's
configuration or database runs in a subprocess with its own environment (see
helpers.py). The Slack stand-in is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dag.helpers import AirflowEnv, SlackStandIn, airflow_env_vars, slack_stand_in


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("airflow_home")
    env = AirflowEnv(home=home, env=airflow_env_vars(home))
    env.run("db", "migrate")
    env.run("dags", "reserialize")  # the scheduler's copy of dags/ (backfills, task instances)
    return env


@pytest.fixture
def slack_server() -> Iterator[SlackStandIn]:
    with slack_stand_in() as stand_in:
        yield stand_in
