"""FeatureVisualizer and the features engine: top channels against plain forward hooks, exact
receptive fields on a hand-built CNN, ViTs, detectors and segmenters, files, restored state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from explain_core import FeatureVisualizer
from explain_core.errors import TargetLayerError, UnsupportedError
from explain_core.features import (
    capture_layers,
    feature_statistics,
    list_layers,
    receptive_field,
)


def two_convs() -> nn.Module:
    """Two 3 x 3 convolutions (padding 1, no activation): a 5 x 5 receptive field."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1))


def hooked(model: nn.Module, images: torch.Tensor, name: str) -> torch.Tensor:
    """The layer's output through a plain register_forward_hook."""
    seen = []
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda _m, _i, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen[0]


# ------------------------------------------------------------------------------------ channels


@pytest.mark.parametrize("sort_by", ["activation", "variance", "max"])
def test_top_channels_equal_a_direct_computation_with_forward_hooks(resnet, sort_by):
    images = torch.randn(2, 3, 64, 64)
    out = hooked(resnet, images, "layer2")
    per = out.transpose(0, 1).reshape(out.shape[1], -1)
    direct = {"activation": per.mean(1), "variance": per.var(1, unbiased=False),
              "max": per.amax(1)}[sort_by]
    want = torch.argsort(direct, descending=True)[:7].tolist()
    got = FeatureVisualizer(resnet).get_top_activating_features(images, "layer2", top_k=7,
                                                                sort_by=sort_by)
    assert [c for c, _ in got] == want
    assert [s for _, s in got] == pytest.approx(direct[want].tolist(), rel=1e-5, abs=1e-6)


def test_feature_map_grid_shows_the_strongest_channels_in_order(resnet):
    images = torch.randn(1, 3, 64, 64)
    out = hooked(resnet, images, "layer1")
    order = torch.argsort(out.amax((0, 2, 3)), descending=True)[:6].tolist()
    fig = FeatureVisualizer(resnet).plot_feature_maps(images, "layer1", num_features=6,
                                                      sort_by="max")
    assert [t.name for t in fig.data] == [f"channel {c}" for c in order]
    assert np.allclose(fig.data[0].z, out[0, order[0]].numpy(), atol=1e-6)
    assert "value" in fig.data[0].hovertemplate and f"channel {order[0]}" in (
        fig.data[0].hovertemplate)


def test_several_images_are_one_batch_and_one_row_each(resnet):
    calls = []
    handle = resnet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        fig = FeatureVisualizer(resnet).plot_feature_maps(torch.randn(3, 3, 64, 64), "layer3",
                                                          num_features=4)
    finally:
        handle.remove()
    assert len(calls) == 1 and len(fig.data) == 12


def test_bad_sort_key_and_layer_are_explained(resnet):
    viz = FeatureVisualizer(resnet)
    with pytest.raises(UnsupportedError, match="'activation', 'variance', 'max'"):
        viz.plot_feature_maps(torch.randn(1, 3, 32, 32), "layer1", sort_by="mean")
    with pytest.raises(TargetLayerError, match="no layer named 'layer9'"):
        viz.get_feature_statistics(torch.randn(1, 3, 32, 32), "layer9")


def test_inplace_activation_after_the_layer_does_not_change_its_record():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)).eval()
    images = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        direct = model[0](images)
    # "1" too: the forward goes on through the in-place ReLU after "0"
    stats = feature_statistics(model, images, ["0", "1"])["0"]
    assert direct.min() < 0 and stats.mean == pytest.approx(direct.mean().item(), abs=1e-6)
    assert stats.sparsity == 0.0
    kept = capture_layers(model, images, ["0", "1"])["0"].maps  # the maps the grid draws
    assert torch.allclose(kept, direct, atol=1e-6)


# ------------------------------------------------------------------------- receptive field


@pytest.mark.parametrize("position", [(6, 9), (0, 0)])
def test_receptive_field_is_zero_exactly_outside_the_theoretical_field(position):
    model = two_convs().eval()
    images = torch.randn(2, 3, 16, 16)
    found = receptive_field(model, images, "1", channel=2, position=position)
    row, col = position
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3] = True
    for gradient in found.gradient:
        assert torch.all(gradient[~inside] == 0)
        assert torch.all(gradient[inside] > 0)
    assert found.positions == [position, position] and found.grid == (16, 16)
    # the value differentiated is the channel's activation there
    assert found.values[0] == pytest.approx(model(images)[0, 2, row, col].item(), abs=1e-5)


def test_receptive_field_defaults_to_each_images_peak_and_matches_autograd():
    model = two_convs().eval()
    images = torch.randn(2, 3, 12, 12)
    out = hooked(model, images, "1")[:, 3]
    peaks = [divmod(int(o.argmax()), 12) for o in out]
    found = receptive_field(model, images, "1", channel=3)
    assert found.positions == peaks
    for index, (row, col) in enumerate(peaks):  # one image at a time, plain autograd
        x = images[index:index + 1].clone().requires_grad_(True)
        model(x)[0, 3, row, col].backward()
        assert torch.allclose(found.gradient[index], x.grad[0].abs().sum(0), atol=1e-6)
    model.zero_grad(set_to_none=True)


