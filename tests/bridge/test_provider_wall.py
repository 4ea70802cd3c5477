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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazy imports inside functions included)."""
    modules = {_module_name(p): p for p in SOURCES if p.suffix == ".py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported(ast.parse(path.read_text(), filename=str(path))):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # `from pkg.mod import name`
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_provider_has_no_import_cycle():
    graph = _import_graph()
    assert "kfp_bridge.operators.kfp" in graph  # the graph is really read
    # package __init__ files only re-export; a cycle through them is not a design cycle
    inner = {
        k: {t for t in v if not PACKAGE.joinpath(*t.split(".")[1:], "__init__.py").exists()}
        for k, v in graph.items()
    }
    assert _cycles(inner) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
