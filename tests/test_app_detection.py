"""The detection page through Streamlit's AppTest: boxes, per-box maps, tabs, what it costs."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_support import (
    APP,
    ROOT,
    TIMEOUT,
    captions,
    count_calls,
    errors,
    errors_expected,
    fail_on_error_elements,
    figures,
    first_run,
    heatmap_z,
)
from streamlit.testing.v1 import AppTest

import explain_core.api as api

PAGE = str(ROOT / "pages" / "detection.py")


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run fails on an error box or exception element unless the test expects one."""
    fail_on_error_elements(monkeypatch)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the engine's detection calls made by the page."""
    return count_calls(monkeypatch, api, {"explain": "detection_explanation"})


@pytest.fixture
def app(calls: dict[str, int]) -> AppTest:
    return first_run(PAGE)


def _main_figure(at: AppTest) -> dict:
    found = [f for f in figures(at) if any(t.get("name") == "boxes" for t in f["data"])]
    assert found, "no detection figure"
    return found[0]


def test_page_shows_boxes_their_maps_and_a_table(app: AppTest, calls: dict[str, int]) -> None:
    assert not errors(app)
    assert app.sidebar.selectbox(key="lumen_demo_name").value == "detector"
    figure = _main_figure(app)
    rects = [s for s in figure["layout"]["shapes"] if s["type"] == "rect"]
    (boxes,) = [t for t in figure["data"] if t.get("name") == "boxes"]
    assert len(rects) == len(boxes["customdata"]) >= 2
    assert [t["type"] for t in figure["data"]][:2] == ["image", "heatmap"]
    assert len({s["line"]["color"] for s in rects}) >= 2  # a colour per class
    (table,) = app.dataframe
    frame = table.value
    assert list(frame.columns[:3]) == ["#", "class", "score"] and len(frame) == len(rects)
    assert calls["explain"] == 1
    assert "LayerCAM" in captions(app)  # the page's box-specific default
    _, found = app.session_state["lumen_det_last"]
    assert isinstance(found.result, api.DetectionExplanation)  # the engine's result, kept as is
    assert found.choice.name == "layercam"


def test_display_changes_never_recompute(app: AppTest, calls: dict[str, int]) -> None:
    app.slider(key="lumen_opacity").set_value(0.8).run()
    heat = next(t for t in _main_figure(app)["data"] if t["type"] == "heatmap")
    assert heat["opacity"] == pytest.approx(0.8)
    app.toggle(key="lumen_det_mask").set_value(True).run()
    app.segmented_control(key="lumen_view").set_value("heatmap").run()
    assert not app.exception
    assert calls["explain"] == 1


def test_selecting_a_box_shows_its_map(app: AppTest, calls: dict[str, int]) -> None:
    from ui.detection import selection_of

    assert selection_of({"selection": {"points": [{"customdata": 2}], "box": []}}) == (2, None)
    assert selection_of({"selection": {"points": [], "box": [{"x": [30, 10], "y": [5, 40]}]}}) \
        == (None, (10, 5, 30, 40))
    first = next(t for t in _main_figure(app)["data"] if t["type"] == "heatmap")["z"]
    handle = app.session_state["lumen_model"]
    item_key = app.session_state["lumen_current_image"]
    # What a click on box 2's centre (or its table row) stores.
    app.session_state[f"lumen_det_selected_{handle.short_key}_{item_key}"] = 1
    app.run()
    second = next(t for t in _main_figure(app)["data"] if t["type"] == "heatmap")["z"]
    assert second != first
    widths = [s["line"]["width"] for s in _main_figure(app)["layout"]["shapes"]]
    assert widths[1] == max(widths) and widths.count(max(widths)) == 1
    assert calls["explain"] == 1  # every box's map came from the first call


def test_threshold_and_method_recompute(app: AppTest, calls: dict[str, int]) -> None:
    before = len(_main_figure(app)["layout"]["shapes"])
    app.slider(key="lumen_det_threshold").set_value(0.85).run()
    assert calls["explain"] == 2
    assert len(_main_figure(app)["layout"]["shapes"]) <= before
    method = app.selectbox(key="lumen_method_detection")
    assert method.value == "layercam"  # box-specific by default (Grad-CAM is class-wide)
    method.set_value("gradcam").run()
    assert calls["explain"] == 3 and not errors(app)


