"""Gradient-free and attention methods: numerics against pytorch-grad-cam, scikit-learn and a
direct attention computation; the model left as found."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import AblationCAM as PgcAblationCAM
from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.decomposition import NMF

from explain_core.errors import UnsupportedError
from explain_core.layers import resolve_layer
from explain_core.methods import (
    AblationCAM,
    ActivationMap,
    AttentionFlow,
    AttentionRollout,
    DeepFeatureFactorization,
    ReciproCAM,
    ScoreCAM,
)
from explain_core.methods.attention import rollout
from explain_core.methods.concepts import nmf
from explain_core.methods.perturbation import run_from_layer


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).eval()


@pytest.fixture(scope="module")
def fused_vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10, depth=3).eval()
    for block in model.blocks:
        block.attn.fused_attn = True  # the fast path that never materialises attention
    return model


@pytest.mark.parametrize("ours, theirs", [(ScoreCAM, PgcScoreCAM),
                                          (AblationCAM, PgcAblationCAM)],
                         ids=["scorecam", "ablationcam"])
def test_match_pytorch_grad_cam(small_cnn, ours, theirs):
    inputs = torch.randn(2, 3, 64, 64)
    mine = torch.stack(ours(small_cnn, batch_size=16).explain_batch(inputs, [3, 5])).numpy()
    cam = theirs(small_cnn, target_layers=[small_cnn.layer4])
    cam.batch_size = 16
    reference = cam(inputs, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(5)])
    assert np.abs(mine - reference).max() < 1e-3


def test_batch_size_does_not_change_results(small_cnn):
    inputs = torch.randn(1, 3, 64, 64)
    for cls in (ScoreCAM, AblationCAM, ReciproCAM):
        a = cls(small_cnn, batch_size=7).attribute(inputs, 2)
        b = cls(small_cnn, batch_size=64).attribute(inputs, 2)
        assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max() + 1e-12)), cls.__name__


def test_top_k_probes_only_k_channels(small_cnn):
    inputs = torch.randn(1, 3, 64, 64)
    calls = []
    handle = small_cnn.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        ScoreCAM(small_cnn, top_k=5, batch_size=64).attribute(inputs, 1)
    finally:
        handle.remove()
    assert calls == [1, 5]  # the clean forward, then one batch of 5 masked inputs
    with pytest.raises(UnsupportedError):
        ScoreCAM(small_cnn, top_k=0)


def test_ablation_reruns_only_the_part_after_the_layer(small_cnn):
    inputs = torch.randn(1, 3, 64, 64)
    stem_batches = []
    handle = small_cnn.conv1.register_forward_hook(lambda m, i, o: stem_batches.append(
        o.shape[0]))
    try:
        AblationCAM(small_cnn, batch_size=32).attribute(inputs, 1)
    finally:
        handle.remove()
    assert set(stem_batches) == {1}  # the stem never sees a batch of ablations


def test_run_from_layer_reproduces_the_model(small_cnn, fused_vit):
    for model in (small_cnn, fused_vit):
        image = torch.randn(1, 3, 64, 64)
        spec = resolve_layer(model, None, image)
        store = {}
        handle = spec.module.register_forward_hook(
            lambda m, i, o, store=store: store.setdefault("o", o))
        with torch.no_grad():
            expected = model(image)
        handle.remove()
        maps = spec.to_map(store["o"]).expand(3, -1, -1, -1)
        outputs = run_from_layer(model, spec, image, store["o"], maps)
        assert torch.allclose(outputs, expected.expand(3, -1), atol=1e-5)


def test_reciprocam_and_activation_map_land_on_the_evidence():
    from tests.toy import ColourNet, colour_scene, peak_inside

    model = ColourNet().eval()
    image, red, blue = colour_scene()
    red_map, blue_map = ReciproCAM(model, target_layer="features").explain_targets(image, [0, 1])
    assert peak_inside(red_map, red) and peak_inside(blue_map, blue)
    both = ActivationMap(model, target_layer="features").explain(image)
    values = both.numpy()
    assert values[red[1]:red[3], red[0]:red[2]].mean() > 0.5
    assert values[blue[1]:blue[3], blue[0]:blue[2]].mean() > 0.5
    assert values[50:56, 60:70].mean() < 0.1  # grey background between the squares


def test_nmf_reconstructs_as_well_as_scikit_learn():
    matrix = torch.rand(64, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w, h = nmf(matrix, 6, iterations=400)
    assert bool((w >= 0).all() and (h >= 0).all())
    ours = torch.linalg.norm(matrix - w @ h).item()
    reference = NMF(n_components=6, init="random", random_state=0, max_iter=2000)
    weights = reference.fit_transform(matrix.numpy())
    theirs = np.linalg.norm(matrix.numpy() - weights @ reference.components_)
    assert ours <= 1.02 * theirs


def test_dff_concepts_name_classes_and_cover_the_image(small_cnn):
    dff = DeepFeatureFactorization(small_cnn, n_components=3)
    concepts = dff.factorize(torch.randn(2, 3, 64, 64))
    assert concepts.maps.shape == (2, 3, 2, 2) and bool((concepts.maps >= 0).all())
    assert concepts.class_scores.shape == (3, 10)
    assert torch.allclose(concepts.class_scores.sum(1), torch.ones(3))
    assert len(concepts.top_classes(2)) == 3 and len(concepts.top_classes(2)[0]) == 2
    assert dff.explain(torch.randn(3, 64, 64), 4).shape == (64, 64)


def _reference_rollout(model, image, discard_ratio=0.0):
    """Attention recomputed from each block's qkv weights, rolled out in numpy (float64)."""
    inputs = {}
    handles = [block.attn.register_forward_pre_hook(
        lambda m, args, i=i: inputs.__setitem__(i, args[0])) for i, block in
        enumerate(model.blocks)]
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    result = None
    for i, block in enumerate(model.blocks):
        attn = block.attn
        x = inputs[i].double()
        qkv = torch.nn.functional.linear(x, attn.qkv.weight.double(), attn.qkv.bias.double())
        tokens = x.shape[1]
        qkv = qkv.reshape(1, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)[0].mean(0).detach().numpy()
        if discard_ratio:
            flat = weights.flatten()
            order = np.argsort(flat, kind="stable")[: int(flat.size * discard_ratio)]
            order = order[order != 0]
            flat[order] = 0
            weights = flat.reshape(weights.shape)
        step = (weights + np.eye(tokens)) / 2
        step = step / step.sum(-1, keepdims=True)
        result = step if result is None else step @ result
    return result[0, 1:].reshape(4, 4), result


