"""Compile the pipeline: the KFP/Kubeflow file and the single-document Vertex AI file.

    python -m kfp_prediction.compile [--output-dir pipelines/compiled] [--image IMAGE]
        [--node-selector [STEP=]KEY=VALUE] [--cpu-request STEP=N] [--cpu-limit STEP=N]
        [--memory-request STEP=SIZE] [--memory-limit STEP=SIZE]

STEP is ``features`` or ``predict``; a node selector without ``STEP=`` applies to both (e.g.
``--node-selector features=cloud.google.com/gke-nodepool=etl --node-selector
predict=cloud.google.com/gke-nodepool=prediction``). ``daily_prediction.yaml`` has a second
YAML document (the kfp-kubernetes platform spec: image pull policy, node selectors);
``daily_prediction.vertex.yaml`` has none, because Vertex AI loads templates with
``yaml.safe_load`` and rejects multi-document files. The checked-in files are compiled with
the defaults; a test fails when they are stale.

The KFP-only variants of the comparison beside them are compiled by
``benchmarks/kfp_only/compile.py`` (not part of this package).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kfp import compiler

from kfp_prediction.components import DEFAULT_IMAGE, CompileOptions, StepOptions
from kfp_prediction.parameters import STEPS
from kfp_prediction.pipeline import build_pipeline

COMPILED_DIR = Path(__file__).resolve().parents[2] / "compiled"
KFP_FILE = "daily_prediction.yaml"
VERTEX_FILE = "daily_prediction.vertex.yaml"
COMPILED_FILES = (KFP_FILE, VERTEX_FILE)
RESOURCE_FLAGS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


def compile_pipeline(
    output_dir: str | Path,
    options: CompileOptions | None = None,
) -> list[Path]:
    """Write every file of ``COMPILED_FILES`` into ``output_dir``; return their paths."""
    options = options or CompileOptions()
    vertex = dataclasses.replace(options, kubernetes_platform=False)
    kfp = dataclasses.replace(options, kubernetes_platform=True)
    return write_compiled(
        {KFP_FILE: build_pipeline(kfp), VERTEX_FILE: build_pipeline(vertex)}, output_dir
    )


def write_compiled(pipelines: Mapping[str, Callable], output_dir: str | Path) -> list[Path]:
    """Compile each pipeline function to its file name under ``output_dir``; the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in pipelines.items():
        path = output_dir / name
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written


def _pair(value: str) -> tuple[str, str]:
    key, sep, label = value.partition("=")
    if not sep or not key or not label:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, label


def _step_value(value: str) -> tuple[str, str]:
    step, label = _pair(value)
    if step not in STEPS:
        raise argparse.ArgumentTypeError(f"expected STEP=VALUE with STEP in {STEPS}, got {value!r}")
    return step, label


def _selector(value: str) -> tuple[tuple[str, ...], tuple[str, str]]:
    """``STEP=KEY=VALUE`` for one step, ``KEY=VALUE`` for every step."""
    head, sep, rest = value.partition("=")
    if head in STEPS and sep:
        return (head,), _pair(rest)
    return STEPS, _pair(value)


def options_from_args(args: argparse.Namespace) -> CompileOptions:
    steps = {}
    for step in STEPS:
        placement = CompileOptions().step(step)
        changes = {
            flag: value
            for flag in RESOURCE_FLAGS
            for name, value in getattr(args, flag)
            if name == step
        }
        selector = {key: label for targets, (key, label) in args.node_selector if step in targets}
        steps[step] = dataclasses.replace(placement, **changes, node_selector=selector)
    return CompileOptions(image=args.image, steps=steps)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(COMPILED_DIR))
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="component image")
    parser.add_argument(
        "--node-selector",
        type=_selector,
        action="append",
        default=[],
        metavar="[STEP=]KEY=VALUE",
        help="kfp-kubernetes node selector of one step, or of both (repeatable)",
    )
    for flag in RESOURCE_FLAGS:
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=_step_value,
            action="append",
            default=[],
            metavar="STEP=VALUE",
            help=f"{flag.replace('_', ' ')} of one step (repeatable)",
        )
    args = parser.parse_args(argv)
    written = compile_pipeline(args.output_dir, options_from_args(args))
    for path in written:
        print(f"wrote {path}")


__all__ = ["CompileOptions", "StepOptions", "compile_pipeline", "main"]

if __name__ == "__main__":
    main()
