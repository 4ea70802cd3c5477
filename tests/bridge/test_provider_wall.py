"""The provider stands on its own: nothing of the prediction application inside ``kfp_bridge``.

Read from the source (``ast``), so the check sees every module, imported or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kfp_bridge"
APPLICATION = ("prediction_app", "kfp_prediction", "dags", "plugins")
# The application's business zone: only DAGs and the application choose a zone.
APPLICATION_ZONE = ("Asia/Tokyo", "JST")
SOURCES = sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".html"))


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", [p for p in SOURCES if p.suffix == ".py"], ids=str)
def test_the_provider_imports_nothing_of_the_application(path):
    imported = _imported(ast.parse(path.read_text(), filename=str(path)))
    leaks = sorted(n for n in imported if n.split(".")[0] in APPLICATION)
    assert not leaks, f"{path.relative_to(PACKAGE.parent)} imports {leaks}"


def test_no_module_of_the_provider_names_the_applications_zone():
    hits = [
        f"{p.relative_to(PACKAGE.parent)}: {word}"
        for p in SOURCES
        for word in APPLICATION_ZONE
        if word in p.read_text()
    ]
    assert not hits, hits


def test_the_wall_check_sees_a_leak(tmp_path):
    """The checker itself: an application import is found."""
    leaky = ast.parse("from prediction_app.target_date import target_date\nimport dags.x\n")
    assert {"prediction_app.target_date", "dags.x"} <= _imported(leaky)
