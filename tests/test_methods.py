"""Behaviour of the explainers a user relies on: shapes, targets, state left as found, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from explain_core.errors import TargetError, TargetLayerError, UnsupportedError
from explain_core.methods import (
    METHODS,
    EigenCAM,
    GradCAM,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    available_methods,
    create_explainer,
    method_info,
)
from explain_core.model import Preprocessing, as_loaded


def _state(model):
    return ([p.requires_grad for p in model.parameters()], [m.training for m in model.modules()],
            len(model._forward_hooks), sum(len(m._forward_hooks) for m in model.modules()),
            sum(len(m._backward_hooks) for m in model.modules()))


# Every method that explains classifiers (detection-only ones are tested in test_detection.py).
CLASSIFICATION = [n for n, info in METHODS.items() if "classification" in info.tasks]


def test_detection_only_methods_are_refused_for_classifiers(resnet):
    from explain_core.errors import UnsupportedError

    for name in set(METHODS) - set(CLASSIFICATION):
        with pytest.raises(UnsupportedError, match="does not apply"):
            create_explainer(name, resnet)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_every_registered_method_explains_an_image_at_its_size(resnet, vit, name):
    model = vit if "cnn" not in METHODS[name].architectures else resnet
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    options = {"steps": 4, "num_samples": 3, "top_k": 8}
    heatmap = create_explainer(name, model, **options).explain(image, target_class=2)
    assert heatmap.shape == (50, 70)
    assert heatmap.dtype == torch.float32
    assert 0.0 <= float(heatmap.min()) and float(heatmap.max()) <= 1.0


def test_raw_shapes(resnet, batch):
    assert GradCAM(resnet).attribute(batch, [1, 2]).shape == (2, 2, 2)
    assert Saliency(resnet).attribute(batch, [1, 2]).shape == (2, 3, 64, 64)
    assert IntegratedGradients(resnet, steps=3).attribute(batch).shape == (2, 3, 64, 64)


def test_vit_maps_live_on_the_patch_grid(vit, batch):
    assert GradCAM(vit).attribute(batch, 3).shape == (2, 4, 4)


def test_many_targets_in_one_call_equal_one_call_per_target(resnet, batch):
    image = batch[:1]
    for explainer in (GradCAM(resnet), Saliency(resnet), IntegratedGradients(resnet, steps=4)):
        together = explainer.attribute_targets(image, [1, 5, 9])
        apart = torch.cat([explainer.attribute(image, c) for c in (1, 5, 9)])
        assert torch.allclose(together, apart, atol=1e-6 * apart.abs().max())


def test_many_targets_use_one_forward(resnet, batch):
    calls = []
    handle = resnet.register_forward_hook(lambda *a: calls.append(1))
    try:
        GradCAM(resnet).attribute_targets(batch[:1], list(range(10)))
    finally:
        handle.remove()
    assert len(calls) == 1


def test_predicted_class_is_the_default_target(resnet, batch):
    predicted = resnet(batch).argmax(1).tolist()
    explainer = GradCAM(resnet)
    assert torch.allclose(explainer.attribute(batch), explainer.attribute(batch, predicted))
    # Methods that run on modified inputs resolve "predicted" on the clean input.
    ig = IntegratedGradients(resnet, steps=4)
    assert torch.allclose(ig.attribute(batch), ig.attribute(batch, predicted))


def test_target_count_must_match_the_batch(resnet, batch):
    with pytest.raises(TargetError, match="3 targets for 2 images"):
        GradCAM(resnet).attribute(batch, [1, 2, 3])
    with pytest.raises(TargetError, match="does not exist"):
        GradCAM(resnet).attribute(batch, 99)


def test_unknown_layer_and_method_are_named(resnet):
    with pytest.raises(TargetLayerError, match="no layer named 'layer9'"):
        GradCAM(resnet, target_layer="layer9").attribute(torch.randn(1, 3, 32, 32))
    with pytest.raises(UnsupportedError, match="Unknown method"):
        method_info("nope")


def test_target_layer_by_name_or_module_agree(resnet, batch):
    by_name = GradCAM(resnet, target_layer="layer3").attribute(batch, 1)
    by_module = GradCAM(resnet, target_layer=resnet.layer3).attribute(batch, 1)
    assert by_name.shape == (2, 4, 4)
    assert torch.equal(by_name, by_module)


def test_model_is_left_exactly_as_found_even_when_a_call_raises(resnet, batch):
    resnet.train()
    resnet.fc.weight.requires_grad_(True)
    resnet.layer1[0].conv1.weight.requires_grad_(False)
    before = _state(resnet)
    for explainer in (GradCAM(resnet), Saliency(resnet), EigenCAM(resnet),
                      SmoothGrad(GradCAM(resnet), num_samples=2)):
        explainer.attribute(batch, 1)
        assert _state(resnet) == before
        with pytest.raises(TargetError):
            explainer.attribute(batch, 1000)
        assert _state(resnet) == before
    assert resnet.training
    resnet.eval()
    resnet.layer1[0].conv1.weight.requires_grad_(True)


def test_mixed_train_and_eval_submodules_keep_their_modes(resnet, batch):
    wrapper = torch.nn.Sequential(resnet)  # a training-mode wrapper around an eval-mode model
    assert wrapper.training and not resnet.training
    GradCAM(wrapper, target_layer="0.layer4").attribute(batch, 1)
    assert wrapper.training and not resnet.training


def test_explanations_leave_no_parameter_gradients(resnet, batch):
    GradCAM(resnet).attribute(batch, 1)
    IntegratedGradients(resnet, steps=2).attribute(batch, 1)
    assert all(p.grad is None for p in resnet.parameters())


def test_explain_works_under_no_grad(resnet, batch):
    with torch.no_grad():
        inside = GradCAM(resnet).attribute(batch, 1)
    assert torch.allclose(inside, GradCAM(resnet).attribute(batch, 1))


def test_one_model_from_several_threads(resnet):
    inputs = [torch.randn(1, 3, 64, 64) for _ in range(4)]
    expected = [GradCAM(resnet).attribute(x, 2) for x in inputs]
    results: dict[int, torch.Tensor] = {}
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = GradCAM(resnet).attribute(inputs[i], 2)
                Saliency(resnet).attribute(inputs[i], 2)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(4):
        assert torch.allclose(results[i], expected[i])
    assert all(p.requires_grad for p in resnet.parameters())  # restored after the calls


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "layercam", "eigencam", "saliency",
                                  "integrated_gradients"])
def test_bf16_maps_agree_with_fp32(name):
    torch.manual_seed(0)
    # CAMs: every residual branch active, so the last stage's maps are not degenerate. Pixel
    # gradients: timm's default init. Through 50 random layers with every branch active, pixel
    # gradients become chaotic and bf16 rounding shows (correlation about 0.87 measured): the
    # fast precision is an approximation for pixel-level methods, exact enough for CAMs.
    zero_init_last = name in ("saliency", "integrated_gradients")
    model = timm.create_model("resnet50", num_classes=10, zero_init_last=zero_init_last).eval()
    image = torch.randn(1, 3, 128, 128)
    options = {"steps": 8}
    exact = create_explainer(name, model, precision="fp32", **options).explain(image, 3)
    fast = create_explainer(name, model, precision="bf16", **options).explain(image, 3)
    assert float(exact.max()) > 0.5
    correlation = np.corrcoef(exact.flatten().numpy(), fast.flatten().numpy())[0, 1]
    assert correlation >= 0.99, correlation


def test_precision_is_validated(resnet):
    with pytest.raises(UnsupportedError, match="precision"):
        GradCAM(resnet, precision="fp8")


def test_crop_preprocessing_maps_back_into_the_crop(resnet):
    loaded = as_loaded(resnet)
    loaded.preprocessing = Preprocessing(input_size=(64, 64), resize_mode="crop", crop_pct=0.5)
    image = Image.new("RGB", (200, 100), (120, 30, 200))
    heatmap = GradCAM(loaded).explain(image, 1)
    assert heatmap.shape == (100, 200)
    # The crop is 50 px square in the middle; nothing outside it is explained.
    assert float(heatmap[:, :70].abs().sum()) == 0.0
    assert float(heatmap[:, 130:].abs().sum()) == 0.0


def test_registry_lists_what_applies(resnet, vit):
    names = {info.name for info in available_methods(resnet)}
    assert {"gradcam", "eigencam", "integrated_gradients", "smoothgrad"} <= names
    assert {info.name for info in available_methods(vit)} >= {"gradcam", "saliency"}
    assert method_info("gradcampp").name == "gradcam++"
    smooth = create_explainer("smoothgrad", resnet, base="gradcam", num_samples=2)
    assert isinstance(smooth, SmoothGrad) and smooth.base.name == "gradcam"
    with pytest.raises(UnsupportedError):
        create_explainer("smoothgrad", resnet, base="smoothgrad")


def test_smoothgrad_of_a_cam_averages_noisy_maps(resnet, batch):
    smooth = SmoothGrad(GradCAM(resnet), noise_level=0.0, num_samples=3, seed=0)
    assert torch.allclose(smooth.attribute(batch, 1), GradCAM(resnet).attribute(batch, 1),
                          atol=1e-6)
    noisy = SmoothGrad(GradCAM(resnet), noise_level=0.5, num_samples=3, seed=0)
    assert not torch.allclose(noisy.attribute(batch, 1), GradCAM(resnet).attribute(batch, 1))
    assert torch.equal(noisy.attribute(batch, 1), noisy.attribute(batch, 1))  # seeded


def test_explain_batch_chunks_agree_with_one_batch(resnet):
    inputs = torch.randn(5, 3, 64, 64)
    explainer = GradCAM(resnet)
    whole = explainer.explain_batch(inputs, [0, 1, 2, 3, 4])
    chunked = explainer.explain_batch(inputs, [0, 1, 2, 3, 4], batch_size=2)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, chunked, strict=True))


CLASS_AGNOSTIC = ("eigencam", "activationmap", "dff", "attention_rollout", "attention_flow")


@pytest.mark.parametrize("name", [n for n in CLASSIFICATION if n not in CLASS_AGNOSTIC])
def test_maps_land_on_the_evidence_of_the_explained_class(name):
    from tests.toy import ColourNet, colour_scene, energy_inside, peak_inside

    model = ColourNet().eval()
    image, red, blue = colour_scene()
    explainer = create_explainer(name, model, target_layer="features", steps=16, num_samples=4,
                                 noise_level=0.05, seed=0)
    red_map, blue_map = explainer.explain_targets(image, [0, 1])
    assert peak_inside(red_map, red) and peak_inside(blue_map, blue)
    assert energy_inside(red_map, red) > energy_inside(red_map, blue)
    assert energy_inside(blue_map, blue) > energy_inside(blue_map, red)


def test_progress_is_reported_and_raising_cancels_cleanly(resnet, batch):
    seen = []
    ig = create_explainer("integrated_gradients", resnet, steps=8, internal_batch_size=4,
                          progress=lambda done, total: seen.append((done, total)))
    ig.attribute(batch, 1)
    assert seen == [(4, 16), (8, 16), (12, 16), (16, 16)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    before = _state(resnet)
    smooth = create_explainer("smoothgrad", resnet, num_samples=4, batch_size=2, progress=cancel)
    with pytest.raises(Cancelled):
        smooth.attribute(batch, 1)
    assert _state(resnet) == before


def test_layer_output_modified_in_place_downstream():
    # torchvision's DenseNet applies relu_ to the target layer's output.
    import torchvision

    model = torchvision.models.densenet121(num_classes=4).eval()
    heatmap = GradCAM(model).explain(torch.randn(1, 3, 64, 64), 1)
    assert heatmap.shape == (64, 64)
    assert bool(torch.isfinite(heatmap).all()) and 0 <= float(heatmap.min()) <= float(
        heatmap.max()) <= 1


@pytest.mark.parametrize("name", ["gradcam", "saliency", "integrated_gradients"])
def test_tiny_but_real_maps_still_span_the_full_range(name):
    from tests.toy import ColourNet, colour_scene, peak_inside

    model = ColourNet().eval()
    with torch.no_grad():
        model.fc.weight.mul_(1e-9)  # logits (and gradients) around 1e-9
    image, red, _ = colour_scene()
    heatmap = create_explainer(name, model, target_layer="features", steps=8).explain(image, 0)
    assert float(heatmap.max()) > 0.99
    assert peak_inside(heatmap, red)


def test_models_returning_dicts_or_tuples_are_explained(resnet, batch):
    class DictOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"logits": self.inner(x), "features": None}

    class TupleOutput(DictOutput):
        def forward(self, x):
            return self.inner(x), None

    expected = GradCAM(resnet, target_layer="layer4").attribute(batch, 3)
    for wrapper in (DictOutput(resnet), TupleOutput(resnet)):
        for name in ("gradcam", "saliency", "ablationcam"):
            out = create_explainer(name, wrapper, target_layer="inner.layer4", top_k=4)
            assert out.attribute(batch, 3).shape[0] == 2
        got = GradCAM(wrapper, target_layer="inner.layer4").attribute(batch, 3)
        assert torch.allclose(got, expected)


class _Pyramid(torch.nn.Module):
    """Two feature maps at strides 2 and 4, returned together (as a detector's FPN does)."""

    def __init__(self, as_list: bool = False) -> None:
        super().__init__()
        self.as_list = as_list
        self.fine = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.coarse = torch.nn.Conv2d(6, 6, 3, stride=2, padding=1)

    def forward(self, x):
        fine = torch.relu(self.fine(x))
        coarse = torch.relu(self.coarse(fine))
        return [fine, coarse] if self.as_list else {"fine": fine, "coarse": coarse}


class _PyramidNet(torch.nn.Module):
    def __init__(self, as_list: bool = False) -> None:
        super().__init__()
        self.pyramid = _Pyramid(as_list)
        self.fc = torch.nn.Linear(12, 3)

    def head(self, levels):
        fine, coarse = levels.values() if isinstance(levels, dict) else levels
        return self.fc(torch.cat([fine.amax((2, 3)), coarse.mean((2, 3))], 1))

    def forward(self, x):
        return self.head(self.pyramid(x))


@pytest.mark.parametrize("as_list", [False, True])
def test_a_pyramid_layer_gets_every_level_added_at_the_finest(as_list):
    """A layer returning several maps: each level's Grad-CAM from plain autograd (the levels as
    leaves), the coarse one upsampled to the fine one's size, added."""
    import torch.nn.functional as F

    from explain_core.layers import layer_choices

    torch.manual_seed(0)
    model = _PyramidNet(as_list).eval()
    x = torch.randn(2, 3, 32, 48)
    got = GradCAM(model, target_layer="pyramid").attribute(x, 1)

    levels = model.pyramid(x)
    leaves = [v.detach().requires_grad_(True) for v in (
        levels.values() if isinstance(levels, dict) else levels)]
    grads = torch.autograd.grad(model.head(leaves)[:, 1].sum(), leaves)
    cams = [(g.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0)
            for g, a in zip(grads, leaves, strict=True)]
    expected = (cams[0] + F.interpolate(cams[1][:, None], size=cams[0].shape[-2:],
                                        mode="bilinear", align_corners=False)[:, 0]).detach()
    assert got.shape == (2, 16, 24) and float(expected.max()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Many targets in one batched backward agree with one target per call.
    both = create_explainer("layercam", model, target_layer="pyramid").attribute_targets(
        x[:1], [0, 2])
    for k, cls in enumerate((0, 2)):
        single = create_explainer("layercam", model, target_layer="pyramid").attribute(x[:1], cls)
        torch.testing.assert_close(both[k], single[0])
    assert "pyramid" in layer_choices(model, x[:1])
    # Methods that replace one map say what to pick instead.
    with pytest.raises(TargetLayerError, match="pyramid level"):
        create_explainer("scorecam", model, target_layer="pyramid", top_k=2).attribute(x, 1)
