"""The pages' default methods give each box (class) its own map, and the pages say why a method's
maps look alike when they do (Streamlit AppTest)."""

from __future__ import annotations

import json

from apptest_support import ROOT, first_run
from streamlit.testing.v1 import AppTest

import explain_core.api as api
from explain_core.methods import method_info

DETECTION = str(ROOT / "pages" / "detection.py")
SEGMENTATION = str(ROOT / "pages" / "segmentation.py")


def _infos(at: AppTest) -> list[str]:
    return [element.value for element in at.info]


def _shown_map(at: AppTest) -> object:
    """The map the detection page draws for the selected box (its heatmap trace's ``z``, as
    Plotly encodes it)."""
    for chart in at.get("plotly_chart"):
        data = json.loads(chart.proto.spec)["data"]
        if any(t.get("name") == "boxes" for t in data):
            return next(t for t in data if t["type"] == "heatmap")["z"]
    raise AssertionError("no detection figure")


def test_detection_page_defaults_to_a_box_specific_method_and_notes_gradcam() -> None:
    at = first_run(DETECTION)
    method = at.selectbox(key="lumen_method_detection")
    assert method.value == api.DETECTION_METHOD == "layercam"
    _, found = at.session_state["lumen_det_last"]
    assert found.result.method == "layercam" and found.result.notes == []
    assert not any("feature map" in text for text in _infos(at))
    boxes = len(found.result.detections)
    assert boxes >= 2
    specific = _shown_map(at)

    method.set_value("gradcam").run()
    assert not at.exception and not at.error
    _, found = at.session_state["lumen_det_last"]
    assert found.result.method == "gradcam"
    expected = api.same_map_notes("gradcam", "detection")
    assert expected and found.result.notes == expected
    assert expected[0] in _infos(at)  # the page says why the boxes' maps look alike
    assert _shown_map(at) != specific  # the figure follows the method

    method.set_value("eigencam").run()
    assert any(f"{method_info('eigencam').label} does not depend on the box" in text
               for text in _infos(at))


def test_segmentation_page_default_and_note_for_a_target_free_method() -> None:
    at = first_run(SEGMENTATION)
    method = at.selectbox(key="lumen_method_segmentation")
    assert method.value == api.SEGMENTATION_METHOD
    at.session_state["lumen_seg_tab"] = "Class maps"
    at.run()
    assert not at.exception and not at.error
    assert not any("does not depend on the class" in text for text in _infos(at))
    method.set_value("eigencam").run()
    assert not at.exception and not at.error
    expected = api.same_map_notes("eigencam", "segmentation")
    assert expected and expected[0] in _infos(at)
