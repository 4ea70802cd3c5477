"""Airflow plugin: target-date macros for every DAG.

Templates call them as ``{{ macros.kfp_bridge.target_date(dag_run) }}``
(Airflow exposes a plugin's macros under ``macros.<plugin name>``). The logic lives
in ``kfp_bridge.target_date`` so the DAG, this plugin and the Slack notifier agree.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kfp_bridge.target_date import jst_ds, jst_ds_nodash, local_ds, local_ds_nodash, target_date


class KfpBridgePlugin(AirflowPlugin):
    name = "kfp_bridge"
    macros = [target_date, jst_ds, jst_ds_nodash, local_ds, local_ds_nodash]
