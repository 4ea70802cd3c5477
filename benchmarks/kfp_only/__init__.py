"""The KFP-only way of the comparison (``benchmarks/compare.py``, ``make compare``), kept out
of the product's pipeline package: built from the product's components, run in the pipeline
environment from the repository root (``python -m benchmarks.kfp_only.local``).

- ``pipeline.py``: the two KFP-only variants (run-time placeholders + ExitHandler, and the
  naive compile-time date);
- ``compile.py``: compiles them next to the product's files in ``pipelines/compiled``;
- ``local.py``: runs a compiled variant under ``kfp.local``, the run's time fed explicitly.

The exit task's body is ``pipeline.notify_slack`` itself (self-contained: KFP ships a
lightweight component's function alone); only the JST date of a run time
(``kfp_prediction.dates``), product code the image holds anyway, is imported from the
product package.
"""
