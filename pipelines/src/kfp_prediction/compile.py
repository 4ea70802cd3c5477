"""Compile the pipeline: the KFP/Kubeflow file and a single-document Vertex AI variant.

    python -m kfp_prediction.compile [--output-dir pipelines/compiled] [--image IMAGE]
        [--node-selector cloud.google.com/gke-nodepool=prediction]

``daily_prediction.yaml`` has a second YAML document (the kfp-kubernetes platform spec:
image pull policy, optional node selectors); ``daily_prediction.vertex.yaml`` has none,
because Vertex AI loads templates with ``yaml.safe_load`` and rejects multi-document files.
The checked-in files are compiled with the defaults; a test fails when they are stale.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from kfp import compiler

from kfp_prediction.pipeline import DEFAULT_IMAGE, CompileOptions, build_pipeline

COMPILED_DIR = Path(__file__).resolve().parents[2] / "compiled"
KFP_FILE = "daily_prediction.yaml"
VERTEX_FILE = "daily_prediction.vertex.yaml"


def compile_pipeline(output_dir: str | Path, options: CompileOptions | None = None) -> list[Path]:
    """Write both variants into ``output_dir``; return their paths."""
    options = options or CompileOptions()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, platform in ((KFP_FILE, True), (VERTEX_FILE, False)):
        opts = dataclasses.replace(options, kubernetes_platform=platform)
        path = output_dir / name
        compiler.Compiler().compile(build_pipeline(opts), str(path))
        written.append(path)
    return written


def _selector(value: str) -> tuple[str, str]:
    key, sep, label = value.partition("=")
    if not sep or not key or not label:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(COMPILED_DIR))
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="component image")
    parser.add_argument(
        "--node-selector",
        type=_selector,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kfp-kubernetes node selector (repeatable)",
    )
    args = parser.parse_args(argv)
    options = CompileOptions(image=args.image, node_selector=dict(args.node_selector))
    for path in compile_pipeline(args.output_dir, options):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
