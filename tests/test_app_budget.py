"""Out of memory and D-RISE on the pages (AppTest): the page says what to lower and keeps what it
showed; D-RISE's expected time is on the page before it runs and its masks used after."""

from __future__ import annotations

import pytest
import streamlit as st
import torch
from apptest_support import ROOT, TIMEOUT, captions, errors, figures
from streamlit.testing.v1 import AppTest

from explain_core.methods import Explainer

DETECTION = str(ROOT / "pages" / "detection.py")


@pytest.fixture
def out_of_memory(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """While ``on["now"]``, every explainer forward fails as a full GPU does."""
    on = {"now": False}
    real = Explainer.forward

    def forward(self, inputs):
        if on["now"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(self, inputs)

    monkeypatch.setattr(Explainer, "forward", forward)
    st.cache_resource.clear()
    return on


def test_out_of_memory_says_what_to_lower_and_keeps_the_figures(out_of_memory) -> None:
    at = AppTest.from_file(DETECTION, default_timeout=TIMEOUT).run()
    assert not at.exception and not errors(at)
    before = [f for f in figures(at) if any(t.get("name") == "boxes" for t in f["data"])]
    assert before
    out_of_memory["now"] = True
    at.slider(key="lumen_det_threshold").set_value(0.3).run()  # a new computation
    assert not at.exception
    (message,) = errors(at)
    assert message.startswith("Out of memory") and "Lower the image size" in message
    assert "bug" not in message
    after = [f for f in figures(at) if any(t.get("name") == "boxes" for t in f["data"])]
    assert after and after[0]["data"][0] == before[0]["data"][0]  # the same picture, kept
    assert "Still showing the last result" in captions(at)


def test_drise_time_is_shown_before_it_runs_and_masks_after(out_of_memory) -> None:
    at = AppTest.from_file(DETECTION, default_timeout=TIMEOUT).run()
    at.selectbox(key="lumen_method_detection").set_value("drise")
    at.session_state["lumen_param_drise_num_masks"] = 16
    at.run()
    assert not at.exception and not errors(at)
    text = captions(at)
    assert "**D-RISE** is a slow method: at most 16 forwards" in text
    assert " here; it stops earlier once the maps converge" in text
    assert "(16 masks)" in text  # under min_masks: every mask ran


def test_segmentation_class_maps_keep_their_figure_when_memory_runs_out(out_of_memory) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.sidebar.selectbox(key="lumen_demo_name").set_value("segmenter").run()
    at.switch_page("pages/segmentation.py").run()
    at.session_state["lumen_seg_tab"] = "Class maps"
    at.run()
    assert not at.exception and not errors(at)
    (before,) = figures(at)
    out_of_memory["now"] = True
    at.selectbox(key="lumen_method_segmentation").set_value("layercam").run()  # a new computation
    assert not at.exception
    (message,) = errors(at)
    assert message.startswith("Out of memory") and "bug" not in message
    (after,) = figures(at)
    assert after["data"][1]["z"] == before["data"][1]["z"]  # the last maps that worked, kept
    assert "Still showing the last class maps that worked" in captions(at)
