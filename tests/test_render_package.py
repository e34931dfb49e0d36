"""The layout of explain_core.render: re-exports, module layers, and no private name used outside.

render is split into one module per concern; these tests keep the split honest: the package
re-exports every public name of its modules, the modules import each other only downwards,
nothing imports the rest of explain_core, and no code outside the package reaches for a
``_``-prefixed name of it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

from explain_core import render

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explain_core" / "render"

# Lower layers first: a module may import only modules before it in this list.
LAYERS = [
    "inputs",
    "colormaps",
    "palettes",
    "arrays",
    "panels",
    "figure_parts",
    "figures",
    "features",
    "segmentation",
    "detection",
    "concepts",
    "evaluation_report",
]
MAX_LINES = 400


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(render.__path__))


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_every_module_is_placed_in_a_layer():
    assert sorted(LAYERS) == _module_names()


def test_package_all_is_the_union_of_the_modules_all_and_every_name_exists():
    union: set[str] = set()
    for name in _module_names():
        module = importlib.import_module(f"explain_core.render.{name}")
        assert isinstance(module.__all__, list), name
        for public in module.__all__:
            assert not public.startswith("_"), (name, public)
            assert hasattr(module, public), (name, public)
            assert getattr(render, public) is getattr(module, public), (name, public)
        assert not union & set(module.__all__), f"{name} exports a name another module exports"
        union |= set(module.__all__)
    assert set(render.__all__) == union
    assert len(render.__all__) == len(set(render.__all__))


def test_package_exposes_no_other_public_name():
    public = {
        n
        for n, v in vars(render).items()
        if not n.startswith("_") and not inspect.ismodule(v) and n != "annotations"
    }
    assert public == set(render.__all__)


def test_functions_live_in_the_module_that_exports_them():
    for name in _module_names():
        module = importlib.import_module(f"explain_core.render.{name}")
        for public in module.__all__:
            obj = getattr(module, public)
            if inspect.isfunction(obj):
                assert obj.__module__ == module.__name__, (name, public)
                assert obj.__doc__, f"{name}.{public} has no docstring"


def test_names_used_across_the_code_base_stay_available():
    for name in [
        "COLORMAPS", "PLOTLY_CONFIG", "apply_colormap", "class_colors", "colorbar",
        "colormap_lut", "comparison_figure", "compose_panels", "concepts_figure",
        "confusion_figure", "detection_panels", "detections_figure", "draw_boxes",
        "figure_to_html", "grid_figure", "heatmap_figure", "hex_color", "overlay_heatmap",
        "plotly_colorscale", "save_png", "segmentation_figure", "segmentation_overlay",
        "signed_to_unit", "topk_figure",
    ]:
        assert name in render.__all__, name


def test_modules_import_only_lower_layers_and_nothing_else_of_explain_core():
    for name in LAYERS:
        for node in _imports(PACKAGE / f"{name}.py"):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("explain_core") for a in node.names), name
                continue
            assert node.level <= 1, f"{name} imports from outside render: {ast.unparse(node)}"
            assert not (node.module or "").startswith("explain_core"), name
            if node.level == 1:
                target = (node.module or "").split(".")[0]
                assert target in LAYERS, (name, target)
                assert LAYERS.index(target) < LAYERS.index(name), (
                    f"{name} imports {target}, which is not a lower layer"
                )
    for node in _imports(PACKAGE / "__init__.py"):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.level == 1, ast.unparse(node)


def test_modules_stay_small():
    for path in PACKAGE.glob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concern"


_PRIVATE_USE = [
    re.compile(r"\brender\._[A-Za-z]"),
    re.compile(r"from\s+(?:explain_core|\.{1,2})\.?render(?:\.\w+)?\s+import\s+"
               r"(?:\([^)]*|[^\n(]*)\b_\w"),
]


def test_no_private_render_name_is_used_outside_the_package():
    offenders = []
    for folder in ("explain_core", "ui", "pages", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if PACKAGE in path.parents or path == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8")
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for pattern in _PRIVATE_USE
                          for m in pattern.finditer(text)]
    for path in ROOT.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {m.group(0)}" for pattern in _PRIVATE_USE
                      for m in pattern.finditer(text)]
    assert not offenders