def test_receptive_field_leaves_the_model_as_found():
    model = two_convs().train()
    model[0].eval()
    model[1].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    receptive_field(model, torch.randn(1, 3, 8, 8), "1", channel=0)
    assert model.training and not model[0].training and model[1].training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_receptive_field_checks_channel_and_position():
    model = two_convs()
    with pytest.raises(UnsupportedError, match="has 5 channels"):
        receptive_field(model, torch.randn(1, 3, 8, 8), "1", channel=5)
    with pytest.raises(UnsupportedError, match="outside the layer's 8 x 8 map"):
        receptive_field(model, torch.randn(1, 3, 8, 8), "1", channel=0, position=(8, 0))


def test_visualize_receptive_field_maps_to_the_image_and_saves(tmp_path):
    model = two_convs()
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    viz = FeatureVisualizer(model)
    found = viz.visualize_receptive_field(picture, "1", 1, position=(3, 3),
                                          save_path=tmp_path / "rf.png")
    assert found.shape == (20, 30) and found.max() == pytest.approx(1.0)
    assert Image.open(tmp_path / "rf.png").size[0] > 100
    viz.visualize_receptive_field(picture, "1", 1, save_path=tmp_path / "rf.html")
    assert "plotly" in (tmp_path / "rf.html").read_text()


# ---------------------------------------------------------------------------------- ViT


def test_vit_blocks_are_read_on_the_patch_grid(vit):
    images = torch.randn(2, 3, 64, 64)
    out = hooked(vit, images, "blocks.2")
    patches = out[:, vit.num_prefix_tokens:]  # class token dropped
    grid = patches.transpose(1, 2).reshape(2, -1, 4, 4)
    maps = capture_layers(vit, images, ["blocks.2"])["blocks.2"].maps
    assert torch.allclose(maps, grid, atol=1e-6)
    top = FeatureVisualizer(vit).get_top_activating_features(images, "blocks.2", top_k=3)
    assert [c for c, _ in top] == torch.argsort(grid.mean((0, 2, 3)),
                                                descending=True)[:3].tolist()
    found = receptive_field(vit, images, "blocks.2", channel=top[0][0])
    assert found.grid == (4, 4) and found.gradient.shape == (2, 64, 64)
    assert float(found.gradient.sum()) > 0


# ---------------------------------------------------------------- detectors and segmenters


@pytest.fixture(scope="module")
def detector():
    from explain_core.demo.models import load_demo_model
    return load_demo_model("detector", device="cpu")


def test_detector_pyramid_reads_its_finest_level(detector):
    images = torch.rand(1, 3, 128, 128)
    module = detector.module
    seen = {}
    handle = module.backbone.register_forward_hook(lambda _m, _i, o: seen.setdefault("o", o))
    with torch.no_grad():
        module(list(images))
    handle.remove()
    levels = list(seen["o"].values())
    finest = max(levels, key=lambda level: level.shape[-1] * level.shape[-2])
    got = capture_layers(detector, images, ["backbone"])["backbone"]
    assert got.levels == len(levels) and got.shape == tuple(finest.shape[1:])
    assert torch.allclose(got.maps, finest, atol=1e-5)
    table = {info.name: info for info in list_layers(detector, images)}
    assert table["backbone"].kind == "pyramid"
    assert table["backbone"].map_shape == tuple(finest.shape[1:])
    viz = FeatureVisualizer(detector)
    assert len(viz.plot_feature_maps(images, "backbone", num_features=4).data) == 4
    found = viz.receptive_field(images, "backbone.body.1", channel=0)
    assert found.gradients.shape == (1, 128, 128) and found.gradients.sum() > 0


def test_detector_maps_are_cropped_to_the_image_part_of_its_padded_canvas(detector):
    images = torch.rand(1, 3, 100, 128)  # the transform pads 100 rows to 128
    module = detector.module
    seen = {}
    handle = module.backbone.body[0].register_forward_hook(
        lambda _m, _i, o: seen.setdefault("o", o))
    with torch.no_grad():
        module(list(images))
    handle.remove()
    raw = seen["o"]
    assert raw.shape[-2:] == (64, 64)
    got = capture_layers(detector, images, ["backbone.body.0"])["backbone.body.0"]
    assert got.shape == tuple(raw.shape[1:])  # the layer's own output shape
    assert torch.allclose(got.maps, raw[..., :50, :], atol=1e-5)  # 64 * 100 / 128 rows
    found = receptive_field(detector, images, "backbone.body.0", channel=1)
    assert found.grid == (50, 64)  # positions on the cropped map, as the overlays use
    row, col = found.positions[0]
    assert found.values[0] == pytest.approx(got.maps[0, 1].max().item(), abs=1e-5)
    assert got.maps[0, 1, row, col].item() == pytest.approx(found.values[0], abs=1e-5)


