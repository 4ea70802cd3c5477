"""Test tools for users of kfp-bridge: a KFP API emulator for their own CI, and the pytest
plugin (``pytest_plugin``: the ``kfp_api`` fixture) that starts it for a test.

Standard library, ``kfp_server_api`` and PyYAML only (no Airflow import), so the
same emulator serves the Airflow side and a pipeline environment with the kfp SDK.
"""
