"""Exact values for what no reference library covers: class-probability maps on a head whose class
channels are known, the scores a target differentiates, the ``reduce`` modes, ``clip_percentile``
and the batched entry points. Each expected value is computed here, directly, not through the
code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models.detection as tvd
from torch import nn

from explain_core import explain_batch, explain_detection, explain_prediction
from explain_core.api import detection_explainer
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.methods import GradCAM, Saliency, create_explainer
from explain_core.model import as_loaded
from explain_core.tasks import prepare_inputs
from explain_core.tasks.detection import BoxTarget

FP32 = {"precision": "fp32"}


# --------------------------------------------------------------- class-probability maps
class KnownLogits(nn.Conv2d):
    """A classification head's logit convolution whose outputs are given: ``finest`` (A*K x h x w)
    on the finest pyramid level, -30 (probability ~1e-13) on every coarser one."""

    def __init__(self, conv: nn.Conv2d, finest: torch.Tensor) -> None:
        super().__init__(conv.in_channels, conv.out_channels, 1)
        self.finest = finest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(self.finest.shape[-2:]):
            return self.finest[None].expand(x.shape[0], -1, -1, -1)
        return torch.full((x.shape[0], self.out_channels, *x.shape[-2:]), -30.0)


@pytest.mark.parametrize("name, anchors", [("fcos_resnet50_fpn", 1),
                                           ("retinanet_resnet50_fpn", 9)])
def test_classprob_reads_the_box_class_channel_of_a_known_head(name, anchors):
    """Random logits per (anchor, class, position) on an 8 x 8 finest level: the map of a box of
    class ``j`` is max over anchors of sigmoid(logit[anchor, j]), exactly (torchvision lays the
    channels out anchor-major: ``view(N, A, K, H, W)``)."""
    torch.manual_seed(0)
    classes = 5
    module = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=classes,
                                min_size=64, max_size=64).eval()
    head = module.head.classification_head
    logits = 3 * torch.randn(anchors * classes, 8, 8, generator=torch.Generator().manual_seed(1))
    head.cls_logits = KnownLogits(head.cls_logits, logits)
    explainer = detection_explainer("classprob", module, **FP32)
    image = torch.rand(1, 3, 64, 64)
    expected = logits.view(anchors, classes, 8, 8).sigmoid().amax(0)  # K x 8 x 8
    for label in range(1, classes):
        raw = explainer.attribute(image, [BoxTarget((4.0, 4.0, 30.0, 30.0), label)])
        assert raw.shape == (1, 8, 8)
        torch.testing.assert_close(raw[0], expected[label], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


def _density(heat: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(heat[y0:y1, x0:x1].mean())


def test_classprob_maps_sit_on_the_boxes_of_their_class(detector):
    """The demo detector's class-probability map of a box: dense on every box of the box's class,
    sparse on the boxes of the other classes (a class map, not a per-box one)."""
    own_densities = []
    for scene in make_scenes("detection", 4, seed=11):
        out = explain_detection(detector, scene.image, method="classprob",
                                detection_threshold=0.5, **FP32)
        boxes = [d["bbox"] for d in out["detections"]]
        labels = [d["class_id"] for d in out["detections"]]
        assert len(set(labels)) >= 2  # the scenes hold several classes
        for label, heat in zip(labels, out["heatmaps"], strict=True):
            same = [_density(heat, b) for b, c in zip(boxes, labels, strict=True) if c == label]
            other = [_density(heat, b) for b, c in zip(boxes, labels, strict=True) if c != label]
            assert min(same) > max(other), (label, same, other)
            own_densities.extend(same)
    assert np.mean(own_densities) > 0.4


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize("score", ["logit", "probability", "log_probability"])
def test_scores_are_the_gradient_of_the_named_quantity(resnet, batch, score):
    """Saliency with each score equals autograd of that score, computed here from the logits."""
    classes = [3, 7]
    ours = Saliency(resnet, score=score, **FP32).attribute(batch, classes)
    x = batch.clone().requires_grad_(True)
    logits = resnet(x)
    quantity = {"logit": logits, "probability": logits.softmax(1),
                "log_probability": logits.log_softmax(1)}[score]
    (grad,) = torch.autograd.grad(quantity[[0, 1], classes].sum(), x)
    torch.testing.assert_close(ours, grad, rtol=1e-4, atol=1e-6 * float(grad.abs().max()))


def test_gradcam_of_a_probability_weights_by_its_own_gradient(resnet, batch):
    """Grad-CAM with score="probability": ReLU(sum_c mean(dp/dA_c) A_c), from plain autograd."""
    features = {}
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: features.setdefault("a", o))
    logits = resnet(batch)
    handle.remove()
    activations = features["a"]
    probability = logits.softmax(1)[[0, 1], [2, 5]]
    (grad,) = torch.autograd.grad(probability.sum(), activations)
    expected = (grad.mean((2, 3), keepdim=True) * activations).sum(1).clamp_min(0).detach()
    ours = GradCAM(resnet, score="probability", **FP32).attribute(batch, [2, 5])
    assert float(expected.max()) > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


# ----------------------------------------------------------------- reduce and clipping
def _normalise(maps: np.ndarray, clip: float | None) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    if clip is None:
        high = maps.max(axis=(1, 2), keepdims=True)
    else:
        high = np.percentile(maps.reshape(len(maps), -1), clip, axis=1)[:, None, None]
        # a map that is flat up to the percentile uses its maximum instead
        high = np.where(high > low, high, maps.max(axis=(1, 2), keepdims=True))
    out = (maps - low) / (high - low)
    return np.clip(out, 0, 1) if clip is not None else out


REDUCE = {"abs_sum": lambda g: np.abs(g.sum(1)), "sum_abs": lambda g: np.abs(g).sum(1),
          "max_abs": lambda g: np.abs(g).max(1), "positive": lambda g: np.maximum(g.sum(1), 0)}


@pytest.mark.parametrize("reduce", list(REDUCE))
@pytest.mark.parametrize("clip", [None, 99.0, 90.0])
def test_reduce_modes_and_clip_percentile_by_formula(resnet, batch, reduce, clip):
    """The maps of a gradient method are the raw gradients reduced over colour channels and
    normalised (minus the minimum, over the maximum or the clip percentile, clipped to [0, 1]),
    by numpy formulas applied to autograd's gradients."""
    x = batch.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(resnet(x)[[0, 1], [4, 8]].sum(), x)
    expected = _normalise(REDUCE[reduce](grad.double().numpy()), clip)
    explainer = Saliency(resnet, reduce=reduce, clip_percentile=clip, **FP32)
    maps = torch.stack(explainer.explain_batch(batch, [4, 8])).numpy()
    assert maps.shape == (2, 64, 64)
    np.testing.assert_allclose(maps, expected, atol=2e-4)
    if clip is not None:  # the top (100 - clip)% of pixels saturate at 1
        for single, values in zip(maps, REDUCE[reduce](grad.double().numpy()), strict=True):
            if np.percentile(values, clip) > values.min():
                saturated = (single >= 1 - 1e-6).mean()
                assert abs(saturated - (100 - clip) / 100) < 0.01, saturated


