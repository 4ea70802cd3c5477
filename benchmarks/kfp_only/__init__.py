"""The KFP-only way of the comparison (``benchmarks/compare.py``, ``make compare``), kept out
of the product's pipeline package: built from the product's components, run in the pipeline
environment from the repository root (``python -m benchmarks.kfp_only.local``).

- ``pipeline.py``: the two KFP-only variants (run-time placeholders + ExitHandler, and the
  naive compile-time date);
- ``compile.py``: compiles them next to the product's files in ``pipelines/compiled``;
- ``local.py``: runs a compiled variant under ``kfp.local``, the run's time fed explicitly.

The exit task's body (``kfp_prediction.final_status``) and the JST date of a run time
(``kfp_prediction.dates``) stay in the product package: they run inside the component image,
which holds ``kfp_prediction`` only.
"""
