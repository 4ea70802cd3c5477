"""The CI glue fails on what it is there to catch.

``scripts/lint_workflows.sh`` (run by ``make lint``) must pass on the real workflows and fail
on a broken or unsafe copy of them; ``scripts/check_compiled.sh`` (run by ``make
check-compiled`` before a deploy) must fail on a stale copy of ``pipelines/compiled``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PIPELINE_PY = ROOT / ".venv-pipeline" / "bin" / "python"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    copy = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: the test needs updating"
    path.write_text(text.replace(old, new, 1))


def test_the_real_workflows_pass() -> None:
    result = run("scripts/lint_workflows.sh", WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


# One breakage per case: (file, text, replacement, what the linters' output names).
BREAKAGES = {
    "a job needing a missing job fails actionlint": (
        "deploy.yml", "needs: [test, compiled, kfp]", "needs: [test, compiled, kfpp]", "kfpp"
    ),
    "an action pinned by tag fails zizmor": (
        "ci.yml",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/checkout@v7",
        "unpinned-uses",
    ),
    "an untrusted expression in a script fails": (
        "ci.yml",
        "run: bash .ci/run",
        'run: echo "${{ github.event.pull_request.title }}" && bash .ci/run',
        "template-injection",
    ),
    "write-all permissions fail zizmor": (
        "ci.yml", "permissions:\n      contents: read", "permissions: write-all",
        "excessive-permissions",
    ),
}  # fmt: skip


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_a_broken_workflow_fails_the_lint(workflows: Path, breakage) -> None:
    name, old, new, named = breakage
    edit(workflows / name, old, new)
    result = run("scripts/lint_workflows.sh", workflows)
    assert result.returncode != 0
    assert named in result.stdout + result.stderr


def test_a_file_that_does_not_parse_fails(workflows: Path) -> None:
    (workflows / "broken.yml").write_text("on: [push\njobs: {}\n")
    result = run("scripts/lint_workflows.sh", workflows)
    assert result.returncode != 0
    assert "broken.yml" in result.stdout + result.stderr


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    result = run("scripts/lint_workflows.sh", tmp_path)
    assert result.returncode != 0
    assert "no workflow files" in result.stderr


def test_compiled_pipelines_up_to_date_and_stale(tmp_path: Path) -> None:
    compiled = tmp_path / "compiled"
    shutil.copytree(ROOT / "pipelines" / "compiled", compiled)
    env_py = f"PIPELINE_PY={PIPELINE_PY}"
    fresh = run("env", env_py, "scripts/check_compiled.sh", compiled)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr

    with (compiled / "daily_prediction.yaml").open("a") as f:
        f.write("# edited by hand\n")
    (compiled / "leftover.yaml").write_text("{}\n")
    stale = run("env", env_py, "scripts/check_compiled.sh", compiled)
    assert stale.returncode == 1
    assert "daily_prediction.yaml differ" in stale.stdout
    assert "leftover.yaml" in stale.stdout
    assert "is stale" in stale.stderr
