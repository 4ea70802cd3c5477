"""kfp_bridge: an Apache Airflow provider that runs compiled Kubeflow Pipelines.

Backends: a KFP API server (AI Platform Pipelines, Kubeflow), Vertex AI
Pipelines, or ``kfp.local`` in a separate pipeline environment. This package
never imports the ``kfp`` SDK (it cannot be installed beside Airflow's
cncf-kubernetes provider); it reads compiled pipeline YAML as data.
"""

__version__ = "0.2.0"
