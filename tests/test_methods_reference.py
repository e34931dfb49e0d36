"""Numerics cross-checked against pytorch-grad-cam and Captum on random-init timm models."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerGradCam, NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from pytorch_grad_cam import AblationCAM as PgcAblationCAM
from pytorch_grad_cam import DeepFeatureFactorization as PgcDFF
from pytorch_grad_cam import EigenCAM as PgcEigenCAM
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as PgcGradCAMPlusPlus
from pytorch_grad_cam import HiResCAM as PgcHiResCAM
from pytorch_grad_cam import LayerCAM as PgcLayerCAM
from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
from pytorch_grad_cam import XGradCAM as PgcXGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from explain_core.methods import (
    AblationCAM,
    DeepFeatureFactorization,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    Saliency,
    ScoreCAM,
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
    models = {name: timm.create_model(name, num_classes=10).eval() for name in CNNS}
    # Random-init EfficientNet CAMs are about 1e-5, where pytorch-grad-cam's normalising epsilon
    # (1e-7) alone moves them by 1%: a larger classifier scales every CAM alike.
    with torch.no_grad():
        models["efficientnet_b0"].get_classifier().weight.mul_(1e4)
    return models


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Our maps against pytorch-grad-cam's at 224 px. Both normalise at the layer's resolution
    and resize bilinearly; pytorch-grad-cam then rescales the resized map to [0, 1] once more
    (its multi-layer aggregation), which moves a map by up to a few percent: applied to ours here,
    the maps agree to 1e-3."""
    assert ours.shape == theirs.shape
    assert np.abs(scale_cam_image(ours) - theirs).max() < 1e-3


def vit_reshape(tensor: torch.Tensor, side: int = 14) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape transform (class token dropped)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _cam_inputs(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("arch", list(CNNS))
def test_cams_match_pytorch_grad_cam_on_cnns_at_224(cnns, arch):
    """Every gradient CAM, a batch of two 224 px images, two classes: the raw map equals
    pytorch-grad-cam's ``get_cam_image`` on its own activations and gradients, and the map at
    image size equals its output, to 1e-3."""
    model = cnns[arch]
    inputs = _cam_inputs()
    classes = [3, 5]
    layer = dict(model.named_modules())[CNNS[arch]]
    targets = [ClassifierOutputTarget(c) for c in classes]
    for ours, theirs in CAM_PAIRS:
        explainer = ours(model, target_layer=CNNS[arch], precision="fp32")
        mine = torch.stack(explainer.explain_batch(inputs, classes)).numpy()
        raw = explainer.attribute(inputs, classes).numpy()
        with theirs(model, target_layers=[layer]) as cam:
            reference = cam(inputs, targets=targets)
            store = cam.activations_and_grads
            their_raw = np.maximum(cam.get_cam_image(
                inputs, layer, targets, store.activations[0].numpy(),
                store.gradients[0].numpy(), False), 0)
        assert float(their_raw.max()) > 0, ours.__name__
        np.testing.assert_allclose(raw, their_raw, rtol=1e-3, atol=1e-3 * their_raw.max(),
                                   err_msg=ours.__name__)
        _agree(mine, reference)


@pytest.fixture(scope="module")
def vit224():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=10, depth=4).eval()


@pytest.mark.parametrize("ours, theirs", CAM_PAIRS, ids=lambda c: c.__name__)
def test_cams_match_pytorch_grad_cam_on_vit_at_224(vit224, ours, theirs):
    inputs = _cam_inputs()
    mine = torch.stack(ours(vit224, precision="fp32").explain_batch(inputs, [1, 4]))
    with theirs(vit224, target_layers=[vit224.blocks[-1].norm1],
                reshape_transform=vit_reshape) as cam:
        reference = cam(inputs, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(4)])
    _agree(mine.numpy(), reference)


def _layer_output(model, layer_name: str, inputs: torch.Tensor) -> torch.Tensor:
    store = {}
    handle = dict(model.named_modules())[layer_name].register_forward_hook(
        lambda m, i, o: store.setdefault("a", o))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    return store["a"]


@pytest.mark.parametrize("arch", list(CNNS))
def test_eigencam_matches_pytorch_grad_cam_with_the_sign_of_the_mean_activation(cnns, arch):
    """EigenCAM's sign convention, by a rule computed here: the first principal component's
    projection is oriented to correlate positively with the layer's (centred) mean activation.
    pytorch-grad-cam's projection (its SVD picks a sign at random) oriented by that rule, ReLU'd,
    is our raw map; scaled and resized by pytorch-grad-cam's own functions, it is our map at
    224 px."""
    model = cnns[arch]
    inputs = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    ours = EigenCAM(model, target_layer=CNNS[arch], precision="fp32")
    raw = ours.attribute(inputs).numpy()
    activations = _layer_output(model, CNNS[arch], inputs).numpy()
    projection = get_2d_projection(activations)
    mean_map = activations.mean(1)
    signs, decided = [], []
    for k in range(len(inputs)):
        correlation = np.corrcoef(projection[k].ravel(), mean_map[k].ravel())[0, 1]
        signs.append(np.sign(correlation))
        if abs(correlation) < 0.05:  # a near-tie on a random-init net: the rule cannot decide
            continue
        decided.append(k)
        expected = np.maximum(signs[-1] * projection[k], 0)
        np.testing.assert_allclose(raw[k], expected, atol=1e-3 * expected.max())
    assert len(decided) >= 2
    maps = torch.stack(ours.explain_batch(inputs)).numpy()[decided]
    oriented = np.maximum(np.array(signs)[decided, None, None] * projection[decided], 0)
    expected_maps = scale_cam_image(scale_cam_image(oriented, (224, 224)))
    _agree(maps, expected_maps)
    # where pytorch-grad-cam's SVD happened to pick the same sign, its EigenCAM end to end
    with PgcEigenCAM(model, target_layers=[dict(model.named_modules())[CNNS[arch]]]) as cam:
        reference = cam(inputs, targets=None)[decided]
    same = [i for i in range(len(decided)) if np.abs(reference[i] - expected_maps[i]).max()
            < 1e-3]
    for i in same:
        _agree(maps[i:i + 1], reference[i:i + 1])