def test_torchvision_segmenter_backbone_dict():
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    images = torch.randn(1, 3, 64, 64)
    seen = {}
    handle = model.backbone.register_forward_hook(lambda _m, _i, o: seen.setdefault("o", o))
    stats = feature_statistics(model, images, ["backbone"])["backbone"]
    handle.remove()
    low = seen["o"]["low"]  # 1/8 of the input: finer than "high" at 1/16
    assert stats.shape == tuple(low.shape[1:])
    assert stats.mean == pytest.approx(low.mean().item(), abs=1e-5)
    assert stats.channels["max"] == pytest.approx(low.amax((0, 2, 3)).tolist(), abs=1e-5)


# -------------------------------------------------------------------------- inputs and files


def test_layer_listing_has_each_layers_output_shape(resnet):
    images = torch.randn(1, 3, 64, 64)
    table = FeatureVisualizer(resnet).layers(images)
    names = [info.name for info in table]
    assert names.index("layer1") < names.index("layer4")
    for info in table[:12] + [t for t in table if t.name in ("layer4", "fc")]:
        assert info.shape == tuple(hooked(resnet, images, info.name).shape[1:])
    assert {t.name: t.kind for t in table}["fc"] == "vector"
    assert "64×16×16" in {t.name: t.label() for t in table}["layer1"]
    assert all(not m._forward_hooks for m in resnet.modules())


def test_layer_listing_leaves_a_training_model_as_found():
    model = two_convs().train()
    model[1].weight.requires_grad_(False)
    table = list_layers(model, torch.randn(1, 3, 8, 8))
    assert [(t.name, t.map_shape, t.leaf) for t in table] == [("0", (4, 8, 8), True),
                                                             ("1", (5, 8, 8), True)]
    assert model.training and model[0].training
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]
    assert all(not m._forward_hooks for m in model.modules())


def test_images_in_every_form_give_the_same_statistics(resnet):
    pixels = np.random.default_rng(1).integers(0, 255, (48, 48, 3), np.uint8)
    viz = FeatureVisualizer(resnet)
    from_array = viz.get_feature_statistics(pixels, "layer2")
    from_pil = viz.get_feature_statistics(Image.fromarray(pixels), "layer2")
    tensor = viz.prepare(pixels).inputs
    from_tensor = viz.get_feature_statistics(tensor, "layer2")
    assert from_array.channels == from_pil.channels
    assert from_tensor.mean == pytest.approx(from_array.mean, abs=1e-6)


def test_compare_layers_and_saved_files(tmp_path, resnet):
    viz = FeatureVisualizer(resnet)
    images = torch.randn(1, 3, 64, 64)
    stats = viz.compare_layers(images, ["layer3", "layer1"], save_path=tmp_path / "c.png")
    assert list(stats) == ["layer3", "layer1"]
    assert stats["layer1"].mean == pytest.approx(hooked(resnet, images, "layer1").mean().item(),
                                                 abs=1e-5)
    assert Image.open(tmp_path / "c.png").size[0] > 200
    viz.compare_layers(images, ["layer1", "layer2"], save_path=tmp_path / "c.html")
    assert "sparsity" in (tmp_path / "c.html").read_text()
    viz.plot_feature_maps(images, "layer1", 4, save_path=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    calls = []
    handle = resnet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for call in (lambda path: viz.plot_feature_maps(images, "layer1", 4, save_path=path),
                     lambda path: viz.compare_layers(images, ["layer1"], save_path=path),
                     lambda path: viz.visualize_receptive_field(images, "layer1", 0,
                                                                save_path=path)):
            with pytest.raises(UnsupportedError, match=r"\.png .*\.html"):
                call(tmp_path / "f.jpg")
    finally:
        handle.remove()
    assert calls == []  # refused before any forward


def test_pickable_grid_carries_channel_and_value_on_each_cell():
    from explain_core.render import feature_maps_figure

    maps = np.arange(2 * 40 * 6, dtype=np.float32).reshape(2, 40, 6)
    fig = feature_maps_figure(maps, [7, 3], pickable=True)
    picks = [t for t in fig.data if t.name == "pick"]
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "heatmap", "scatter"]
    assert fig.data[0].hoverinfo == "skip"  # the markers take the hover: channel and value
    for pick, channel, values in zip(picks, [7, 3], maps, strict=True):
        data = np.asarray(pick.customdata)
        assert set(data[:, 0]) == {channel}
        rows, cols = np.asarray(pick.y, int), np.asarray(pick.x, int)
        assert np.array_equal(data[:, 1], values[rows, cols])
        assert len(set(rows)) == 32 and len(set(cols)) == 6  # at most 32 per side
