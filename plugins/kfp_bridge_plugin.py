"""Airflow plugin: target-date macros for every DAG.

Templates call them as ``{{ macros.kfp_bridge.jst_ds(logical_date) }}`` (Airflow
exposes a plugin's macros under ``macros.<plugin name>``). The logic lives in
``kfp_bridge.target_date`` so the DAG, this plugin and the Slack notifier agree.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kfp_bridge.target_date import jst_ds, jst_ds_nodash, local_ds, local_ds_nodash


class KfpBridgePlugin(AirflowPlugin):
    name = "kfp_bridge"
    macros = [jst_ds, jst_ds_nodash, local_ds, local_ds_nodash]
