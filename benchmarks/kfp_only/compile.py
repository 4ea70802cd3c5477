"""Compile the KFP-only variants of the comparison next to the product's compiled files.

    python -m benchmarks.kfp_only.compile [--output-dir pipelines/compiled]
        [--kfp-only-retry-backoff SECONDS] [--naive-clock fixed|system]

``daily_prediction_kfp_only.yaml`` and ``daily_prediction_kfp_only_naive.yaml`` are the
KFP-only way (``pipeline.py`` here), KFP files with the product's default placement. The
naive one holds the date its pipeline function computed when it was compiled: with
``--naive-clock fixed`` (the default, what the checked-in file uses) that is
``NAIVE_COMPILE_CLOCK``, so a fresh compile on any day reproduces the file;
``--naive-clock system`` reads the real clock, which is the trap itself
(``benchmarks/compare.py`` compiles it so under ``faketime``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from kfp_prediction.compile import COMPILED_DIR, write_compiled
from kfp_prediction.components import CompileOptions

from benchmarks.kfp_only.pipeline import (
    DEFAULT_RETRY_BACKOFF_SECONDS,
    NAIVE_COMPILE_CLOCK,
    build_kfp_only_pipeline,
    build_naive_pipeline,
)

KFP_ONLY_FILE = "daily_prediction_kfp_only.yaml"
NAIVE_FILE = "daily_prediction_kfp_only_naive.yaml"
COMPILED_FILES = (KFP_ONLY_FILE, NAIVE_FILE)
NAIVE_CLOCKS = {"fixed": lambda: NAIVE_COMPILE_CLOCK, "system": dt.datetime.now}


def compile_variants(
    output_dir: str | Path,
    *,
    retry_backoff: int = DEFAULT_RETRY_BACKOFF_SECONDS,
    naive_clock: str = "fixed",
) -> list[Path]:
    """Write both variants into ``output_dir``; return their paths."""
    kfp = dataclasses.replace(CompileOptions(), kubernetes_platform=True)
    pipelines = {
        KFP_ONLY_FILE: build_kfp_only_pipeline(kfp, retry_backoff),
        NAIVE_FILE: build_naive_pipeline(kfp, retry_backoff, NAIVE_CLOCKS[naive_clock]),
    }
    return write_compiled(pipelines, output_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(COMPILED_DIR))
    parser.add_argument(
        "--kfp-only-retry-backoff",
        type=int,
        default=DEFAULT_RETRY_BACKOFF_SECONDS,
        metavar="SECONDS",
        help="first retry delay of the KFP-only variants' steps (set_retry backoff)",
    )
    parser.add_argument(
        "--naive-clock",
        choices=sorted(NAIVE_CLOCKS),
        default="fixed",
        help="clock of the naive variant's compile-time date (fixed: reproducible file)",
    )
    args = parser.parse_args(argv)
    written = compile_variants(
        args.output_dir, retry_backoff=args.kfp_only_retry_backoff, naive_clock=args.naive_clock
    )
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
