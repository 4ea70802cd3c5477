"""Run the compiled pipeline for one target date with ``kfp.local`` (no cluster).

    python -m kfp_prediction.local_run --target-date 2026-11-27 \
        [--warehouse var/warehouse] [--model-uri var/models/demo_model.pkl] \
        [--model-sha256 HEX] [--lookback-days 28] [--pipeline-root var/kfp-local]

One option per root parameter (``parameters.ROOT_PARAMETERS``). Loads
``pipelines/compiled/daily_prediction.yaml`` with ``components.load_component_from_file`` (the
same way the Airflow local backend does) and runs it with ``SubprocessRunner(use_venv=False)``,
i.e. with this interpreter's environment. Without ``--model-sha256`` the digest is read from
``<model>.sha256``. Prints the written partition; exits non-zero when the run fails.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from kfp_prediction.compile import COMPILED_DIR, KFP_FILE
from kfp_prediction.parameters import DEFAULTS, ROOT_PARAMETERS, add_arguments
from kfp_prediction.paths import resolve_local_path


def read_sha256_file(model_uri: str) -> str:
    """The digest from ``<model>.sha256`` (``sha256sum`` format or a bare digest)."""
    return resolve_local_path(f"{model_uri}.sha256").read_text().split()[0]


def run_local(
    target_date: str,
    *,
    pipeline_file: str | Path = COMPILED_DIR / KFP_FILE,
    pipeline_root: str | Path = "var/kfp-local",
    **values: Any,
) -> str:
    """Run the compiled pipeline once with these root parameters; return the partition."""
    values = {**DEFAULTS, **{k: v for k, v in values.items() if v is not None}}
    values["target_date"] = target_date
    return run_compiled(pipeline_file, pipeline_root, values).output


def run_compiled(pipeline_file: str | Path, pipeline_root: str | Path, values: dict[str, Any]):
    """Run a compiled pipeline file with ``kfp.local`` in this interpreter; its task.

    The model digest is read from ``<model>.sha256`` when ``values`` has none. Raises
    ``RuntimeError`` when the run fails (``raise_on_error``).
    """
    from kfp import components, local

    if not values.get("model_sha256"):
        values["model_sha256"] = read_sha256_file(values["model_uri"])
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(resolve_local_path(str(pipeline_root))),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(pipeline_file))
    with warnings.catch_warnings():
        # SubprocessRunner warns about any image name without "python" in it.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Resource requests and kfp-kubernetes settings are for clusters; kfp.local says so.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        return pipeline(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, optional=("model_sha256",))
    parser.add_argument("--pipeline", default=str(COMPILED_DIR / KFP_FILE))
    parser.add_argument("--pipeline-root", default="var/kfp-local")
    args = vars(parser.parse_args(argv))
    values = {p.name: args[p.name] for p in ROOT_PARAMETERS}
    try:
        partition = run_local(
            pipeline_file=args["pipeline"], pipeline_root=args["pipeline_root"], **values
        )
    except RuntimeError as exc:
        print(f"pipeline failed: {exc}", file=sys.stderr)
        return 1
    print(partition)
    return 0


if __name__ == "__main__":
    sys.exit(main())
