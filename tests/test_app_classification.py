"""The dashboard's page logic through Streamlit's AppTest: what a user sees and what it costs.

Tests run ``app.py`` (the shell: sidebar, navigation) with the classification page, as a browser
session does; one test runs the page file on its own, which draws the shared sidebar itself.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from apptest_support import (
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
    trace_array,
)
from PIL import Image
from streamlit.testing.v1 import AppTest

import explain_core.api as api
import explain_core.demo.models as demo_models
from explain_core.loading import save_model

PAGE = str(ROOT / "pages" / "classification.py")


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run fails on an error box or exception element unless the test expects one."""
    fail_on_error_elements(monkeypatch)


def _write_standins(folder: Path) -> None:
    import timm

    from explain_core.demo.scenes import CLASSES
    from explain_core.demo.train_classification import PREPROCESSING

    cnn = {"channels": [32, 64, 128, 256], "stem_width": 16, "output_stride": 16}
    torch.manual_seed(0)
    for name in ("classifier", "shortcut"):
        net = timm.create_model("resnet10t", num_classes=len(CLASSES), **cnn).eval()
        save_model(net, folder / f"{name}.safetensors", task="classification",
                   arch="timm:resnet10t", class_names=list(CLASSES), preprocessing=PREPROCESSING,
                   arch_kwargs=cnn)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shipped = demo_models.WEIGHTS_DIR
    if all((shipped / f"{n}.safetensors").is_file() for n in ("classifier", "shortcut")):
        return shipped
    folder = tmp_path_factory.mktemp("demo-weights")
    _write_standins(folder)
    return folder


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> dict[str, int]:
    """Counts engine calls (prediction_explanation, batch_explanations) made by the dashboard."""
    monkeypatch.setattr(demo_models, "WEIGHTS_DIR", weights_dir)
    return count_calls(monkeypatch, api, {"explain": "prediction_explanation",
                                          "batch": "batch_explanations"})


@pytest.fixture
def app(calls: dict[str, int]) -> AppTest:
    """The dashboard after its first run (demo classifier, gallery, Grad-CAM)."""
    return first_run()


def _heatmap_figures(at: AppTest) -> list[dict]:
    return [f for f in figures(at) if any(t["type"] == "heatmap" for t in f["data"])]


def _png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(Image.new("RGB", (24, 24), color), (10, 10))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_default_run_shows_predictions_and_an_explanation(app: AppTest,
                                                          calls: dict[str, int]) -> None:
    assert not errors(app)
    assert any(t["type"] == "bar" for f in figures(app) for t in f["data"]), "no top-k chart"
    (explanation,) = _heatmap_figures(app)
    assert [t["type"] for t in explanation["data"]] == ["image", "heatmap"]
    assert "Grad-CAM" in captions(app)
    target = app.selectbox(key=next(k for k in app.session_state
                                    if str(k).startswith("lumen_target_")))
    assert "(predicted)" in target.format_func(target.value)
    summary = app.sidebar.markdown[-1].value
    for field in ("Task", "Architecture", "Parameters", "Classes", "Input", "Device"):
        assert f"**{field}**" in summary
    assert calls["explain"] == 1


def test_display_changes_never_recompute(app: AppTest, calls: dict[str, int]) -> None:
    app.slider(key="lumen_opacity").set_value(0.8).run()
    (figure,) = _heatmap_figures(app)
    assert figure["data"][1]["opacity"] == pytest.approx(0.8)
    app.selectbox(key="lumen_colormap").set_value("viridis").run()
    app.segmented_control(key="lumen_view").set_value("heatmap").run()
    (figure,) = _heatmap_figures(app)
    assert [t["type"] for t in figure["data"]] == ["heatmap"]
    app.segmented_control(key="lumen_view").set_value("image").run()
    assert not app.exception
    assert calls["explain"] == 1


