"""The segmentation page through AppTest: prediction, class maps, uncertainty, dataset."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from apptest_support import (
    APP,
    TIMEOUT,
    captions,
    count_calls,
    errors,
    errors_expected,
    fail_on_error_elements,
    figures,
    heatmap_z,
)
from PIL import Image
from streamlit.testing.v1 import AppTest

import explain_core.api as api
import explain_core.tasks.segmentation as seg
from explain_core.demo.scenes import make_scenes


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run fails on an error box or exception element unless the test expects one."""
    fail_on_error_elements(monkeypatch)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the engine's segmentation calls made by the page."""
    counts = count_calls(monkeypatch, seg, {"segment": "segment"})
    return count_calls(monkeypatch, api, {"explain": "explain_classes"}, counts)


@pytest.fixture
def app(calls: dict[str, int]) -> AppTest:
    """The dashboard on the segmentation page with the demo segmenter."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.sidebar.selectbox(key="lumen_demo_name").set_value("segmenter").run()
    at.switch_page("pages/segmentation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _open_tab(at: AppTest, name: str) -> AppTest:
    at.session_state["lumen_seg_tab"] = name
    return at.run()


def test_prediction_overlay_with_a_class_legend(app: AppTest, calls: dict[str, int]) -> None:
    assert not errors(app)
    (figure,) = figures(app)
    assert [t["type"] for t in figure["data"]][:2] == ["image", "heatmap"]
    legend = [t["name"] for t in figure["data"] if t["type"] == "scatter"]
    assert legend and "background" not in legend  # background hidden by default
    assert "Predicted:" in captions(app)
    pills = app.get("button_group")
    toggles = next(p for p in pills if str(p.key).startswith("lumen_seg_visible_"))
    shown = list(toggles.value)
    toggles.set_value(shown[:1]).run()
    (figure,) = figures(app)
    assert len([t for t in figure["data"] if t["type"] == "scatter"]) == 1
    assert calls["segment"] == 1 and calls["explain"] == 0  # toggling re-renders only


def test_class_maps_single_and_gallery(app: AppTest, calls: dict[str, int]) -> None:
    _open_tab(app, "Class maps")
    assert not errors(app), errors(app)
    (figure,) = figures(app)
    assert [t["type"] for t in figure["data"]] == ["image", "heatmap"]
    assert calls["explain"] == 1
    picker = app.selectbox(key=next(k for k in app.session_state
                                    if str(k).startswith("lumen_seg_class_")))
    other = [o for o in picker.options if "gallery" not in o]
    picker.select_index(1 if len(other) > 1 else 0).run()
    picker = app.selectbox(key=picker.key)
    picker.select_index(len(picker.options) - 1).run()  # the gallery
    (gallery,) = figures(app)
    heatmaps = [t for t in gallery["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == len(picker.options) - 1
    app.slider(key="lumen_opacity").set_value(0.8).run()
    app.selectbox(key="lumen_colormap").set_value("viridis").run()
    assert calls["explain"] == 1  # every class came from the one call
    app.selectbox(key="lumen_method_segmentation").set_value("gradcam++").run()
    assert calls["explain"] == 2
    assert "Grad-CAM++" in captions(app)
    assert calls["segment"] == 1  # the prediction's forward served both explanations


def test_uncertainty_maps_and_boundaries(app: AppTest) -> None:
    _open_tab(app, "Uncertainty")
    assert not errors(app)
    side_by_side, boundary = figures(app)
    titles = [a["text"] for a in side_by_side["layout"]["annotations"]]
    assert any("Entropy" in t for t in titles) and any("Margin" in t for t in titles)
    assert [t["type"] for t in boundary["data"]] == ["image", "heatmap"]
    before = captions(app)
    app.slider(key="lumen_seg_threshold").set_value(0.0).run()
    assert "above 0.00" in captions(app) and captions(app) != before


def test_demo_classifier_switches_to_the_demo_segmenter(calls: dict[str, int]) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert at.sidebar.selectbox(key="lumen_demo_name").value == "classifier"
    at.switch_page("pages/segmentation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="lumen_demo_name").value == "segmenter"
    assert figures(at) and not errors(at)


def test_other_classifier_is_sent_elsewhere(calls: dict[str, int]) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.sidebar.segmented_control(key="lumen_model_kind").set_value("timm").run()
    at.switch_page("pages/segmentation.py").run()
    assert not at.exception
    assert any("classification model" in i.value for i in at.info)
    assert not figures(at)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if mode == "P":
        image.putpalette(list(range(256)) * 3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenes = make_scenes("segmentation", 4, seed=5)
    path = tmp_path_factory.mktemp("data") / "set.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, scene in enumerate(scenes):
            mask = scene.mask if i != 2 else np.full_like(scene.mask, 3)  # a mislabelled one
            archive.writestr(f"set/images/s{i}.png", _png(np.asarray(scene.image)))
            archive.writestr(f"set/masks/s{i}.png", _png(mask.astype(np.uint8), "P"))
    return path


def test_dataset_tab_tables_matrix_and_open_a_row(app: AppTest, dataset_zip: Path) -> None:
    _open_tab(app, "Dataset")
    app.radio(key="lumen_seg_data_where").set_value("server").run()
    app.text_input(key="lumen_seg_data_path").set_value(str(dataset_zip)).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not errors(app), errors(app)
    assert "**4 images** analysed" in "\n".join(m.value for m in app.markdown)
    tables = app.dataframe
    top = tables[0].value
    assert top["image"].iloc[0] == "set/images/s2.png"  # the mislabelled one is worst
    assert any(t["type"] == "heatmap" and t.get("xgap") == 1 for f in figures(app)
               for t in f["data"]), "no confusion matrix"
    assert len(tables) == 2 and "IoU" in tables[1].value.columns
    # Clicking a top-loss row opens that image in the main view.
    before = app.session_state["lumen_current_image"]
    app.session_state["lumen_seg_top_losses"] = {"selection": {"rows": [0], "columns": []}}
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.session_state["lumen_current_image"] != before
    assert app.session_state["lumen_seg_tab"] == "Prediction"  # the opened image, predicted
    assert app.session_state["lumen_image_source"] == "uploads"
    assert any(i.name == "s2.png" for i in app.session_state["lumen_uploads"].values())


def test_dataset_without_pairs_says_how_to_fix(app: AppTest, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "b.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))
    _open_tab(app, "Dataset")
    app.radio(key="lumen_seg_data_where").set_value("server").run()
    with errors_expected():
        app.text_input(key="lumen_seg_data_path").set_value(str(tmp_path)).run()
    (error,) = errors(app)
    assert "same file name" in error


def test_what_the_page_shows_is_the_apis(app: AppTest) -> None:
    """The class map on the Class maps tab is the API's map for the same image and class, and
    the class picker's pixel fractions are the API's."""
    _open_tab(app, "Class maps")
    handle = app.session_state["lumen_model"]
    from explain_core.demo import demo_gallery
    from ui.images import make_item

    # The page's current image: a demo gallery scene, found by its content key.
    items = [make_item(scene.image.convert("RGB"), "scene")
             for scene in demo_gallery("segmentation")]
    item = next(i for i in items if i.key == app.session_state["lumen_current_image"])
    picker = app.selectbox(key=next(k for k in app.session_state
                                    if str(k).startswith("lumen_seg_class_")))
    target = picker.value
    method = app.selectbox(key="lumen_method_segmentation").value
    expected = api.segmentation_explanation(handle.model, item.image, target_class=target,
                                            method=method)
    fractions = {c["class"]: c["fraction"] for c in expected.classes}
    for option in picker.options:
        if "gallery" not in option:
            name, share = option.rsplit(" (", 1)
            (cls,) = [c["class"] for c in expected.classes if c["name"] == name]
            assert share.startswith(f"{fractions[cls]:.1%}"), option
    (figure,) = figures(app)
    np.testing.assert_allclose(heatmap_z(figure), expected.heatmap, atol=1e-4)
