"""Only dropout_demo/ui/ (and app.py) may import streamlit: the engine must run without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dropout_demo"


def non_ui_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "ui" not in p.relative_to(PACKAGE).parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.update(a.value for a in node.args[:1] if isinstance(a, ast.Constant))
    return names


def test_sources_found():
    names = {p.name for p in non_ui_sources()}
    assert {"config.py", "model.py", "charts.py", "insights.py"} <= names


def test_no_source_outside_ui_imports_streamlit():
    offenders = []
    for path in non_ui_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in imported_names(tree):
            if name == "streamlit" or name.startswith("streamlit."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, offenders


def test_the_ast_check_would_catch_an_import():
    assert "streamlit" in imported_names(ast.parse("import streamlit as st"))
    assert "streamlit.runtime" in imported_names(ast.parse("from streamlit.runtime import x"))
    assert "streamlit" in imported_names(ast.parse("def f():\n    import streamlit\n"))


def test_importing_every_non_ui_module_leaves_streamlit_unloaded():
    # __main__ runs the CLI when imported; the AST test above still reads it.
    modules = sorted({module_name(p) for p in non_ui_sources() if p.stem != "__main__"})
    assert "dropout_demo.charts" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit')\n"
        "print('LOADED', len(loaded), loaded[:5])\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED 0" in done.stdout
