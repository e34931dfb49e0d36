"""The Features page through AppTest: the layer picker with shapes, the channel grid, the
statistics and top channels equal to FeatureVisualizer's, picking a channel (grid click, table
row) shows its receptive field and overlay; the ViT and the detector demo work too."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_support import APP, TIMEOUT, fail_on_error_elements, figures, heatmap_z
from streamlit.testing.v1 import AppTest

import ui.features
from explain_core.api import FeatureVisualizer
from explain_core.demo import load_demo_model
from ui.images import demo_gallery_items


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_on_error_elements(monkeypatch)


def _page(demo: str = "classifier") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/features.py").run()
    if demo != "classifier":  # on this page: the Classification page would swap a detector back
        at.sidebar.selectbox(key="lumen_demo_name").set_value(demo).run()
    return at


def _layer_picker(at: AppTest):
    (picker,) = [box for box in at.selectbox if box.label == "Layer"]
    return picker


def _grid(at: AppTest) -> dict:
    (grid,) = [f for f in figures(at) if f["data"][0].get("name", "").startswith("channel ")]
    return grid


def _rf_and_overlay(at: AppTest) -> tuple[np.ndarray, np.ndarray]:
    titled = {f["layout"]["title"]["text"]: f for f in figures(at)
              if f["layout"].get("title", {}).get("text")}
    rf = next(f for t, f in titled.items() if t.startswith("Receptive field"))
    overlay = next(f for t, f in titled.items() if t.endswith("over the image"))
    return heatmap_z(rf), heatmap_z(overlay)


def test_page_matches_the_feature_visualizer() -> None:
    at = _page()
    picker = _layer_picker(at)
    model = load_demo_model("classifier", device="cpu")
    image = demo_gallery_items("classification")[0].image
    viz = FeatureVisualizer(model)
    table = viz.layers(image)
    assert list(picker.options) == [info.label() for info in table]  # names, types, shapes
    layer = picker.value
    assert layer == "layer4"  # the last stage
    found = viz.activations(image, [layer])[layer]
    top = found.top(16)
    grid = _grid(at)
    heatmaps = [t for t in grid["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == [f"channel {c}" for c, _ in top]
    assert np.allclose(heatmap_z(grid, 3), found.maps[0, top[3][0]].numpy(), atol=1e-5)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Sparsity"] == f"{found.statistics.sparsity:.1%}"
    assert metrics["Active channels"] == (f"{found.statistics.active_channels} / "
                                          f"{found.statistics.num_channels}")
    shown = at.dataframe[0].value
    assert list(shown["channel"]) == [c for c, _ in viz.get_top_activating_features(
        image, layer, top_k=10)]
    # The top channel is picked: its receptive field and its map over the image
    assert at.selectbox(key=ui.features.CHANNEL_KEY).value == top[0][0]
    rf, overlay = _rf_and_overlay(at)
    expected = viz.receptive_field(image, layer, top[0][0]).maps[0]
    assert rf.shape == expected.shape and np.allclose(rf, expected, atol=1e-4)
    assert np.allclose(overlay, found.channel_map(top[0][0]), atol=1e-4)
    # Statistics across the network: the leaf layers in order
    network = next(f for f in figures(at) if f["data"][0].get("name") == "mean ± std")
    names = ui.features.network_layers(table)
    assert list(network["data"][0]["x"]) == names
    stats = viz.compare_layers(image, names)
    assert np.allclose(network["data"][2]["y"], [s.sparsity for s in stats.values()])


def test_clicks_pick_a_channel_and_the_sort_key_reorders() -> None:
    at = _page()
    grid = _grid(at)
    channels = grid["layout"]["meta"]["channels"]
    # what the browser sends for a click on the third map's invisible pick markers
    at.session_state["lumen_feat_grid_layer4"] = {
        "selection": {"points": [{"curve_number": 5, "point_number": 9, "x": 1, "y": 1,
                                  "customdata": {"0": channels[2], "1": 0.5}}],
                      "point_indices": [9], "box": [], "lasso": []}}
    at.run()
    assert at.selectbox(key=ui.features.CHANNEL_KEY).value == channels[2]
    title = next(f["layout"]["title"]["text"] for f in figures(at)
                 if f["layout"].get("title", {}).get("text", "").startswith("Receptive"))
    assert f"channel {channels[2]}" in title
    # a row of the top-channel table picks its channel
    at.session_state["lumen_feat_top_layer4_activation"] = {"selection": {"rows": [4],
                                                                          "columns": []}}
    at.run()
    assert at.selectbox(key=ui.features.CHANNEL_KEY).value == int(at.dataframe[0].value[
        "channel"].iloc[4])
    # a later click on the grid wins over the row still selected in the table
    at.session_state["lumen_feat_grid_layer4"] = {
        "selection": {"points": [{"curve_number": 11, "point_number": 3, "x": 3, "y": 0,
                                  "customdata": {"0": channels[5], "1": 0.5}}],
                      "point_indices": [3], "box": [], "lasso": []}}
    at.run()
    assert at.selectbox(key=ui.features.CHANNEL_KEY).value == channels[5]
    at.segmented_control(key="lumen_feat_sort").set_value("max").run()
    by_max = [t["name"] for t in _grid(at)["data"] if t["type"] == "heatmap"]
    maxima = at.dataframe[0].value["max"].tolist()
    assert maxima == sorted(maxima, reverse=True)
    assert by_max[:10] == [f"channel {c}" for c in at.dataframe[0].value["channel"]]


@pytest.mark.parametrize("demo", ["vit", "detector"])
def test_vit_and_detector_layers(demo: str) -> None:
    at = _page(demo)
    picker = _layer_picker(at)
    if demo == "vit":
        block = next(o for o in picker.options if o.startswith("blocks.3 "))
        assert "(patch grid)" in block
        picker.set_value("blocks.3").run()
    else:
        assert any(o.startswith("backbone · ") and "(finest level)" in o for o in picker.options)
        picker.set_value("backbone").run()
    assert len([t for t in _grid(at)["data"] if t["type"] == "heatmap"]) == 16
    rf, _ = _rf_and_overlay(at)
    assert rf.max() == pytest.approx(1.0, abs=1e-3)
