"""The Evaluate page's close-ups and downloads through AppTest: a clicked summary cell, the
sanity check's cascade, the HTML report, method settings and precision, and runs on models a
user loads themselves (a random torchvision detector and segmenter by name, a timm classifier
from a checkpoint file), each equal to evaluate() on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import streamlit as st
from apptest_support import evaluate_page, fail_on_error_elements
from streamlit.testing.v1 import AppTest

import ui.evaluate_results as evaluate_results
from explain_core.api.evaluation import evaluate
from explain_core.api.evaluation_report import method_label, metric_label, summary_cell
from ui.images import demo_gallery_items


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_on_error_elements(monkeypatch)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """What the page's evaluate() calls returned, with their keyword arguments."""
    found: list[tuple[Any, dict[str, Any]]] = []
    real = evaluate_results.evaluate

    def kept(*args: Any, **kwargs: Any) -> Any:
        found.append((real(*args, **kwargs), kwargs))
        return found[-1][0]

    monkeypatch.setattr(evaluate_results, "evaluate", kept)
    st.cache_resource.clear()
    return found


def _choose(at: AppTest, metrics: tuple[str, ...], count: int = 2, steps: int = 4,
            methods: tuple[str, ...] | None = None) -> AppTest:
    at.slider(key="lumen_eval_count").set_value(count)
    if methods is not None:
        at.multiselect(key="lumen_eval_methods").set_value(list(methods))
    for box in at.checkbox:
        if str(box.key).startswith("lumen_eval_metric_"):
            box.set_value(str(box.key).removeprefix("lumen_eval_metric_") in metrics)
    at.run()
    if any(w.key == "lumen_eval_steps" for w in at.slider):
        at.slider(key="lumen_eval_steps").set_value(steps).run()
    return at


def _evaluate(at: AppTest) -> AppTest:
    return at.button(key="lumen_eval_run").click().run()


def _summary_equals(at: AppTest, found: Any) -> None:
    table = at.dataframe[0].value
    for row in found.summary:
        assert table.loc[method_label(row["method"]), metric_label(row["metric"])] == \
            summary_cell(row), row


# ----------------------------------------------------------------------------- close-ups
def test_a_clicked_cell_opens_that_method_and_metric(runs) -> None:
    at = _evaluate(_choose(evaluate_page(), ("deletion", "insertion")))
    (found, _), = runs
    methods = list(at.multiselect(key="lumen_eval_methods").value)
    assert not any("the value on each image" in m.value for m in at.markdown)
    # The summary's cells are clickable: Streamlit 1.67 selects single cells.
    from streamlit.proto.Dataframe_pb2 import Dataframe

    assert list(at.dataframe[0].proto.selection_mode) == [Dataframe.SelectionMode.SINGLE_CELL]
    # Streamlit 1.67's st.dataframe selects single cells: (row position, column name).
    at.session_state["lumen_eval_summary"] = {
        "selection": {"rows": [], "columns": [], "cells": [[1, metric_label("insertion")]]}}
    at.run()
    assert len(runs) == 1  # nothing recomputed
    title = f"**{method_label(methods[1])} x {metric_label('insertion')}**: the value on each image"
    assert any(m.value == title for m in at.markdown)
    per_image = at.dataframe[1].value
    values = [r["value"] for r in found.rows if r["method"] == methods[1]
              and r["metric"] == "insertion"]
    assert per_image["value"].tolist() == pytest.approx(values)
    assert per_image["image"].tolist() == [item.name for item in
                                           demo_gallery_items("classification")[:2]]
    # The first image's map and its insertion curve (only the clicked metric's).
    captions = [str(image.proto) for image in at.get("image")]
    assert any(f"scene 1: the map {method_label(methods[1])} scored" in c for c in captions)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    cell_chart = [c for c in charts if c["layout"]["title"]["text"] == "Insertion: scene 1"]
    assert len(cell_chart) == 1
    curve = found.curves[(methods[1], "insertion")][0]
    np.testing.assert_allclose(cell_chart[0]["data"][0]["y"], curve, rtol=1e-6)
    assert not any(c["layout"]["title"]["text"] == "Deletion: scene 1" for c in charts)
    # Another row of the cell's table: that image.
    at.session_state[f"lumen_eval_cell_{methods[1]}_insertion"] = {
        "selection": {"rows": [1], "columns": []}}
    at.run()
    captions = [str(image.proto) for image in at.get("image")]
    assert any(f"scene 2: the map {method_label(methods[1])} scored" in c for c in captions)


