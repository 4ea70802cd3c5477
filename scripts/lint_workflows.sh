#!/usr/bin/env bash
# Lint GitHub Actions workflows: actionlint (syntax, expressions, action inputs, needs) and
# zizmor (security: pinning, permissions, injection, credentials), both offline.
#   scripts/lint_workflows.sh [WORKFLOW_DIR]     (default .github/workflows)
# Exits non-zero when either tool finds anything. The tools come from requirements-dev.txt;
# ACTIONLINT / ZIZMOR override their paths.
set -euo pipefail

dir="${1:-.github/workflows}"
bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
actionlint="${ACTIONLINT:-$bin/actionlint}"
zizmor="${ZIZMOR:-$bin/zizmor}"

shopt -s nullglob
files=("$dir"/*.yml "$dir"/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
    echo "lint_workflows: no workflow files in $dir" >&2
    exit 1
fi

status=0
# shellcheck/pyflakes integrations off: results must not depend on what else is installed.
"$actionlint" -shellcheck= -pyflakes= "${files[@]}" || status=1
# --offline: no GitHub API calls (online audits off); --strict-collection: a file that does
# not parse fails instead of being skipped with a warning.
"$zizmor" --offline --strict-collection --no-progress --color=never "${files[@]}" || status=1
if [ $status -ne 0 ]; then
    echo "lint_workflows: $dir has problems (see above)" >&2
fi
exit $status