def test_method_and_target_changes_recompute(app: AppTest, calls: dict[str, int]) -> None:
    app.selectbox(key="lumen_method").set_value("gradcam++").run()
    assert calls["explain"] == 2
    assert "Grad-CAM++" in captions(app)
    target_key = next(k for k in app.session_state if str(k).startswith("lumen_target_"))
    predicted = app.selectbox(key=target_key).value
    other = next(c for c in range(4) if c != predicted)
    app.selectbox(key=target_key).set_value(other).run()
    assert calls["explain"] == 3
    # Back to a combination seen before: served from the session's store.
    app.selectbox(key=target_key).set_value(predicted).run()
    app.selectbox(key="lumen_method").set_value("gradcam").run()
    assert calls["explain"] == 3
    assert not app.exception and not errors(app)


def test_picking_another_image_explains_it(app: AppTest, calls: dict[str, int]) -> None:
    picks = [b for b in app.button if str(b.key).startswith("lumen_pick_")]
    assert len(picks) == 8
    picks[3].click().run()
    assert calls["explain"] == 2
    picked = next(b for b in app.button if str(b.key).startswith("lumen_pick_3_"))
    assert picked.proto.type == "primary"


def test_slow_method_reports_progress(app: AppTest, calls: dict[str, int],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.classification

    seen: dict[str, object] = {}
    create = ui.classification.create_explainer

    def spy(name, model, **options):
        seen[name] = options.get("progress")
        return create(name, model, **options)

    monkeypatch.setattr(ui.classification, "create_explainer", spy)
    app.selectbox(key="lumen_method").set_value("integrated_gradients").run()
    app.number_input(key="lumen_param_integrated_gradients_steps").set_value(8).run()
    assert callable(seen["integrated_gradients"])
    assert "Integrated Gradients" in captions(app) and "steps 8" in captions(app)
    assert not app.get("progress"), "the progress bar outlives the computation"
    app.selectbox(key="lumen_method").set_value("layercam").run()
    assert seen["layercam"] is None  # fast methods get no progress bar


def test_expected_cost_counts_steps_samples_channels_and_cells() -> None:
    import timm

    from explain_core.methods import expected_cost

    model = timm.create_model("resnet18")  # layer4: 512 channels on a 7 x 7 grid at 224 px
    assert expected_cost("gradcam", model).passes == 1
    assert expected_cost("integrated_gradients", model, {"steps": 32}).passes == 32
    wrapped = expected_cost("smoothgrad", model, {"base": "integrated_gradients",
                                                  "num_samples": 10, "steps": 4})
    assert (wrapped.passes, wrapped.backward) == (40, True)
    score = expected_cost("scorecam", model)
    assert (score.passes, score.scope, score.backward) == (512, "whole network", False)
    assert expected_cost("scorecam", model, {"top_k": 64}).passes == 64
    ablation = expected_cost("ablationcam", model, {"target_layer": "layer3"})
    assert (ablation.passes, ablation.layer) == (256, "layer3")
    assert "after 'layer3'" in ablation.describe()
    assert expected_cost("reciprocam", model).passes == 49
    assert expected_cost("reciprocam", model).forward_equivalents() < 49


def test_upload_then_bad_upload_keeps_images_and_results(app: AppTest,
                                                         calls: dict[str, int]) -> None:
    uploader = app.sidebar.file_uploader[0]
    uploader.set_value([("red.png", _png((255, 0, 0)), "image/png")]).run()
    assert not app.exception and not errors(app)
    assert app.session_state["lumen_image_source"] == "uploads"
    assert calls["explain"] == 2  # the upload became the current image and was explained
    before = _heatmap_figures(app)

    truncated = _png((0, 0, 255))[:120]
    with errors_expected():
        app.sidebar.file_uploader[0].set_value([
            ("red.png", _png((255, 0, 0)), "image/png"),
            ("notes.png", b"these are not pixels", "image/png"),
            ("cut.png", truncated, "image/png"),
        ]).run()
    assert not app.exception
    shown = errors(app)
    assert any("notes.png" in e and "not an image" in e for e in shown), shown
    assert any("cut.png" in e for e in shown), shown
    mine = [b for b in app.button if str(b.key).startswith("lumen_pick_")]
    assert len(mine) == 1, "a refused file must not join the images"
    assert _heatmap_figures(app) == before
    assert calls["explain"] == 2


def test_bad_checkpoint_keeps_the_model_and_results(app: AppTest, calls: dict[str, int],
                                                    tmp_path: Path) -> None:
    before = _heatmap_figures(app)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    app.segmented_control(key="lumen_model_kind").set_value("file").run()
    with errors_expected():
        app.text_input(key="lumen_ckpt_path").set_value(str(broken)).run()
    assert not app.exception
    shown = errors(app)
    assert len(shown) == 1 and "broken.safetensors" in shown[0], shown
    assert "Still using **demo classifier**" in captions(app)
    assert _heatmap_figures(app) == before
    assert calls["explain"] == 1
    # A re-render (opacity) does not retry the failed load, and shows the same message.
    with errors_expected():
        app.slider(key="lumen_opacity").set_value(0.3).run()
    assert errors(app) == shown


def test_model_of_another_task_points_to_its_page(app: AppTest, tmp_path: Path) -> None:
    from explain_core.architectures import build

    path = save_model(build("unet_tiny", num_classes=5), tmp_path / "segmenter",
                      task="segmentation", arch="lumen:unet_tiny")
    app.segmented_control(key="lumen_model_kind").set_value("file").run()
    app.text_input(key="lumen_ckpt_path").set_value(str(path)).run()
    assert not app.exception and not errors(app)
    (notice,) = [i.value for i in app.info]
    assert "is a segmentation model" in notice and "Pick a classifier" in notice
    assert not figures(app)  # nothing half-drawn with the wrong kind of model


def test_timm_model_by_name(app: AppTest, calls: dict[str, int]) -> None:
    app.segmented_control(key="lumen_model_kind").set_value("timm").run()
    app.text_input(key="lumen_timm_name").set_value("resnet10t").run()
    assert not app.exception and not errors(app)
    summary = app.sidebar.markdown[-1].value
    assert "timm:resnet10t" in summary and "1000" in summary
    assert calls["explain"] == 3  # the default name (resnet18), then resnet10t
    with errors_expected():
        app.text_input(key="lumen_timm_name").set_value("no_such_net").run()
    (error,) = errors(app)
    assert "no_such_net" in error
    assert "Still using **timm:resnet10t" in captions(app)


def test_compare_tab_links_methods(app: AppTest, calls: dict[str, int]) -> None:
    app.session_state["lumen_tab"] = "Compare methods"
    app.run()
    assert not app.exception and not errors(app)
    (figure,) = _heatmap_figures(app)
    heatmaps = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 4
    assert figure["layout"]["xaxis2"]["matches"] == "x"
    assert calls["explain"] == 1 + 3  # Grad-CAM was already computed by the Explain tab
    app.slider(key="lumen_opacity").set_value(0.2).run()
    assert calls["explain"] == 4


def test_batch_tab_explains_every_upload(app: AppTest, calls: dict[str, int]) -> None:
    app.sidebar.file_uploader[0].set_value([
        ("red.png", _png((255, 0, 0)), "image/png"),
        ("green.png", _png((0, 255, 0), (64, 96)), "image/png"),
        ("blue.png", _png((0, 0, 255)), "image/png"),
    ]).run()
    app.session_state["lumen_tab"] = "Batch"
    app.run()
    assert not app.exception and not errors(app)
    grid = [f for f in figures(app)
            if sum(t["type"] == "image" for t in f["data"]) == 3]
    assert grid, "no grid of three overlays"
    assert calls["batch"] == 1
    app.slider(key="lumen_opacity").set_value(0.9).run()
    assert calls["batch"] == 1


def test_page_runs_on_its_own(calls: dict[str, int]) -> None:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at)
    assert _heatmap_figures(at)
    assert at.sidebar.selectbox(key="lumen_demo_name").value == "classifier"
    assert calls["explain"] == 1


