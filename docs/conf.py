"""Sphinx configuration of the kfp-bridge docs (``make docs``: ``sphinx-build -W``).

Why Sphinx: Airflow's own providers are documented with Sphinx, so the pages look and cross-link
the way Airflow users expect, and autodoc builds the reference pages (operator, hook, trigger,
notifiers, link, connection fields) from the docstrings, so they cannot drift from the code.
MyST lets the prose pages stay Markdown (they came from the README). The docs build in the
project's .venv, which has Airflow and every provider the package imports: no import is mocked.
"""

import kfp_bridge

project = "kfp-bridge"
release = version = kfp_bridge.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build", "_generated"]
html_theme = "alabaster"


def _connection_fields_table() -> str:
    """The ``kfp`` connection form as a table, read from the provider metadata (never retyped)."""
    from kfp_bridge.get_provider_info import get_provider_info

    (conn,) = get_provider_info()["connection-types"]
    behaviour = conn["ui-field-behaviour"]
    rows = [
        (f"``{k}``", f["label"], f["description"], ", ".join(map(str, f["schema"].get("enum", []))))
        for k, f in conn["conn-fields"].items()
    ]
    rows += [
        (f"``{k}``", label, "standard field, relabelled", "")
        for k, label in behaviour["relabeling"].items()
    ]
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - Field",
        "     - Label",
        "     - Meaning",
        "     - Values",
    ]
    for row in rows:
        lines += [f"   * - {row[0]}"] + [f"     - {cell or '(any)'}" for cell in row[1:]]
    hidden = ", ".join(f"``{f}``" for f in behaviour["hidden-fields"])
    return "\n".join(lines) + f"\n\nHidden standard fields: {hidden}.\n"


def _write_generated(app) -> None:
    import pathlib

    out = pathlib.Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    target = out / "connection_fields.rst"
    text = _connection_fields_table()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def setup(app) -> None:
    app.connect("builder-inited", _write_generated)