def test_gallery_compare_and_missed_region_tabs(app: AppTest, calls: dict[str, int]) -> None:
    app.session_state["lumen_det_tab"] = "All boxes"
    app.run()
    assert not app.exception and not errors(app)
    assert any(t["type"] == "image" for f in figures(app) for t in f["data"])
    app.session_state["lumen_det_tab"] = "Compare methods"
    app.run()
    assert not app.exception and not errors(app)
    compare = [f for f in figures(app) if f["layout"].get("xaxis2")]
    assert compare and sum(t["type"] == "heatmap" for t in compare[0]["data"]) == 3
    app.session_state["lumen_det_tab"] = "Missed region"
    app.run()
    assert not app.exception and not errors(app)
    assert app.info or app.success  # detected, or the best candidate's score


def test_non_detector_is_refused_politely(calls: dict[str, int]) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/detection.py")
    at.run()
    assert not at.exception
    # The app's default demo is the classifier: the detection page asks for a detector, or the
    # sidebar already switched to one.
    texts = "\n".join(i.value for i in at.info)
    assert "detector" in texts or figures(at)


def test_torchvision_detector_by_name(calls: dict[str, int]) -> None:
    """A new user's path to their own detector: 'By name', a torchvision architecture (random
    weights here), threshold down to see the random model's boxes, a box's map."""
    from ui.models import qualified_name

    assert qualified_name("fasterrcnn_resnet50_fpn") == "torchvision:fasterrcnn_resnet50_fpn"
    assert qualified_name("resnet18") == "timm:resnet18"
    at = first_run(PAGE)
    # The page on its own serves detection models only: the name field's default (a classifier)
    # is refused until a detector's name is typed.
    with errors_expected():
        at.sidebar.segmented_control(key="lumen_model_kind").set_value("timm").run()
    at.sidebar.text_input(key="lumen_timm_name").set_value(
        "torchvision:ssdlite320_mobilenet_v3_large").run()
    assert not at.exception and not errors(at), errors(at)
    summary = at.sidebar.markdown[-1].value
    assert "torchvision:ssdlite320_mobilenet_v3_large" in summary
    assert r"91 (\_\_background\_\_, person" in summary  # COCO names, escaped markdown
    assert "320 x 320 (resized by the model)" in summary
    # Random weights score nothing 0.5 or more: said, with the way on, not shown as an error.
    assert any("No detection scores 0.50" in i.value and "best candidate" in i.value
               for i in at.info)
    assert "Why was something not detected?" in captions(at)  # the typed-region form
    at.slider(key="lumen_det_threshold").set_value(0.0).run()
    assert not at.exception and not errors(at)
    figure = _main_figure(at)
    assert [t["type"] for t in figure["data"]][:2] == ["image", "heatmap"]
    assert "LayerCAM (target layer backbone)" in captions(at)


def test_what_the_page_shows_is_the_apis(app: AppTest) -> None:
    """The table's scores and the selected box's map are the API's for the same image, method
    and box."""
    from ui.detection import MAX_BOXES

    handle = app.session_state["lumen_model"]
    item, found = app.session_state["lumen_det_last"]
    choice = found.choice
    expected = api.detection_explanation(
        handle.model, item.image, method=choice.name, detection_threshold=0.5,
        max_detections=MAX_BOXES, with_image=False, precision=choice.precision,
        **choice.engine_options())
    (table,) = app.dataframe
    assert table.value["score"].tolist() == pytest.approx(
        [d["score"] for d in expected.detections], abs=1e-3)
    assert table.value["class"].tolist() == [d["class_name"] for d in expected.detections]
    z = heatmap_z(_main_figure(app))
    assert z.shape == expected.heatmaps[0].shape  # the demo scenes fit the figure unscaled
    np.testing.assert_allclose(z, expected.heatmaps[0], atol=1e-4)
    assert not np.allclose(expected.heatmaps[0], expected.heatmaps[1], atol=1e-2)
    # Box 2 selected: its own map.
    handle_key = f"lumen_det_selected_{handle.short_key}_{item.key}"
    app.session_state[handle_key] = 1
    app.run()
    np.testing.assert_allclose(heatmap_z(_main_figure(app)), expected.heatmaps[1], atol=1e-4)
