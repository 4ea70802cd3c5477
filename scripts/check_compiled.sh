#!/usr/bin/env bash
# Fail when the checked-in compiled pipelines differ from what the sources compile to now.
#   scripts/check_compiled.sh [COMPILED_DIR]     (default pipelines/compiled)
# Compiles into a temporary directory with the pipeline environment's interpreter
# (PIPELINE_PY overrides it) and compares file by file, both ways.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
compiled="${1:-$root/pipelines/compiled}"
python="${PIPELINE_PY:-$root/.venv-pipeline/bin/python}"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT

"$python" -m kfp_prediction.compile --output-dir "$fresh" > /dev/null
# the KFP-only variants of the comparison, compiled beside them (benchmarks/kfp_only/)
(cd "$root" && "$python" -m benchmarks.kfp_only.compile --output-dir "$fresh" > /dev/null)
if ! diff -r -q "$fresh" "$compiled"; then
    echo "check_compiled: $compiled is stale; run 'make compile'" \
        "and commit the result" >&2
    exit 1
fi
echo "check_compiled: $compiled is up to date"
