"""The KFP API emulator: ``python -m kfp_bridge.testing.kfp_api --port 0``.

Each behaviour it reproduces names the kubeflow/pipelines file it comes from
(see :mod:`kfp_bridge.testing.kfp_api.server`).
"""
