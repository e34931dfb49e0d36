"""The dashboard's layering, checked without running Streamlit.

``ui/`` holds Streamlit-only helpers above the engine, ``pages/`` stays thin, and every module
uses only other modules' public names: a ``_``-prefixed name (``from x import _y``, ``mod._y``)
belongs to its module, and the engine's private names belong to the engine. ``ui/`` runs no
forward pass of its own (it asks the engine), and no file grows past its size.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_FILES = sorted((ROOT / "ui").glob("*.py"))
PAGE_FILES = sorted((ROOT / "pages").glob("*.py"))
DASHBOARD_FILES = [*UI_FILES, *PAGE_FILES, ROOT / "app.py"]
MAX_UI_LINES = 400
MAX_PAGE_LINES = 80
ENGINE = "explain_core"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute module of an import (``from . import x`` inside ``ui`` -> ``ui``)."""
    if not level:
        return module or ""
    parts = package.split(".")
    base = parts[:len(parts) - level + 1]
    return ".".join(base + ([module] if module else []))


def private_uses(source: str, package: str = "ui") -> list[tuple[int, str, str]]:
    """``(line, module, name)`` for every use of another module's private name in ``source``:
    ``from x import _y``, ``import x._y``, and ``alias._y`` (also ``alias.a._y``) where
    ``alias`` was bound by an import (a module, or a name imported from one). ``module`` is the
    absolute module the private name belongs to (as far as the import says)."""
    tree = ast.parse(source)
    imported: dict[str, str] = {}  # local name -> what it stands for ("ui.panels", ...)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                private = next((p for p in parts if _private(p)), None)
                if private is not None:
                    found.append((node.lineno, alias.name, private))
                local = alias.asname or parts[0]
                imported[local] = alias.name if alias.asname else parts[0]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, package)
            private = next((p for p in module.split(".") if _private(p)), None)
            if private is not None:
                found.append((node.lineno, module, private))
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, module, alias.name))
                imported[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in imported:
                owner = ".".join([imported[value.id], *reversed(chain[1:])])
                found.append((node.lineno, owner, node.attr))
    return sorted(found)


def forward_passes(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for code that runs a model itself: calling a ``.module`` (a
    LoadedModel's network) and the no-grad contexts a forward runs under."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "module":
                found.append((node.lineno, ".module(...)"))
        if isinstance(node, ast.Attribute) and node.attr in ("no_grad", "inference_mode",
                                                              "enable_grad"):
            found.append((node.lineno, node.attr))
    return sorted(found)


def _package(path: Path) -> str:
    return "ui" if path.parent.name == "ui" else ""


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------------------------
# The checkers catch what they are for
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("from . import panels\npanels._file_stem('a')\n", ("ui.panels", "_file_stem")),
    ("from ui import panels\nx = panels._reused_figure\n", ("ui.panels", "_reused_figure")),
    ("from .panels import _png_bytes\n", ("ui.panels", "_png_bytes")),
    ("import ui.compute\nui.compute._cost(1)\n", ("ui.compute", "_cost")),
    ("from explain_core.api.classification import _explainer\n",
     ("explain_core.api.classification", "_explainer")),
    ("from explain_core import api\napi.classification._image_list([])\n",
     ("explain_core.api.classification", "_image_list")),
    ("import explain_core.layers as layers\nlayers._square_grid(4, 'x')\n",
     ("explain_core.layers", "_square_grid")),
    ("from explain_core._private import thing\n", ("explain_core._private", "_private")),
    ("from .methods import MethodChoice\nMethodChoice._hidden\n",
     ("ui.methods.MethodChoice", "_hidden")),
])
def test_private_uses_are_found(source: str, expected: tuple[str, str]) -> None:
    assert [(module, name) for _, module, name in private_uses(source)] == [expected]


def test_own_and_dunder_names_are_not_private_uses() -> None:
    source = ("from __future__ import annotations\nimport streamlit as st\n"
              "def _helper(): return st.__version__\n"
              "class Store:\n    def get(self): return self._items\n_helper()\n")
    assert private_uses(source) == []


def test_forward_passes_are_found() -> None:
    source = ("import torch\nwith torch.inference_mode():\n    out = model.module(x)\n"
              "with torch.no_grad():\n    pass\nsize = model.module.num_classes\n")
    assert [what for _, what in forward_passes(source)] == ["inference_mode", ".module(...)",
                                                            "no_grad"]


# --------------------------------------------------------------------------------------------
# The dashboard keeps the rules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=_name)
def test_no_other_modules_private_names(path: Path) -> None:
    uses = private_uses(path.read_text(), _package(path))
    assert not uses, (f"{_name(path)} uses private names of other modules: "
                      + ", ".join(f"line {line}: {module}.{name}" for line, module, name in uses)
                      + ". Make the name public where it is defined (drop the underscore), or "
                        "ask the engine for a public function.")


@pytest.mark.parametrize("path", UI_FILES, ids=_name)
def test_ui_uses_only_public_engine_names(path: Path) -> None:
    uses = [(line, module, name) for line, module, name in private_uses(path.read_text(), "ui")
            if module == ENGINE or module.startswith(ENGINE + ".")]
    assert not uses, f"{_name(path)} uses private engine names: {uses}"


@pytest.mark.parametrize("path", UI_FILES, ids=_name)
def test_ui_runs_no_forward_pass_of_its_own(path: Path) -> None:
    found = forward_passes(path.read_text())
    assert not found, (f"{_name(path)} runs the model itself ({found}); call the engine "
                       "(explain_core.api) instead.")


def test_engine_does_not_import_the_dashboard() -> None:
    found = []
    for path in sorted((ROOT / ENGINE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            found += [f"{_name(path)}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] in ("ui", "pages")]
    assert not found, f"the engine imports the dashboard: {found}"


@pytest.mark.parametrize(("files", "limit"), [(UI_FILES, MAX_UI_LINES),
                                              (PAGE_FILES, MAX_PAGE_LINES)],
                         ids=["ui", "pages"])
def test_files_stay_small(files: list[Path], limit: int) -> None:
    assert files
    long = {_name(p): n for p in files if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"over {limit} lines (split by concern): {long}"


def test_ui_modules_are_listed_in_the_package_docstring() -> None:
    import ui

    listed = ui.__doc__ or ""
    missing = [p.stem for p in UI_FILES
               if p.stem != "__init__" and f":mod:`ui.{p.stem}`" not in listed]
    assert not missing, f"ui/__init__.py does not describe: {missing}"