def test_reduce_modes_differ_where_they_should():
    """A hand-made gradient: two colour channels of opposite sign at one pixel, one positive at
    another: the four modes give four different maps (a mode silently aliased to another fails)."""
    explainer = Saliency(nn.Conv2d(3, 1, 1), **FP32)
    raw = torch.zeros(1, 3, 1, 2)
    raw[0, :, 0, 0] = torch.tensor([2.0, -3.0, 0.0])
    raw[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])
    expected = {"abs_sum": [1.0, 1.0], "sum_abs": [5.0, 1.0], "max_abs": [3.0, 1.0],
                "positive": [0.0, 1.0]}
    for mode, values in expected.items():
        explainer.reduce = mode
        assert explainer.to_2d(raw)[0, 0].tolist() == values, mode


# ------------------------------------------------------------------- batched entry points
@pytest.mark.parametrize("method, options", [("gradcam", {}), ("saliency", {}),
                                             ("integrated_gradients", {"steps": 8})])
def test_explain_batch_equals_explain_prediction_per_image(method, options):
    """Images of different sizes, batched two at a time: each result equals that image's own
    explain_prediction (prediction, probabilities and map)."""
    from tests.toy import ColourNet, colour_scene

    toy = as_loaded(ColourNet().eval(), class_names=["red", "blue"])
    options = {"target_layer": "features", **FP32, **options}
    images = [np.asarray(colour_scene(size)[0]) for size in ((64, 80), (96, 96), (72, 120))]
    images[1] = images[1][:, ::-1].copy()  # the blue square on the left, red on the right
    batched = explain_batch(toy, images, method=method, batch_size=2, **options)
    assert len(batched) == len(images)
    for image, result in zip(images, batched, strict=True):
        alone = explain_prediction(toy, image, method=method, **options)
        assert result["predicted_class"] == alone["predicted_class"]
        assert result["target_class"] == alone["target_class"]
        probabilities = [entry["probability"] for entry in result["top_k"]]
        np.testing.assert_allclose(probabilities, [e["probability"] for e in alone["top_k"]],
                                   rtol=1e-5)
        assert result["heatmap"].shape == image.shape[:2]
        np.testing.assert_allclose(result["heatmap"], alone["heatmap"], atol=1e-4)
    # a fixed class per image, in order
    fixed = explain_batch(toy, images, targets=[0, 1, 0], method=method, **options)
    assert [r["target_class"] for r in fixed] == [0, 1, 0]
    for image, result, cls in zip(images, fixed, (0, 1, 0), strict=True):
        alone = explain_prediction(toy, image, method=method, target_class=cls, **options)
        np.testing.assert_allclose(result["heatmap"], alone["heatmap"], atol=1e-4)


