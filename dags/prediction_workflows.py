"""Every prediction workflow of the registry (``workflows/*.yaml``), one DAG each.

Airflow's dynamic-DAG pattern: one file, one DAG per entry, put into this module's
globals. The entries and the one code path that builds them are the application's
(``prediction_app.registry``, ``prediction_app.workflow_dag``); adding a workflow edits
nothing here. A bad entry is one import error of this file naming its file, workflow and
field; the valid workflows still load. Parsing imports yaml and pydantic, nothing heavy.
"""

from __future__ import annotations

from prediction_app.workflow_dag import register_workflows

register_workflows(globals())
