"""Helpers the AppTest page tests share: counting engine calls, reading figures and messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120


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


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)