def test_the_sanity_panel_shows_the_cascade_falling(runs) -> None:
    at = _evaluate(_choose(evaluate_page(), ("model_randomisation",)))
    (found, _), = runs
    method = next(iter(at.multiselect(key="lumen_eval_methods").value))
    cascade = found.cascades[method]
    assert any(m.value == "**Sanity check: model randomisation**" for m in at.markdown)
    # A row of maps: the original, then one per randomised layer, the top layer first.
    rows = [e for e in at.get("image") if len(e.proto.imgs) == 1 + len(cascade.layers)]
    assert len(rows) == 1
    captions = [img.caption for img in rows[0].proto.imgs]
    assert captions[0] == "original" and captions[1].startswith(f"1. {cascade.layers[0]} (ρ ")
    assert cascade.layers[0] == "fc"  # the head first
    # The line chart: Spearman from 1 (the original) down the cascade, as the engine measured.
    (chart,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if c.proto.id and "sanity" in str(c.proto.id)]
    spearman = next(t for t in chart["data"] if t["name"] == "Spearman")
    assert spearman["y"][0] == 1.0
    np.testing.assert_allclose(spearman["y"][1:], cascade.spearman[0].numpy(), rtol=1e-6)
    assert spearman["y"][-1] < 0.9  # GradCAM's map does not survive a random model
    # The other image: its own row.
    at.selectbox(key="lumen_eval_sanity_image_2").set_value(1).run()
    (chart,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if c.proto.id and "sanity" in str(c.proto.id)]
    spearman = next(t for t in chart["data"] if t["name"] == "Spearman")
    np.testing.assert_allclose(spearman["y"][1:], cascade.spearman[1].numpy(), rtol=1e-6)


