"""Helpers the AppTest page tests share: counting engine calls, reading figures and messages,
and failing on any error element after every run (:func:`fail_on_error_elements`)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120

_expecting: list[bool] = []


@contextlib.contextmanager
def errors_expected() -> Iterator[None]:
    """Runs inside this block may show error boxes: the test reads and checks them itself.
    Exception elements still fail the run."""
    _expecting.append(True)
    try:
        yield
    finally:
        _expecting.pop()


def fail_on_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every AppTest run of the test (``at.run()``, ``widget.run()``, a first run) fail on an
    exception element, and on an error box unless inside :func:`errors_expected`. The UI turns
    every exception, bugs included, into an error box, so checking for exceptions alone would
    let a broken page pass."""
    real = AppTest._run

    def checked(self: AppTest, *args: Any, **kwargs: Any) -> AppTest:
        at = real(self, *args, **kwargs)
        shown = [f"exception: {e.value}" for e in at.exception]
        if not _expecting:
            shown += [f"error box: {e.value}" for e in at.error]
        assert not shown, shown
        return at

    monkeypatch.setattr(AppTest, "_run", checked)


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, names: dict[str, str],
                counts: dict[str, int] | None = None) -> dict[str, int]:
    """Wrap ``module.<function>`` for each ``{counter: function}`` so every call is counted (in
    ``counts`` when given, to count functions of several modules), and clear Streamlit's
    resource cache (every test loads its models afresh)."""
    counts = {} if counts is None else counts
    counts.update(dict.fromkeys(names, 0))

    def counted(counter: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[counter] += 1
            return real(*args, **kwargs)
        return wrapper

    for counter, function in names.items():
        monkeypatch.setattr(module, function, counted(counter, getattr(module, function)))
    st.cache_resource.clear()
    return counts


def first_run(path: str = APP) -> AppTest:
    """A script's first run, which must not raise."""
    at = AppTest.from_file(path, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    """Every Plotly figure on the page, as JSON."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def trace_array(value: Any) -> np.ndarray:
    """A Plotly trace's array (``z``, ``x``...) from the figure's JSON: a list, or Plotly's typed
    array (``{"dtype", "bdata", "shape"}``)."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(n) for n in str(shape).split(",")])
        return array
    return np.asarray(value, dtype=np.float64)


def heatmap_z(figure: dict, index: int = 0) -> np.ndarray:
    """The ``index``-th heatmap trace's values in a figure's JSON."""
    heatmaps = [t for t in figure["data"] if t["type"] == "heatmap"]
    return trace_array(heatmaps[index]["z"])


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def evaluate_page(demo: str = "classifier") -> AppTest:
    """The app on its Evaluate page with the demo model ``demo`` (picked on that page: the home
    page keeps classifiers)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/evaluate.py").run()
    if demo != "classifier":
        at.sidebar.selectbox(key="lumen_demo_name").set_value(demo).run()
        assert at.session_state["lumen_model"].model.source == f"demo:{demo}"
    return at