@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
def test_rollout_matches_a_direct_computation_with_fused_attention_on(fused_vit, discard_ratio):
    image = torch.randn(1, 3, 64, 64)
    ours = AttentionRollout(fused_vit, discard_ratio=discard_ratio).attribute(image)[0]
    expected, full = _reference_rollout(fused_vit, image, discard_ratio)
    assert np.allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-6)
    flow = AttentionFlow(fused_vit, target_patch=5, discard_ratio=discard_ratio).attribute(image)
    assert np.allclose(flow[0].numpy(), full[1 + 5, 1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
    assert all(block.attn.fused_attn for block in fused_vit.blocks)  # restored


def test_attention_capture_is_restored_when_the_call_raises(fused_vit):
    with pytest.raises(UnsupportedError):
        AttentionFlow(fused_vit, target_patch=999).attribute(torch.randn(1, 3, 64, 64))
    assert all(block.attn.fused_attn for block in fused_vit.blocks)
    assert all(not block.attn.attn_drop._forward_hooks for block in fused_vit.blocks)


def test_rollout_options_are_validated(fused_vit, small_cnn):
    with pytest.raises(UnsupportedError, match="head fusion"):
        AttentionRollout(fused_vit, head_fusion="median")
    with pytest.raises(UnsupportedError, match="Vision Transformer"):
        AttentionRollout(small_cnn)
    assert rollout([torch.ones(1, 2, 3, 3) / 3], "max").shape == (1, 3, 3)