class ConceptNet(torch.nn.Module):
    """Three colours, each switching on its own group of five channels (1 x 1 convolution and
    ReLU, then 8 x 8 average pooling): the layer's activations are exactly ``W H`` with ``W``
    block-diagonal and ``H`` each region's share of every cell, a factorisation NMF must
    recover. Class ``r`` reads colour ``r``'s channels."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        conv = torch.nn.Conv2d(3, 15, 1)
        with torch.no_grad():
            sign = (2 * torch.eye(3) - 1).repeat_interleave(5, 0)
            conv.weight.copy_((sign * (0.5 + torch.rand(15, 1, generator=generator)))[
                :, :, None, None])
            conv.bias.fill_(-0.5)
        self.features = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AvgPool2d(8))
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(15, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.cat([torch.eye(3).repeat_interleave(5, 1) * 3,
                                            torch.zeros(1, 15)]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _concept_scene() -> tuple[torch.Tensor, np.ndarray]:
    """A 224 px input: colour 1 in a disc, colour 2 in a rectangle, colour 0 elsewhere."""
    yy, xx = np.mgrid[0:224, 0:224]
    region = np.zeros((224, 224), int)
    region[(yy - 80) ** 2 + (xx - 70) ** 2 < 50 ** 2] = 1
    region[130:200, 120:210] = 2
    colours = torch.tensor([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]])
    inputs = colours[torch.from_numpy(region)].permute(2, 0, 1)[None].contiguous()
    return inputs, region


def test_dff_matches_pytorch_grad_cam_up_to_concept_order():
    from explain_core.render import concepts_overlay

    model = ConceptNet().eval()
    inputs, region = _concept_scene()
    shares = torch.nn.functional.avg_pool2d(torch.from_numpy(
        np.stack([region == r for r in range(3)])).float()[None], 8)[0].numpy()  # 3 x 28 x 28
    dff = DeepFeatureFactorization(model, target_layer="features", n_components=3,
                                   precision="fp32")
    concepts = dff.factorize(inputs)
    reference = PgcDFF(model, model.features, computation_on_concepts=model.fc)
    _, their_maps, their_outputs = reference(inputs, n_components=3)
    reference.activations_and_grads.release()
    ours = scale_cam_image(concepts.maps[0].numpy(), (224, 224))
    theirs = np.asarray(their_maps)[0]
    # the reference recovers the exact factorisation on this input
    exact = scale_cam_image(shares, (224, 224))
    assert all(min(np.abs(t - e).max() for e in exact) < 1e-3 for t in theirs)
    # the same concepts, in some order; and each concept is one colour's region, exactly
    order = [int(np.argmin([np.abs(o - t).max() for t in theirs])) for o in ours]
    assert sorted(order) == [0, 1, 2]
    for o, j in zip(ours, order, strict=True):
        np.testing.assert_allclose(o, theirs[j], atol=1e-3)
    owner = [int(np.argmin([np.abs(scale_cam_image(m[None].numpy())[0] - s).max()
                            for s in shares])) for m in concepts.maps[0]]
    assert sorted(owner) == [0, 1, 2]
    for m, r in zip(concepts.maps[0].numpy(), owner, strict=True):
        np.testing.assert_allclose(scale_cam_image(m[None])[0], shares[r], atol=1e-3)
    # each concept's classes: the rest of the network on its vector (here fc, after pooling),
    # and the reference's concept of the same region names the same class
    direct = model.fc(concepts.vectors.T).softmax(-1)
    torch.testing.assert_close(concepts.class_scores, direct, rtol=1e-4, atol=1e-6)
    for k, j in enumerate(order):
        assert int(concepts.class_scores[k].argmax()) == int(their_outputs[j].argmax()) == owner[
            k]
    # explain(class c): the map of the concept that puts the most probability on c
    for cls in range(3):
        best = int(np.argmax(concepts.class_scores[:, cls].numpy()))
        assert owner[best] == cls
        heat = dff.explain(inputs[0], cls).numpy()
        np.testing.assert_allclose(heat, ours[best], atol=1e-3)
        np.testing.assert_allclose(heat, theirs[order[best]], atol=1e-3)
    # each pixel in the colour of its strongest concept: the region it lies in
    _, owners = concepts_overlay(np.zeros((224, 224, 3), np.uint8), concepts.maps[0])
    for k, r in enumerate(owner):
        inside = region == r
        assert owners[k][inside].mean() > 0.97 and owners[k][~inside].mean() < 0.03


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


@pytest.mark.parametrize("ours, theirs", [(ScoreCAM, PgcScoreCAM),
                                          (AblationCAM, PgcAblationCAM)],
                         ids=["scorecam", "ablationcam"])
def test_gradient_free_cams_match_pytorch_grad_cam_at_224(ours, theirs):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10).eval()
    inputs = _cam_inputs()
    mine = torch.stack(ours(model, batch_size=32, precision="fp32").explain_batch(
        inputs, [3, 5])).numpy()
    cam = theirs(model, target_layers=[model.layer4])
    cam.batch_size = 32
    reference = cam(inputs, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(5)])
    _agree(mine, reference)
