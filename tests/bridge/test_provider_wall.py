"""The provider stands on its own: nothing of the prediction application inside ``kfp_bridge``.

Read from the source (``ast``), so the check sees every module, imported or not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kfp_bridge"
# The pipeline's own field names: the predict step's result report (``prediction_result``;
# the rest of report.py is the bridge's own report format) and its Metrics (predict_step).
PIPELINE = ROOT / "pipelines/src/kfp_prediction"
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
            # `from pkg import module` imports pkg.module (the graph keeps what exists)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
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


# Words of our deployment and pipeline: its region, its pipeline-side package, its name.
APPLICATION_WORDS = ("asia-northeast1", "kfp_prediction", "prediction pipeline")


def test_no_module_of_the_provider_names_the_applications_region_or_pipeline():
    """Examples and placeholders stay generic (``us-central1``, "a pipeline's step")."""
    hits = [
        (str(p.relative_to(PACKAGE.parent)), word)
        for p in SOURCES
        for word in APPLICATION_WORDS
        if word in p.read_text().lower()
    ]
    assert not hits, hits


def _dict_keys(tree: ast.AST) -> set[str]:
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(k.value for k in node.keys if isinstance(k, ast.Constant))
    return {k for k in keys if isinstance(k, str)}


def application_fields() -> set[str]:
    """The field names the prediction pipeline reports (its result report, its Metrics)."""
    report = ast.parse((PIPELINE / "report.py").read_text())
    [result] = [
        f for f in ast.walk(report)
        if isinstance(f, ast.FunctionDef) and f.name == "prediction_result"
    ]  # fmt: skip
    return _dict_keys(result) | _dict_keys(ast.parse((PIPELINE / "predict_step.py").read_text()))


def _names(tree: ast.AST) -> set[str]:
    """String constants and identifiers a module uses (not comments or method calls)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            found.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
    return found


def _field_hits(path: Path, text: str, fields: set[str]) -> list[str]:
    # a field with an underscore is a name wherever it appears (docstrings too); a plain
    # word ("partition") only as a key, a literal or an identifier, or in a template
    compound = {f for f in fields if "_" in f}
    words = set(re.findall(r"(?<![\w.])\w+(?!\w)", text)) & compound
    if path.suffix == ".py":
        words |= _names(ast.parse(text, filename=str(path))) & fields
    else:
        words |= set(re.findall(r"\w+", text)) & fields
    return sorted(words)


def test_no_module_of_the_provider_names_a_field_of_the_predictions():
    fields = application_fields()
    hits = {
        str(p.relative_to(ROOT)): found
        for p in SOURCES
        if (found := _field_hits(p, p.read_text(), fields))
    }
    assert not hits, f"fields of the prediction pipeline in the provider: {hits}"


def test_the_field_check_knows_the_predictions_fields_and_sees_them():
    fields = application_fields()
    assert {"target_date", "partition", "model_sha256", "rows_written"} <= fields
    leaky = 'ROWS = "rows_written"\ndef f(report):\n    return report["partition"]\n'
    assert _field_hits(Path("x.py"), leaky, fields) == ["partition", "rows_written"]
    prose = '"""Returns the target_date of a run."""\nname.partition(":")\n'
    assert _field_hits(Path("x.py"), prose, fields) == ["target_date"]
    template = "<td>{{ run.partition_file }}</td><th>partition</th>"
    assert _field_hits(Path("x.html"), template, fields) == ["partition"]


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


def test_the_graph_sees_a_module_imported_from_its_package():
    """``from kfp_bridge.backends import kfp_topology`` is an edge to that module, not to
    the package's ``__init__`` (which the cycle check leaves out)."""
    graph = _import_graph()
    assert "kfp_bridge.backends.kfp_topology" in graph["kfp_bridge.backends.kfp_api"]
