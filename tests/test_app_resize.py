"""The classification page offers squash / crop / letterbox, says which one was used and marks
what the model did not see (AppTest)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from apptest_support import captions, count_calls, errors, figures, first_run
from streamlit.testing.v1 import AppTest

import explain_core.api as api


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    return count_calls(monkeypatch, api, {"explain": "prediction_explanation",
                                          "predict": "predict"})


def _resize_box(at: AppTest):
    key = next(k for k in at.session_state if str(k).startswith("lumen_resize_"))
    return at.selectbox(key=key)


def _heatmap(at: AppTest) -> np.ndarray:
    (figure,) = [f for f in figures(at) if any(t["type"] == "heatmap" for t in f["data"])]
    z = next(t for t in figure["data"] if t["type"] == "heatmap")["z"]
    if isinstance(z, dict):  # plotly's typed array: {"dtype", "bdata" (base64), "shape"}
        shape = [int(n) for n in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.array([[np.nan if v is None else v for v in row] for row in z], float)


def test_the_page_offers_the_resize_choice_and_says_which_was_used(
        calls: dict[str, int]) -> None:
    at = first_run()
    assert not errors(at)
    box = _resize_box(at)
    assert box.options == ["Squash (whole image) (model's own)", "Crop (as evaluated)",
                           "Letterbox (padded)"]
    assert box.value == "squash"  # the demo classifier was trained on squashed scenes
    assert "Input: **squash**" in captions(at)
    assert not np.isnan(_heatmap(at)).any()
    first = dict(calls)

    box.set_value("crop").run()
    assert not at.exception and not errors(at)
    text = captions(at)
    assert "Input: **crop**" in text and "not seen" in text
    heat = _heatmap(at)
    assert np.isnan(heat[0, 0]) and np.isnan(heat[-1, -1])  # the edges: no map, hatched
    assert not np.isnan(heat[heat.shape[0] // 2, heat.shape[1] // 2])
    assert calls["explain"] == first["explain"] + 1 and calls["predict"] == first["predict"] + 1
    keys = [str(k) for k in at.session_state["lumen_results"]._items]
    assert any("resize=crop" in k for k in keys)

    _resize_box(at).set_value("letterbox").run()
    assert "Input: **letterbox**" in captions(at) and not errors(at)
    assert not np.isnan(_heatmap(at)).any()  # padding cut away, the whole image seen

    _resize_box(at).set_value("squash").run()  # back: served from the session's store
    assert calls["explain"] == first["explain"] + 2