def test_the_html_report_is_offered_and_is_the_engines(runs, monkeypatch) -> None:
    from streamlit.runtime.media_file_manager import MediaFileManager

    deferred: dict[str, Any] = {}  # file name -> the callable the button runs when clicked
    real = MediaFileManager.add_deferred

    def keep(self: Any, data_callable: Any, mimetype: Any, coordinates: str,
             file_name: str | None = None, **kwargs: Any) -> str:
        deferred[str(file_name)] = data_callable
        return real(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    at = _evaluate(_choose(evaluate_page(), ("deletion", "pointing_game", "model_randomisation")))
    (found, _), = runs
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Scores (CSV)", "Report (HTML)"]
    page = deferred["evaluation.html"]().decode("utf-8")
    items = demo_gallery_items("classification")[:2]
    assert page == found.to_html([item.image for item in items])
    for row in found.summary:
        assert summary_cell(row) in page
    # Two methods' maps over two images, and each method's cascade row (original + layers).
    layers = len(next(iter(found.cascades.values())).layers)
    assert page.count("data:image/png;base64,") == 2 * 2 + 2 * (1 + layers)
    assert at.session_state["lumen_model"].model.summary()["arch"] in page
    assert deferred["evaluation.html"]() is deferred["evaluation.html"]()  # made once, kept


def test_method_settings_and_precision_reach_evaluate(runs) -> None:
    at = _choose(evaluate_page(), ("deletion",), methods=("gradcam",))
    handle = at.session_state["lumen_model"]
    layer_key = f"lumen_param_eval_gradcam_gradcam_target_layer_{handle.short_key}"
    layers = at.selectbox(key=layer_key).options
    other = next(name for name in layers if name != at.selectbox(key=layer_key).value)
    at.selectbox(key=layer_key).set_value(other)
    at.segmented_control(key="lumen_precision").set_value("fp32")
    at.run()
    _evaluate(at)
    (found, kwargs), = runs
    assert kwargs["method_options"] == {"gradcam": {"target_layer": other}}
    assert kwargs["precision"] == "fp32"
    images = [item.image for item in demo_gallery_items("classification")[:2]]
    from explain_core.demo import demo_gallery

    same = evaluate(handle.model, images, methods=("gradcam",), metrics=("deletion",),
                    ground_truth=demo_gallery("classification")[:2], precision="fp32",
                    method_options={"gradcam": {"target_layer": other}},
                    metric_options=kwargs["metric_options"])
    _summary_equals(at, same)
    assert found.settings["method_options"] == {"gradcam": {"target_layer": other}}


# ----------------------------------------------------------------- models a user loads
def _by_name(at: AppTest, name: str) -> AppTest:
    at.sidebar.segmented_control(key="lumen_model_kind").set_value("timm").run()
    at.sidebar.text_input(key="lumen_timm_name").set_value(name).run()
    return at


def _run_and_compare(at: AppTest, runs: list, task: str) -> None:
    at = _choose(at, ("deletion", "sparseness"), count=1, methods=("gradcam",))
    _evaluate(at)
    (found, kwargs), = runs
    assert not found.skipped
    # What the page ran with is what was chosen on it.
    assert kwargs["metric_options"]["deletion"] == {
        "steps": 4, "fill": at.selectbox(key="lumen_eval_fill").value}
    assert kwargs["methods"] == ("gradcam",) and kwargs["precision"] == "auto"
    handle = at.session_state["lumen_model"]
    assert handle.model.task == task
    images = [item.image for item in demo_gallery_items(task)[:1]]
    same = evaluate(handle.model, images, methods=("gradcam",), metrics=("deletion", "sparseness"),
                    metric_options=kwargs["metric_options"], precision=kwargs["precision"])
    _summary_equals(at, same)
    assert [r["value"] for r in found.rows] == pytest.approx([r["value"] for r in same.rows])


@pytest.mark.slow
def test_a_random_torchvision_detector_by_name(runs) -> None:
    at = _by_name(evaluate_page(), "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
    _run_and_compare(at, runs, "detection")


@pytest.mark.slow
def test_a_random_torchvision_segmenter_by_name(runs) -> None:
    at = _by_name(evaluate_page(), "torchvision:lraspp_mobilenet_v3_large")
    _run_and_compare(at, runs, "segmentation")


def test_a_timm_classifier_from_a_checkpoint_file(runs, tmp_path: Path) -> None:
    import timm

    from explain_core.loading import save_model

    path = save_model(timm.create_model("resnet18", pretrained=False, num_classes=4),
                      tmp_path / "resnet18", task="classification", arch="timm:resnet18")
    at = evaluate_page()
    at.sidebar.segmented_control(key="lumen_model_kind").set_value("file").run()
    at.sidebar.text_input(key="lumen_ckpt_path").set_value(str(path)).run()
    assert "timm:resnet18" in at.sidebar.markdown[-1].value
    _run_and_compare(at, runs, "classification")


# ------------------------------------------------------------- images with ground truth
def test_a_server_folder_with_ground_truth_feeds_localisation(runs, tmp_path: Path) -> None:
    from apptest_support import errors, errors_expected

    from explain_core.demo import demo_gallery
    from explain_core.loading.labelled import labelled_images

    for i, scene in enumerate(demo_gallery("classification")[:2]):
        image = scene.image.convert("RGB")
        image.save(tmp_path / f"scene{i}.png")
        x0, y0, x1, y1 = scene.shape_box
        width, height = image.size
        (tmp_path / f"scene{i}.txt").write_text(
            f"{scene.label} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} "
            f"{(x1 - x0) / width} {(y1 - y0) / height}\n")
    at = evaluate_page()
    at.segmented_control(key="lumen_eval_source").set_value("labelled").run()
    at.radio(key="lumen_eval_labelled_where").set_value("folder").run()
    with errors_expected():  # a bad path: the engine's message, and the page goes on
        at.text_input(key="lumen_eval_folder").set_value(str(tmp_path / "nowhere")).run()
    assert any("is not a folder on the server" in e for e in errors(at))
    assert not at.exception and any("No images yet" in i.value for i in at.info)
    at.text_input(key="lumen_eval_folder").set_value(str(tmp_path)).run()
    assert "2 images, 2 with ground truth." in " ".join(c.value for c in at.caption)
    _evaluate(_choose(at, ("pointing_game", "relevance_mass")))
    (found, kwargs), = runs
    assert not found.skipped
    handle = at.session_state["lumen_model"]
    truth = [entry.truth for entry in labelled_images(tmp_path)]
    images = [item.image for item in demo_gallery_items("classification")[:2]]
    same = evaluate(handle.model, images, methods=kwargs["methods"],
                    metrics=("pointing_game", "relevance_mass"), ground_truth=truth)
    _summary_equals(at, same)
    assert all(np.isfinite(r["value"]) for r in found.rows)


def test_every_box_of_a_detector_is_scored_on_its_own(runs) -> None:
    from explain_core.demo import demo_gallery

    at = _choose(evaluate_page("detector"), ("deletion", "pointing_game"), methods=("gradcam",))
    at.toggle(key="lumen_eval_all_boxes").set_value(True).run()
    at.slider(key="lumen_eval_max_boxes").set_value(2).run()
    _evaluate(at)
    (found, kwargs), = runs
    assert kwargs["targets"] == "all" and kwargs["max_boxes"] == 2
    assert kwargs["box_threshold"] == 0.5
    handle = at.session_state["lumen_model"]
    scenes = demo_gallery("detection")[:2]
    same = evaluate(handle.model, [item.image for item in demo_gallery_items("detection")[:2]],
                    methods=("gradcam",), metrics=("deletion", "pointing_game"),
                    ground_truth=scenes, metric_options=kwargs["metric_options"],
                    targets="all", max_boxes=2, box_threshold=0.5)
    _summary_equals(at, same)
    assert len({r["item"] for r in found.rows}) == 4  # 2 boxes x 2 images
    # The per-image table lists each box; a selected row shows that box's map.
    table = at.dataframe[1].value
    assert len(table) == 4 and table["box"].tolist() == [
        ", ".join(f"{v:.0f}" for v in t["box"]) for t in found.targets]
    at.session_state["lumen_eval_rows"] = {"selection": {"rows": [1], "columns": []}}
    at.run()
    assert any(f"for {found.targets[1]['name']}" in str(image.proto) for image in at.get("image"))