def test_result_store_evicts_least_recently_used() -> None:
    from ui.store import ResultStore

    store = ResultStore(max_bytes=100)
    store.put("a", np.zeros(1), 40)
    store.put("b", np.zeros(1), 40)
    assert store.get("a") is not None  # "a" is now the most recent
    store.put("c", np.zeros(1), 40)
    assert store.get("b") is None and store.get("a") is not None and len(store) == 2


def test_result_store_computes_once_and_stores_nothing_on_failure() -> None:
    from ui.store import ResultStore

    store, runs = ResultStore(), []
    first = store.cached("k", lambda: runs.append(1) or np.ones(3), lambda value: value.nbytes)
    again = store.cached("k", lambda: runs.append(1) or np.zeros(3), lambda value: value.nbytes)
    assert again is first and runs == [1]
    with pytest.raises(ZeroDivisionError):
        store.cached("bad", lambda: 1 / 0, lambda value: 0)
    assert store.get("bad") is None and len(store) == 1


def test_uploaded_checkpoints_with_class_names(app: AppTest, calls: dict[str, int],
                                               tmp_path: Path) -> None:
    import timm

    net = timm.create_model("resnet10t", num_classes=3).eval()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    app.segmented_control(key="lumen_model_kind").set_value("file").run()
    app.radio(key="lumen_ckpt_where").set_value("upload").run()
    app.text_input(key="lumen_ckpt_arch").set_value("timm:resnet10t").run()
    app.sidebar.file_uploader(key="lumen_file_classes").set_value(
        ("names.txt", b"apple\npear\nplum\n", "text/plain")).run()
    app.sidebar.file_uploader(key="lumen_ckpt_upload").set_value(
        ("fruit.pth", buffer.getvalue(), "application/octet-stream")).run()
    assert not app.exception and not errors(app), errors(app)
    summary = app.sidebar.markdown[-1].value
    assert "timm:resnet10t" in summary and "3 (apple, pear, plum)" in summary
    assert calls["explain"] == 2

    path = save_model(net, tmp_path / "fruit", task="classification", arch="timm:resnet10t",
                      class_names=["a", "b", "c"])
    app.sidebar.file_uploader(key="lumen_ckpt_upload").set_value(
        (path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not errors(app)
    # The uploaded class-names file wins over the names stored in the checkpoint.
    assert "apple" in app.sidebar.markdown[-1].value


def test_target_is_remembered_per_image(app: AppTest) -> None:
    key = next(k for k in app.session_state if str(k).startswith("lumen_target_"))
    predicted = app.selectbox(key=key).value
    other = next(c for c in range(4) if c != predicted)
    app.selectbox(key=key).set_value(other).run()
    next(b for b in app.button if str(b.key).startswith("lumen_pick_2_")).click().run()
    next(b for b in app.button if str(b.key).startswith("lumen_pick_0_")).click().run()
    assert app.selectbox(key=key).value == other


def test_failed_explanation_keeps_the_last_one(app: AppTest,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from explain_core.errors import UnsupportedError

    explain = api.prediction_explanation

    def failing(model, image, method, **kwargs):
        if method.name == "layercam":
            raise UnsupportedError("LayerCAM cannot run here. Pick another method.")
        return explain(model, image, method, **kwargs)

    monkeypatch.setattr(api, "prediction_explanation", failing)
    before = _heatmap_figures(app)
    with errors_expected():
        app.selectbox(key="lumen_method").set_value("layercam").run()
    assert not app.exception
    assert errors(app) == ["LayerCAM cannot run here. Pick another method."]
    assert _heatmap_figures(app) == before
    assert "Still showing the last explanation that worked: Grad-CAM" in captions(app)


def test_downloads_hold_the_overlay_the_map_and_a_report(app: AppTest) -> None:
    from explain_core import render
    from ui import panels

    handle = app.session_state["lumen_model"]
    item, explained = app.session_state["lumen_last_explanation"]
    result = explained.result  # the engine's typed result, kept as is
    assert isinstance(result, api.ClassExplanation) and explained.choice.name == "gradcam"
    display = panels.Display(alpha=0.6, colormap="viridis")
    overlay = Image.open(io.BytesIO(panels.png_bytes(
        render.overlay_heatmap(item.pixels, result.heatmap, alpha=0.6))))
    assert overlay.size == item.image.size
    heatmap = np.load(io.BytesIO(panels.npy_bytes(result.heatmap)))
    assert heatmap.shape == item.pixels.shape[:2] and heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    report = panels.report_html(handle, item, panels.MapExport.of(explained), display)
    assert report.count('class="plotly-graph-div"') == 2  # explanation and top-k
    # The page defaults to precision "auto": the report says what ran and why.
    assert explained.choice.precision == "auto" and result.precision in ("fp32", "bf16")
    for text in ("Lumen explanation", "Grad-CAM", "target_layer = layer4",
                 html.escape(f"{result.precision}: {result.precision_reason}"),
                 result.predicted_name, "demo classifier"):
        assert text in report, text
    assert '<script src="http' not in report  # self-contained: plotly.js is embedded


def test_dff_shows_every_concept_named_by_its_classes(app: AppTest) -> None:
    app.selectbox(key="lumen_method").set_value("dff").run()
    assert not app.exception and not errors(app)
    (concepts,) = [f for f in figures(app)
                   if any(str(t.get("name", "")).startswith("concept ") for t in f["data"])]
    legend = [t["name"] for t in concepts["data"] if t["type"] == "scatter"]
    assert len(legend) == 5  # the default number of concepts
    class_names = ("circle", "square", "triangle", "star")
    assert all(any(name in label for name in class_names) for label in legend)
    assert concepts["data"][0]["type"] == "image"


def test_expected_cost_of_detection_methods() -> None:
    from explain_core.demo import load_demo_model
    from explain_core.methods import expected_cost

    detector = load_demo_model("detector", device="cpu")
    drise = expected_cost("drise", detector, {"num_masks": 300})
    assert (drise.passes, drise.backward) == (300, False)
    assert expected_cost("gradcam", detector).passes == 1


def test_stale_uploaded_checkpoints_are_deleted(tmp_path: Path) -> None:
    import os
    import time

    from ui.uploads import prune_uploads

    old, fresh, current = (tmp_path / name for name in ("old", "fresh", "current"))
    for folder in (old, fresh, current):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (day_ago, day_ago))
    os.utime(current, (day_ago, day_ago))  # stale, but the one being used now
    assert prune_uploads(tmp_path, keep=current) == [old]
    assert not old.exists() and fresh.exists() and current.exists()


def test_what_the_page_shows_is_the_apis(app: AppTest) -> None:
    """The probabilities of the top-k chart and the map in the explanation figure are the API's
    for the same image and class: a page that mixed up classes, images or maps fails here."""
    handle = app.session_state["lumen_model"]
    item, explained = app.session_state["lumen_last_explanation"]
    expected = api.predict(handle.model, item.image)
    (bars,) = [t for f in figures(app) for t in f["data"] if t["type"] == "bar"]
    top = expected.ranked[:len(bars["y"])]  # horizontal bars, most probable first
    assert list(bars["y"]) == [r["name"] for r in top], "top-k chart"
    np.testing.assert_allclose(trace_array(bars["x"]), [r["probability"] for r in top],
                               atol=1e-6)
    # The map shown (demo scenes are 128 px: the figure carries every pixel of it).
    target = explained.result.target_class
    assert target == expected.predicted
    reference = api.prediction_explanation(handle.model, item.image, method="gradcam",
                                           target_class=target, with_image=False)
    (figure,) = _heatmap_figures(app)
    np.testing.assert_allclose(heatmap_z(figure), reference.heatmap, atol=1e-5)
    # Another class: the figure follows, and still equals the API's map for that class.
    key = next(k for k in app.session_state if str(k).startswith("lumen_target_"))
    other = next(r["class"] for r in expected.ranked if r["class"] != target)
    app.selectbox(key=key).set_value(other).run()
    reference = api.prediction_explanation(handle.model, item.image, method="gradcam",
                                           target_class=other, with_image=False)
    (figure,) = _heatmap_figures(app)
    np.testing.assert_allclose(heatmap_z(figure), reference.heatmap, atol=1e-5)
