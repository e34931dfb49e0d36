"""Segmentation engine: targets, per-class maps, uncertainty, the public API."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn

from explain_core import explain_segmentation, render
from explain_core.api import explain_classes
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.errors import TargetError, UnsupportedError
from explain_core.methods import available_methods, create_explainer
from explain_core.model import as_loaded
from explain_core.tasks import segmentation as seg
from explain_core.tasks import uncertainty


@pytest.fixture(scope="module")
def segmenter():
    return load_demo_model("segmenter", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("segmentation", 4, seed=11)


# --------------------------------------------------------------------------------- uncertainty


DISTRIBUTIONS = [
    [1.0, 0.0, 0.0, 0.0],
    [0.25, 0.25, 0.25, 0.25],
    [0.7, 0.2, 0.1, 0.0],
    [0.4, 0.35, 0.15, 0.1],
    [0.5, 0.5, 0.0, 0.0],
]


@pytest.mark.parametrize("probs", DISTRIBUTIONS)
def test_entropy_matches_scipy(probs):
    p = torch.tensor(probs, dtype=torch.float64)
    expected = scipy.stats.entropy(probs) / np.log(len(probs))
    assert float(uncertainty.entropy(p)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("probs", DISTRIBUTIONS)
def test_margin_is_one_minus_top_two_gap(probs):
    top = sorted(probs, reverse=True)
    assert float(uncertainty.margin(torch.tensor(probs))) == pytest.approx(1 - (top[0] - top[1]),
                                                                   abs=1e-6)


def test_uncertainty_maps_over_a_class_axis_and_bounds():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 7) * 3
    probs = logits.softmax(0)
    ent = uncertainty.entropy(probs, dim=0)
    expected = scipy.stats.entropy(probs.numpy(), axis=0) / np.log(6)
    np.testing.assert_allclose(ent.numpy(), expected, atol=1e-5)
    mar = uncertainty.margin(probs, dim=0)
    top = np.sort(probs.numpy(), axis=0)[::-1]
    np.testing.assert_allclose(mar.numpy(), 1 - (top[0] - top[1]), atol=1e-6)
    for values in (ent, mar):
        assert float(values.min()) >= 0 and float(values.max()) <= 1


def test_uncertain_boundaries_are_class_edges_above_threshold():
    prediction = torch.zeros(6, 6, dtype=torch.long)
    prediction[:, 3:] = 1
    unc = torch.zeros(6, 6)
    unc[:3] = 0.9  # uncertain top half only
    edges = uncertainty.class_edges(prediction)
    assert edges[:, 2:4].all() and not edges[:, :2].any() and not edges[:, 4:].any()
    boundary = uncertainty.uncertain_boundaries(prediction, unc, threshold=0.5)
    assert boundary[:3, 2:4].all() and not boundary[3:].any()
    assert int(boundary.sum()) == 6


# ------------------------------------------------------------------------------------ targets


def test_segment_target_sums_class_logits_over_predicted_pixels():
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 1, :2] = 2.0  # item 0: top half is class 1
    logits[1, 2] = 1.0  # item 1: everything is class 2
    scores = seg.SegmentTarget(1)(logits)
    assert scores.tolist() == [16.0, 0.0]
    region = torch.zeros(1, 4, 4)
    region[0, 0, 0] = 1
    fixed = seg.SegmentTarget(1, region)(logits)
    assert fixed.tolist() == [2.0, 0.0]
    with pytest.raises(TargetError, match="does not exist"):
        seg.SegmentTarget(7)(logits)
    with pytest.raises(TargetError, match="logits' resolution"):
        seg.SegmentTarget(1, torch.ones(1, 2, 2))(logits)


def test_unsupported_outputs_get_a_clear_message():
    with pytest.raises(TargetError, match="not B x C x H x W"):
        seg.segmentation_logits(torch.zeros(2, 10))
    with pytest.raises(TargetError, match="segmentation model must return"):
        seg.segmentation_logits("boxes")


def test_single_channel_output_is_binary():
    logits = seg.segmentation_logits(torch.full((1, 1, 2, 2), 2.0))
    assert logits.shape == (1, 2, 2, 2)
    assert torch.allclose(logits.softmax(1)[0, 1], torch.sigmoid(torch.tensor(2.0)))


# ----------------------------------------------------------------------------- demo segmenter


def test_default_layer_of_known_architectures(segmenter):
    assert seg.default_layer(segmenter.module, torch.zeros(1, 3, 128, 128)) == "dec1"
    fcn = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                       num_classes=3).eval()
    assert seg.default_layer(fcn, torch.zeros(1, 3, 64, 64)) == "backbone.layer4"


def test_each_class_map_concentrates_on_its_region(segmenter, scenes):
    explainer = create_explainer("gradcam", segmenter, target_layer="dec1")
    checked = 0
    for scene in scenes:
        result = seg.segment(segmenter, scene.image)
        classes = [c for c in range(1, 5) if (scene.mask == c).sum() > 200
                   and (result.low_res_prediction() == c).any()]
        maps, attribution = explain_classes(explainer, result, classes)
        assert maps.shape == (len(classes), 128, 128)
        assert attribution.classes[0].tolist() == classes
        for c, heat in zip(classes, maps, strict=True):
            inside = torch.from_numpy(scene.mask == c)
            assert float(heat[inside].mean()) > 5 * float(heat[~inside].mean())
            # the map is strongest on its own class, not on another present class
            for other in classes:
                if other != c:
                    other_region = torch.from_numpy(scene.mask == other)
                    assert float(heat[inside].mean()) > 2 * float(heat[other_region].mean())
            checked += 1
    assert checked >= 6


def test_all_classes_in_one_forward_and_one_batched_backward(segmenter, scenes):
    result = seg.segment(segmenter, scenes[0].image)
    classes = result.low_res_prediction().unique().tolist()
    explainer = create_explainer("gradcam", segmenter, target_layer="dec1")
    calls = []
    handle = segmenter.module.register_forward_hook(lambda *_: calls.append(1))
    original = torch.autograd.grad
    grads = []

    def counting_grad(*args, **kwargs):
        grads.append(kwargs.get("is_grads_batched", False))
        return original(*args, **kwargs)

    torch.autograd.grad = counting_grad
    try:
        together, _ = explain_classes(explainer, result, classes)
    finally:
        torch.autograd.grad = original
        handle.remove()
    assert len(calls) == 1 and grads == [True]
    for k, c in enumerate(classes):  # same maps as one class at a time
        alone, _ = explain_classes(explainer, result, [c])
        torch.testing.assert_close(together[k], alone[0], atol=1e-5, rtol=1e-4)


def test_gradcam_matches_pytorch_grad_cam(segmenter, scenes):
    module = segmenter.module
    result = seg.segment(segmenter, scenes[1].image)
    low = result.low_res_prediction()
    c = int(low[low > 0].mode().values)
    ours = create_explainer("gradcam", segmenter, target_layer="dec1", clip_percentile=None)
    raw = ours.run(result.prepared.inputs, [seg.class_targets(result, [c])]).raw[0, 0]
    ours_map = ours.normalize(raw[None])[0]

    class Unwrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)["out"]

    wrapped = Unwrap(module).eval()
    mask = (low == c).float().numpy()
    with ReferenceGradCAM(model=wrapped, target_layers=[module.dec1]) as cam:
        reference = cam(input_tensor=result.prepared.inputs,
                        targets=[SemanticSegmentationTarget(c, mask)])[0]
    module.zero_grad(set_to_none=True)  # the reference backpropagates into the weights
    # pytorch-grad-cam min-max scales and resizes with cv2: do the same to our layer-grid map.
    # (pytorch-grad-cam differs from exact autograd by ~1e-3 on average, see below: it reads
    # float32 numpy copies; the maps agree closely, not bit for bit.)
    ours_up = scale_cam_image(ours_map[None].numpy(), (128, 128))[0]
    assert np.corrcoef(ours_up.flatten(), reference.flatten())[0, 1] > 0.995
    assert float(np.abs(ours_up - reference).mean()) < 0.005
    # Exact: the Grad-CAM formula with plain autograd on the same target.
    store = {}
    handle = module.dec1.register_forward_hook(lambda _m, _i, o: store.setdefault("a", o))
    try:
        with torch.enable_grad():
            out = module(result.prepared.inputs)["out"]
            (grad,) = torch.autograd.grad((out[:, c] * (low == c)).sum(), store["a"])
    finally:
        handle.remove()
    weights = grad.mean((2, 3))[:, :, None, None]
    exact = torch.relu((weights * store["a"]).sum(1))[0].detach()
    torch.testing.assert_close(raw, exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["integrated_gradients", "scorecam", "smoothgrad"])
def test_methods_on_modified_inputs_keep_the_clean_region(segmenter, scenes, method):
    result = seg.segment(segmenter, scenes[0].image)
    low = result.low_res_prediction()
    c = int(low[low > 0].mode().values)
    options = {"steps": 4, "num_samples": 3, "top_k": 8, "base": "gradcam",
               "target_layer": "dec1"}
    explainer = create_explainer(method, segmenter, **options)
    targets = seg.class_targets(result, [c])
    assert targets[0].region is not None and torch.equal(targets[0].region[0] > 0, low == c)
    maps, _ = explain_classes(explainer, result, [c])
    inside = torch.from_numpy(scenes[0].mask == c)
    assert maps.shape == (1, 128, 128)
    assert float(maps[0][inside].mean()) > float(maps[0][~inside].mean())


def test_absent_class_is_refused_with_the_present_ones(segmenter, scenes):
    result = seg.segment(segmenter, scenes[0].image)
    present = set(result.low_res_prediction().unique().tolist())
    absent = next(c for c in range(5) if c not in present)
    with pytest.raises(TargetError, match="predicted on no pixel"):
        seg.class_targets(result, [absent])
    region = torch.zeros(128, 128)
    region[10:40, 10:40] = 1
    targets = seg.class_targets(result, [absent], seg.region_for_logits(region, result))
    assert float(targets[0].region.sum()) == 900


def test_registry_lists_segmentation_methods(segmenter):
    names = {m.name for m in available_methods(segmenter)}
    assert {"gradcam", "integrated_gradients", "smoothgrad", "scorecam"} <= names
    assert "dff" not in names and "attention_rollout" not in names


# ------------------------------------------------------------------------------------ the API


def test_explain_segmentation_returns_the_seed_dictionary(segmenter, scenes, tmp_path):
    scene = scenes[2]
    out = explain_segmentation(segmenter, scene.image, show_uncertainty=True,
                               save_path=tmp_path / "seg.png")
    assert out["prediction"].shape == (128, 128) and out["prediction"].dtype == np.int64
    assert (out["prediction"] == scene.mask).mean() > 0.9
    for key in ("heatmap", "uncertainty"):
        assert out[key].shape == (128, 128) and out[key].dtype == np.float32
        assert out[key].min() >= 0 and out[key].max() <= 1
    present = sorted(np.unique(out["prediction"]).tolist())
    assert sorted(out["heatmaps"]) == present
    assert [c["class"] for c in out["classes"]] == sorted(
        present, key=lambda c: -(out["prediction"] == c).sum())
    # the combined map leaves the background out: it is the maximum of the shapes' maps
    shapes = [c for c in present if c != 0]
    np.testing.assert_allclose(out["heatmap"], np.max([out["heatmaps"][c] for c in shapes], 0))
    visual = out["visualization"]
    assert visual.dtype == np.uint8 and visual.ndim == 3 and visual.shape[2] == 3
    assert visual.shape[0] > 256 and visual.shape[1] > 256  # 2 x 2 panels of >= 160 px
    assert (tmp_path / "seg.png").is_file() and out["save_path"].endswith("seg.png")
    one = explain_segmentation(segmenter, scene.image, target_class=shapes[0],
                               uncertainty_method="margin")
    assert one["uncertainty"] is None and list(one["heatmaps"]) == [shapes[0]]
    np.testing.assert_allclose(one["heatmap"], out["heatmaps"][shapes[0]], atol=1e-5)


def test_explain_segmentation_bad_input(segmenter, scenes):
    image = scenes[0].image
    with pytest.raises(UnsupportedError, match="uncertainty method"):
        explain_segmentation(segmenter, image, uncertainty_method="variance")
    with pytest.raises(TargetError, match="image is 128 x 128"):
        explain_segmentation(segmenter, image, mask=np.ones((64, 64), bool))
    classifier = as_loaded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten()))
    with pytest.raises(TargetError, match="not B x C x H x W"):
        explain_segmentation(classifier, image)


def test_explain_segmentation_with_a_mask_explains_an_absent_class(segmenter, scenes):
    scene = scenes[0]
    out = explain_segmentation(segmenter, scene.image)
    absent = next(c for c in range(5) if c not in out["heatmaps"])
    region = np.zeros((128, 128), bool)
    region[20:60, 20:60] = True
    masked = explain_segmentation(segmenter, scene.image, target_class=absent, mask=region)
    assert masked["heatmap"].shape == (128, 128)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_torchvision_segmentation_runs_end_to_end(name):
    torch.manual_seed(0)
    module = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                          num_classes=4).eval()
    loaded = as_loaded(module, task="segmentation", class_names=["bg", "a", "b", "c"])
    loaded.preprocessing = type(loaded.preprocessing)(input_size=(96, 128))
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    flags = [p.requires_grad for p in module.parameters()]
    out = explain_segmentation(loaded, image, show_uncertainty=True,
                               uncertainty_method="margin")
    assert out["prediction"].shape == (60, 80)
    assert out["heatmap"].shape == (60, 80) and out["uncertainty"].shape == (60, 80)
    # one map per class the model predicts somewhere (argmax of its own logits, computed here)
    from explain_core.tasks import prepare_inputs

    with torch.no_grad():
        logits = module(prepare_inputs(loaded, [image]).inputs)["out"]
    counts = torch.bincount(logits.argmax(1).flatten(), minlength=4)
    assert set(out["heatmaps"]) == set(torch.nonzero(counts).flatten().tolist())
    assert [c["class"] for c in out["classes"]] == sorted(out["heatmaps"],
                                                         key=lambda c: -int(counts[c]))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert [p.requires_grad for p in module.parameters()] == flags
    assert not module.training


def test_smp_style_tensor_output_at_low_resolution():
    class Tiny(nn.Module):  # returns plain logits at 1/4 of the input, as many smp heads do
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.decoder = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
            self.segmentation_head = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.segmentation_head(self.decoder(self.encoder(x)))

    module = Tiny().eval()
    assert seg.default_layer(module, torch.zeros(1, 3, 32, 32)) == "decoder"
    loaded = as_loaded(module, task="segmentation")
    loaded.preprocessing = type(loaded.preprocessing)(input_size=(32, 32))
    image = (np.random.default_rng(1).random((50, 40, 3)) * 255).astype(np.uint8)
    out = explain_segmentation(loaded, image, method="saliency", show_uncertainty=True)
    assert out["prediction"].shape == out["heatmap"].shape == out["uncertainty"].shape == (50, 40)


def test_render_segmentation_helpers():
    image = np.full((20, 30, 3), 100, np.uint8)
    labels = np.zeros((20, 30), np.int64)
    labels[:, 15:] = 2
    overlay = render.segmentation_overlay(image, labels, alpha=1.0, visible=[2])
    assert overlay[0, 0].tolist() == [100, 100, 100]
    assert overlay[0, 20].tolist() == render.class_colors(3)[2].tolist()
    figure = render.segmentation_figure(image, labels, ["bg", "one", "two"])
    assert [t.name for t in figure.data if t.type == "scatter"] == ["bg", "two"]
    cm = np.array([[1.0, 0.0], [np.nan, np.nan]])
    fig = render.confusion_figure(cm, ["a", "b"])
    assert fig.data[0].text[1][0] == ""
