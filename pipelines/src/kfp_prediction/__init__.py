"""Daily batch prediction: features from the warehouse, a pickled model, one row per user.

The logic lives here as plain Python so the KFP components (``kfp_prediction.pipeline``)
stay thin wrappers and the same code runs under ``kfp.local``, on KFP and on Vertex AI.
"""

__version__ = "0.1.0"