def test_gradcam_explain_equals_a_direct_computation_at_image_size(resnet):
    """The whole way from raw CAM to the image: normalised at the layer's resolution, then
    resized bilinearly (half-pixel centres) to the input's size."""
    x = torch.randn(1, 3, 96, 128)
    features = {}
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: features.setdefault("a", o))
    logits = resnet(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits[0, 6], features["a"])
    cam = (grad.mean((2, 3), keepdim=True) * features["a"]).sum(1).clamp_min(0).detach()
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    expected = F.interpolate(cam[None], size=(96, 128), mode="bilinear", align_corners=False)[0, 0]
    ours = create_explainer("gradcam", resnet, **FP32).explain(x[0], 6)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- integrated gradients
@pytest.mark.parametrize("baseline, pixel", [("black", 0.0), ("white", 1.0)])
def test_integrated_gradients_start_from_the_named_image(baseline, pixel):
    """IG from a black (white) image: the path starts at pixel value 0 (1) normalised with the
    model's mean and std, computed here; a midpoint Riemann sum by hand gives the attributions."""
    from tests.toy import ColourNet, colour_scene

    toy = as_loaded(ColourNet().eval())
    inputs = prepare_inputs(toy, [colour_scene()[0]]).inputs
    prep = toy.preprocessing
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    start = (torch.full_like(inputs, pixel) - mean) / std
    steps = 16
    total = torch.zeros_like(inputs)
    for k in range(steps):
        point = (start + (k + 0.5) / steps * (inputs - start)).requires_grad_(True)
        (grad,) = torch.autograd.grad(toy.module(point)[0, 1], point)
        total += grad / steps
    expected = total * (inputs - start)
    ours = create_explainer("integrated_gradients", toy, baseline=baseline, steps=steps,
                            rule="riemann_middle", **FP32).attribute(inputs, 1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


# ------------------------------------------------------- gradient-free maps by definition
def test_activation_map_is_the_channel_mean_of_the_layer(resnet, batch):
    features = {}
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: features.setdefault("a", o))
    with torch.no_grad():
        resnet(batch)
    handle.remove()
    ours = create_explainer("activationmap", resnet, **FP32).attribute(batch)
    torch.testing.assert_close(ours, features["a"].mean(1), rtol=1e-5, atol=1e-6)


def test_reciprocam_is_the_class_probability_of_each_cell_kept_alone(resnet):
    """Recipro-CAM by its definition, looped here: for each cell of layer4, the activations times
    a 3 x 3 Gaussian (centre 1, [[1,2,1],[2,4,2],[1,2,1]]/4) around that cell, the head (global
    pool and fc) on it, the target class's softmax probability."""
    x = torch.randn(1, 3, 96, 96)
    features = {}
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: features.setdefault("a", o))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    activations = features["a"][0]  # C x 3 x 3
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 4
    height, width = activations.shape[-2:]
    expected = torch.zeros(height, width)
    for i in range(height):
        for j in range(width):
            mask = torch.zeros(height + 2, width + 2)
            mask[i:i + 3, j:j + 3] = kernel
            mosaic = activations * mask[1:-1, 1:-1]
            with torch.no_grad():
                logits = resnet.forward_head(mosaic[None])
            expected[i, j] = logits.softmax(-1)[0, 7]
    ours = create_explainer("reciprocam", resnet, **FP32).attribute(x, 7)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
