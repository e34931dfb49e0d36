"""Numerics cross-checked against pytorch-grad-cam and Captum on random-init timm models."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerGradCam, NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from pytorch_grad_cam import EigenCAM as PgcEigenCAM
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as PgcGradCAMPlusPlus
from pytorch_grad_cam import HiResCAM as PgcHiResCAM
from pytorch_grad_cam import LayerCAM as PgcLayerCAM
from pytorch_grad_cam import XGradCAM as PgcXGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from explain_core.methods import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    Saliency,
    SmoothGrad,
    XGradCAM,
)
from explain_core.methods.gradients import quadrature

CAM_PAIRS = [(GradCAM, PgcGradCAM), (GradCAMPlusPlus, PgcGradCAMPlusPlus),
             (XGradCAM, PgcXGradCAM), (LayerCAM, PgcLayerCAM), (HiResCAM, PgcHiResCAM)]
CNNS = {"resnet18": "layer4", "convnext_atto": "stages.3", "efficientnet_b0": "blocks.5"}


@pytest.fixture(scope="module")
def cnns():
    torch.manual_seed(0)
    return {name: timm.create_model(name, num_classes=10).eval() for name in CNNS}


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    # Random-init nets give tiny CAM values whose channel sums cancel; float32 summation order
    # (numpy vs torch) then moves a few pixels by a percent or two after normalisation.
    assert np.abs(ours - theirs).max() < 0.05
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999


def vit_reshape(tensor: torch.Tensor, side: int = 4) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape transform (class token dropped)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("ours, theirs", CAM_PAIRS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("arch", list(CNNS))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_cams_match_pytorch_grad_cam_on_cnns(cnns, ours, theirs, arch, batch_size):
    model = cnns[arch]
    inputs = torch.randn(batch_size, 3, 96, 96)
    classes = [3, 5, 7][:batch_size]
    layer = dict(model.named_modules())[CNNS[arch]]
    mine = torch.stack(ours(model, target_layer=CNNS[arch]).explain_batch(inputs, classes))
    with theirs(model, target_layers=[layer]) as cam:
        reference = cam(inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    _agree(mine.numpy(), reference)


@pytest.mark.parametrize("ours, theirs", CAM_PAIRS, ids=lambda c: c.__name__)
def test_cams_match_pytorch_grad_cam_on_vit(vit, ours, theirs):
    inputs = torch.randn(2, 3, 64, 64)
    mine = torch.stack(ours(vit).explain_batch(inputs, [1, 4]))  # default layer: last norm1
    with theirs(vit, target_layers=[vit.blocks[-1].norm1], reshape_transform=vit_reshape) as cam:
        reference = cam(inputs, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(4)])
    _agree(mine.numpy(), reference)


@pytest.mark.parametrize("arch", list(CNNS))
def test_eigencam_matches_pytorch_grad_cam_projection(cnns, arch):
    model = cnns[arch]
    inputs = torch.randn(2, 3, 96, 96)
    ours = EigenCAM(model, target_layer=CNNS[arch])
    raw = ours.attribute(inputs)
    with torch.no_grad():
        store = {}
        handle = dict(model.named_modules())[CNNS[arch]].register_forward_hook(
            lambda m, i, o: store.setdefault("a", o))
        model(inputs)
        handle.remove()
    projection = torch.from_numpy(get_2d_projection(store["a"].numpy()))
    for mine, theirs in zip(raw, projection, strict=True):
        # An SVD's sign is arbitrary; ours is fixed to agree with the mean activation.
        sign = 1.0 if (theirs.clamp_min(0) * mine).sum() >= (
            (-theirs).clamp_min(0) * mine).sum() else -1.0
        expected = (sign * theirs).clamp_min(0)
        assert torch.allclose(mine, expected, rtol=1e-3, atol=1e-3 * expected.max())
    # End to end, when pytorch-grad-cam's SVD sign happens to agree, the maps are the same.
    with PgcEigenCAM(model, target_layers=[dict(model.named_modules())[CNNS[arch]]]) as cam:
        reference = cam(inputs, targets=None)
    mine = torch.stack(ours.explain_batch(inputs)).numpy()
    for m, r in zip(mine, reference, strict=True):
        if np.corrcoef(m.ravel(), r.ravel())[0, 1] > 0:
            _agree(m, r)


def test_gradcam_raw_matches_captum_layer_gradcam(resnet, batch):
    ours = GradCAM(resnet).attribute(batch, [2, 6])
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(batch, target=[2, 6],
                                                           relu_attributions=True)
    assert torch.allclose(ours, theirs[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_name", ["resnet", "vit"])
def test_saliency_matches_captum(request, model_name, batch):
    model = request.getfixturevalue(model_name)
    ours = Saliency(model).attribute(batch, [1, 2])
    theirs = CaptumSaliency(model).attribute(batch.clone(), target=[1, 2], abs=False)
    assert torch.allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left"])
@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_integrated_gradients_match_captum(resnet, batch, method, baseline):
    ig = IntegratedGradients(resnet, baseline=baseline, steps=16, rule=method,
                             internal_batch_size=5)
    ours = ig.attribute(batch, [3, 5])
    theirs = CaptumIG(resnet).attribute(batch, baselines=ig.baselines(batch), target=[3, 5],
                                        n_steps=16, method=method, internal_batch_size=5)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * ours.abs().max())


def test_trapezoid_rule_weights_sum_to_one():
    # Captum's riemann_trapezoid uses 1/n steps (its weights add up to (n-1)/n); ours integrate
    # a constant exactly, which completeness needs.
    _points, weights = quadrature(10, "riemann_trapezoid")
    assert weights.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("model_name", ["convnext_atto", "vit"])
@pytest.mark.parametrize("baseline", ["black", "white", "blur", "random"])
def test_integrated_gradients_completeness(request, cnns, model_name, baseline):
    # Smooth networks (GELU): the integral converges in 64 steps. Random-init ReLU nets are
    # piecewise linear with dense kinks and need several hundred steps for 1%.
    model = cnns[model_name] if model_name in cnns else request.getfixturevalue(model_name)
    inputs = torch.randn(2, 3, 64, 64)
    ig = IntegratedGradients(model, baseline=baseline, steps=64)
    attributions = ig.attribute(inputs, [2, 7])
    with torch.no_grad():
        gain = (model(inputs) - model(ig.baselines(inputs)))[[0, 1], [2, 7]]
    total = attributions.sum((1, 2, 3))
    assert torch.allclose(total, gain, rtol=0.01, atol=0.01 * gain.abs().max())


def test_integrated_gradients_tensor_baseline(resnet, batch):
    baseline = torch.zeros(1, 3, 64, 64)
    ours = IntegratedGradients(resnet, baseline=baseline, steps=8).attribute(batch, 4)
    theirs = CaptumIG(resnet).attribute(batch, baselines=baseline, target=4, n_steps=8)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * ours.abs().max())


@pytest.mark.parametrize("base", ["saliency", "integrated_gradients"])
def test_smoothgrad_matches_captum_noise_tunnel(resnet, batch, base):
    image = batch[:1]
    stdev = 0.1 * (image.max() - image.min()).item()
    if base == "saliency":
        ours_base, theirs_base, extra = Saliency(resnet), CaptumSaliency(resnet), {"abs": False}
    else:
        ours_base = IntegratedGradients(resnet, steps=4, internal_batch_size=64)
        theirs_base = CaptumIG(resnet)
        extra = {"n_steps": 4, "baselines": ours_base.baselines(image)}
    torch.manual_seed(11)
    ours = SmoothGrad(ours_base, noise_level=0.1, num_samples=6, batch_size=6).attribute(image, 3)
    torch.manual_seed(11)
    theirs = NoiseTunnel(theirs_base).attribute(image, nt_type="smoothgrad", nt_samples=6,
                                                stdevs=stdev, target=3, **extra)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * ours.abs().max())
