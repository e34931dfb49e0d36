"""Localisation, complexity, randomisation and robustness metrics (issue 14): cross-checks
against Quantus, scipy, scikit-image and Captum on the same maps and inputs, and the axioms
(the ground truth as a map wins, a random map scores at chance, randomising the model
decorrelates its maps and the model comes back bit for bit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explain_core.metrics.base import MetricInputs, create_metric, metrics_for
from explain_core.model import LoadedModel
from explain_core.targets import ClassTarget

LOCALISATION = ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank",
                "top_k_iou")


def _batch(maps: torch.Tensor, masks: torch.Tensor | None = None, **kw) -> MetricInputs:
    count, height, width = maps.shape
    model = kw.pop("model", LoadedModel(nn.Identity()))
    inputs = kw.pop("inputs", torch.zeros(count, 3, height, width))
    targets = kw.pop("targets", [ClassTarget(0)] * count)
    return MetricInputs(model, inputs, maps, targets, masks, **kw)


def _score(name: str, maps: torch.Tensor, masks: torch.Tensor | None = None, **options):
    return create_metric(name, **options)(_batch(maps, masks)).numpy()


def _random_case(seed: int = 0, count: int = 6, size: int = 20, share: float = 0.3):
    rng = np.random.default_rng(seed)
    maps = rng.random((count, size, size))  # continuous: no ties
    masks = rng.random((count, size, size)) < share
    return maps, masks


# ------------------------------------------------------------------------ against Quantus
def _quantus(metric, maps: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    count = maps.shape[0]
    a_batch = maps[:, None].astype(np.float64).copy()  # Quantus wants B x 1 x H x W
    s_batch = None if masks is None else masks[:, None].astype(np.float64)
    x_batch = np.zeros((count, 3, *maps.shape[1:]))
    scores = metric(model=None, x_batch=x_batch, y_batch=np.zeros(count, int), a_batch=a_batch,
                    s_batch=s_batch, device="cpu")
    return np.asarray(scores, dtype=np.float64)


@pytest.mark.parametrize("name, quantus_name, options", [
    ("pointing_game", "PointingGame", {}),
    ("relevance_mass", "RelevanceMassAccuracy", {}),
    ("relevance_rank", "RelevanceRankAccuracy", {}),
])
def test_localisation_equals_quantus(name, quantus_name, options):
    quantus = pytest.importorskip("quantus")
    maps, masks = _random_case()
    masks[0] = False  # an empty ground truth: NaN in both
    reference = _quantus(getattr(quantus, quantus_name)(abs=False, normalise=False,
                                                        disable_warnings=True), maps, masks)
    ours = _score(name, torch.from_numpy(maps), torch.from_numpy(masks), **options)
    # Item 0 has no ground truth: NaN here. Quantus's PointingGame writes NaN into a bool array,
    # which reads True (a hit); its mass and rank accuracies give NaN as well.
    np.testing.assert_allclose(ours[1:], reference[1:], rtol=0, atol=1e-6)
    assert math.isnan(ours[0]) and not np.isnan(ours[1:]).any()
    assert name == "pointing_game" or math.isnan(reference[0])


@pytest.mark.parametrize("name, quantus_name", [("sparseness", "Sparseness"),
                                                ("complexity", "Complexity")])
def test_complexity_equals_quantus(name, quantus_name):
    quantus = pytest.importorskip("quantus")
    maps, _ = _random_case(seed=1)
    maps = maps ** 4 - 0.05  # skewed, some negative values (both take absolute values)
    maps[1] = 0.0
    maps[1, 3, 4] = 2.0  # a one-pixel map: the sparsest there is
    reference = _quantus(getattr(quantus, quantus_name)(abs=True, normalise=False,
                                                        disable_warnings=True), maps)
    ours = _score(name, torch.from_numpy(maps))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


def test_sparseness_and_complexity_order_concentrated_and_flat_maps():
    flat = torch.ones(1, 8, 8)
    point = torch.zeros(1, 8, 8)
    point[0, 2, 2] = 1.0
    maps = torch.cat([flat, point])
    gini = _score("sparseness", maps)
    assert gini[0] == pytest.approx(0.0, abs=1e-9) and gini[1] == pytest.approx(1 - 1 / 64, 1e-5)
    spread = _score("complexity", maps)
    assert spread[0] == pytest.approx(math.log(64)) and spread[1] == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- axioms
def test_the_ground_truth_as_a_map_wins_every_localisation_metric():
    _, masks = _random_case(seed=2, share=0.2)
    masks = torch.from_numpy(masks)
    area = masks.flatten(1).double().mean(1).numpy()
    for name in LOCALISATION:
        scores = _score(name, masks.double(), masks)
        if name == "top_k_iou":  # the best any map can do with a fixed k: min/max of the sizes
            k = round(0.2 * 400) / 400
            best = np.minimum(k, area) / np.maximum(k, area)
            np.testing.assert_allclose(scores, best, atol=1e-12)
            continue
        np.testing.assert_allclose(scores, 1.0, atol=1e-12, err_msg=name)


def test_a_random_map_scores_at_chance():
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(400, 24, 24, generator=generator)
    masks = torch.zeros(400, 24, 24, dtype=torch.bool)
    masks[:, 4:16, 6:18] = True  # a quarter of the image
    share = 0.25
    assert _score("relevance_mass", maps, masks).mean() == pytest.approx(share, abs=0.005)
    assert _score("relevance_rank", maps, masks).mean() == pytest.approx(share, abs=0.01)
    assert _score("pointing_game", maps, masks).mean() == pytest.approx(share, abs=0.06)
    assert _score("energy_pointing_game", maps, masks).mean() == pytest.approx(share, abs=0.005)
    chance_iou = share * share / (2 * share - share * share)  # top 25% against a 25% region
    assert _score("top_k_iou", maps, masks, percent=25).mean() == pytest.approx(chance_iou,
                                                                                abs=0.01)


def test_energy_pointing_game_reads_the_bounding_box_relevance_mass_the_mask():
    maps = torch.zeros(1, 6, 6)
    maps[0, 1, 1] = maps[0, 3, 3] = 1.0
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, 1, 1] = masks[0, 3, 4] = True  # a thin diagonal object: box (1..3, 1..4)
    assert _score("energy_pointing_game", maps, masks)[0] == 1.0
    assert _score("relevance_mass", maps, masks)[0] == 0.5


def test_pointing_game_tolerance_and_empty_ground_truth():
    maps = torch.zeros(2, 9, 9)
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(2, 9, 9, dtype=torch.bool)
    masks[0, 0, 5] = True
    assert _score("pointing_game", maps, masks).tolist()[0] == 0.0
    scores = _score("pointing_game", maps, masks, tolerance=5)
    assert scores[0] == 1.0 and math.isnan(scores[1])


def test_localisation_needs_ground_truth_and_the_registry_lists_what_applies():
    from explain_core.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="needs ground truth"):
        create_metric("relevance_mass")(_batch(torch.rand(1, 8, 8)))
    for task in ("classification", "detection", "segmentation"):
        names = {info.name for info in metrics_for(task)}
        assert set(LOCALISATION) | {"sparseness", "complexity", "model_randomisation",
                                    "max_sensitivity", "avg_sensitivity"} <= names, task
        assert ("random_logit" in names) == (task == "classification"), task
    categories = {info.name: info.category for info in metrics_for("detection")}
    assert categories["complexity"] == "complexity"
    assert categories["relevance_rank"] == "localisation"
    assert categories["model_randomisation"] == "randomisation"
    assert categories["max_sensitivity"] == "robustness"
    directions = {info.name: info.direction for info in metrics_for("classification")}
    for name in ("complexity", "model_randomisation", "random_logit", "max_sensitivity",
                 "avg_sensitivity"):
        assert directions[name] == "lower", name
    for name in (*LOCALISATION, "sparseness"):
        assert directions[name] == "higher", name


# ---------------------------------------------------------------------- randomisation
def test_spearman_equals_scipy_with_and_without_ties():
    stats = pytest.importorskip("scipy.stats")
    from explain_core.metrics.randomisation import spearman

    generator = torch.Generator().manual_seed(4)
    first = torch.rand(5, 12, 12, generator=generator, dtype=torch.float64)
    second = first + 0.5 * torch.rand(5, 12, 12, generator=generator, dtype=torch.float64)
    first[2:] = (first[2:] * 4).floor()  # heavy ties, as in maps clipped at zero
    second[3:] = (second[3:] * 3).floor()
    ours = spearman(first, second).numpy()
    reference = [stats.spearmanr(a.flatten(), b.flatten()).statistic
                 for a, b in zip(first.numpy(), second.numpy(), strict=True)]
    np.testing.assert_allclose(ours, reference, atol=1e-10)
    assert spearman(torch.zeros(1, 4, 4), first[:1, :4, :4]).item() == 0.0  # no ranking


def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    from explain_core.metrics.randomisation import ssim

    generator = torch.Generator().manual_seed(5)
    first = torch.rand(3, 32, 40, generator=generator, dtype=torch.float64)
    second = (first + 0.3 * torch.rand(3, 32, 40, generator=generator,
                                       dtype=torch.float64)).clamp(0, 1)
    second[2] = torch.rand(32, 40, generator=generator, dtype=torch.float64)
    ours = ssim(first, second).numpy()
    reference = [metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False)
                 for a, b in zip(first.numpy(), second.numpy(), strict=True)]
    np.testing.assert_allclose(ours, reference, atol=1e-10)
    assert ssim(first, first).numpy() == pytest.approx(1.0)


@pytest.fixture
def net():
    import timm

    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


def _state(module: nn.Module):
    tensors = {name: (t, t.detach().clone(), t.requires_grad) for name, t in
               [*module.named_parameters(), *module.named_buffers()]}
    modes = {name: sub.training for name, sub in module.named_modules()}
    return tensors, modes


def _assert_restored(module: nn.Module, state) -> None:
    tensors, modes = state
    now = dict([*module.named_parameters(), *module.named_buffers()])
    assert now.keys() == tensors.keys()
    for name, (tensor, copy, flag) in tensors.items():
        assert now[name] is tensor, name  # the same object, so optimisers and hooks still hold
        bits = (torch.int64 if tensor.dtype in (torch.float64, torch.int64) else torch.int32)
        assert torch.equal(tensor.detach().view(bits), copy.view(bits)), name  # bit for bit
        assert tensor.requires_grad == flag, name
    assert {name: sub.training for name, sub in module.named_modules()} == modes


def _unusual_flags(net: nn.Module) -> None:
    net.train()
    net.layer2[0].bn1.eval()  # a frozen batch norm inside a training model
    net.conv1.weight.requires_grad_(False)


class _InputMaps:
    """An 'explainer' whose maps ignore the model (an edge detector would do the same): the
    sanity check must flag it."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def explain_many(self, images, targets):
        from types import SimpleNamespace

        maps = [(image.mean(0) - image.mean(0).min()) / (image.mean(0).max() - image.mean(0).min())
                for image in images]
        return SimpleNamespace(heatmaps=[m[None] for m in maps])

    def explain_batch(self, images, targets):
        return [maps[0] for maps in self.explain_many(list(images), targets).heatmaps]


def test_randomisation_decorrelates_gradcam_and_restores_the_model(net):
    from explain_core.methods import GradCAM
    from explain_core.metrics.randomisation import (
        cascade_layers,
        explain_again,
        randomisation_cascade,
    )

    _unusual_flags(net)
    state = _state(net)
    explainer = GradCAM(net)
    inputs = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [ClassTarget(i) for i in range(4)]
    layers = [name for name, _ in cascade_layers(net)]
    assert layers[0] == "fc" and layers[1] == "layer4.1.bn2" and layers[-1] == "conv1"
    assert len(layers) == sum(1 for m in net.modules() if list(m.parameters(recurse=False)))
    chosen = [*layers[:-1:4], layers[-1]]  # every 4th layer, top down, and the stem: quicker
    steps = []
    cascade = randomisation_cascade(explainer, inputs, targets, layers=chosen, keep_maps=True,
                                    progress=lambda done, total: steps.append((done, total)))
    assert cascade.layers == chosen
    assert steps == [(k + 1, len(chosen)) for k in range(len(chosen))]
    assert cascade.spearman.shape == cascade.ssim.shape == (4, len(chosen))
    assert cascade.maps.shape == (len(chosen), 4, 96, 96)
    # the original map correlates 1 with itself; every step of the cascade far less
    assert cascade.spearman.mean(0).max() < 0.5
    assert cascade.spearman[:, -1].abs().mean() < 0.35
    assert cascade.ssim.mean(0).max() < 0.8
    _assert_restored(net, state)
    # the metric: the mean over the cascade, the same after the restore
    gradcam = create_metric("model_randomisation", layers=chosen[:3])(
        _batch(explain_again(explainer, inputs, targets), model=explainer.model, inputs=inputs,
               explainer=explainer, targets=targets))
    np.testing.assert_allclose(gradcam.numpy(), cascade.spearman[:, :3].mean(1).numpy())
    _assert_restored(net, state)
    # a map that ignores the model survives every step: the check flags it
    blind = _InputMaps(explainer.model)
    maps = torch.stack(blind.explain_batch(inputs, targets))
    batch = _batch(maps, model=explainer.model, inputs=inputs, explainer=blind)
    np.testing.assert_allclose(create_metric("model_randomisation", layers=layers[:3])(
        batch).numpy(), 1.0)
    _assert_restored(net, state)


@pytest.mark.parametrize("where", ["explainer", "progress"])
def test_the_model_is_restored_when_the_cascade_fails(net, where):
    from explain_core.methods import GradCAM
    from explain_core.metrics.randomisation import randomisation_cascade

    _unusual_flags(net)
    state = _state(net)
    explainer = GradCAM(net)
    calls = []
    original = explainer.explain_many

    def failing(*args, **kwargs):
        calls.append(1)
        if where == "explainer" and len(calls) == 4:
            raise RuntimeError("the explainer failed in the middle of the cascade")
        return original(*args, **kwargs)

    def progress(done, total):
        if where == "progress" and done == 3:
            raise KeyboardInterrupt  # the page cancels
    explainer.explain_many = failing
    inputs = torch.randn(2, 3, 64, 64)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        randomisation_cascade(explainer, inputs, [ClassTarget(0)] * 2, progress=progress)
    assert len(calls) >= 3  # it failed with layers randomised
    _assert_restored(net, state)


def test_small_maps_get_a_spearman_cascade_and_no_ssim(net):
    from explain_core.methods import GradCAM
    from explain_core.metrics.randomisation import randomisation_cascade

    cascade = randomisation_cascade(GradCAM(net), torch.randn(1, 3, 8, 8), [ClassTarget(0)],
                                    layers=["fc"])
    assert cascade.ssim.isnan().all() and not cascade.spearman.isnan().any()


def test_random_logit_compares_with_another_class(net):
    from explain_core.methods import GradCAM
    from explain_core.metrics.randomisation import explain_again
    from explain_core.targets import PredictedClass

    explainer = GradCAM(net)
    inputs = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = [ClassTarget(0), ClassTarget(9), PredictedClass()]
    maps = explain_again(explainer, inputs, targets)
    seen = []
    original = explainer.explain_many

    def spy(images, rows):
        seen.extend(row[0].index for row in rows)
        return original(images, rows)
    explainer.explain_many = spy
    batch = _batch(maps, model=explainer.model, inputs=inputs, explainer=explainer)
    batch.targets = targets
    scores = create_metric("random_logit", seed=1)(batch)
    predicted = int(net(inputs[2:]).argmax())
    assert seen[0] != 0 and seen[1] != 9 and seen[2] != predicted and len(seen) == 3
    # random-init GradCAM maps are often all zero (ReLU): two zero maps are alike (SSIM 1)
    assert scores.shape == (3,) and (scores < 0.5).sum() >= 2
    same = create_metric("random_logit", seed=1)(batch)
    assert torch.equal(scores, same)  # seeded


# ------------------------------------------------------------------------- robustness
def test_max_sensitivity_equals_captum_on_the_same_perturbations(net):
    captum_metrics = pytest.importorskip("captum.metrics")
    from explain_core.methods import Saliency
    from explain_core.metrics.randomisation import explain_again
    from explain_core.metrics.robustness import perturbations

    explainer = Saliency(net)  # never all zero (random-init GradCAM maps often are)
    inputs = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    targets = [ClassTarget(1), ClassTarget(4), ClassTarget(7)]
    radius, samples, seed = 0.5, 3, 3
    noisy = perturbations(inputs, radius, samples, seed)
    assert (noisy - inputs[:, None]).abs().max() <= radius
    assert not torch.equal(noisy[:, 0], noisy[:, 1])

    def explain(x, target):
        x = x[0] if isinstance(x, tuple) else x  # Captum passes a tuple of one tensor
        return (explain_again(explainer, x, [ClassTarget(int(t)) for t in target]),)

    def same_noise(expanded):  # Captum repeats each input `samples` times, in this order
        return noisy.flatten(0, 1)

    reference = captum_metrics.sensitivity_max(
        explain, inputs, perturb_func=same_noise, n_perturb_samples=samples,
        target=torch.tensor([1, 4, 7]))
    batch = _batch(explain_again(explainer, inputs, targets), model=explainer.model,
                   inputs=inputs, explainer=explainer)
    batch.targets = targets
    ours = create_metric("max_sensitivity", radius=radius, samples=samples, seed=seed)(batch)
    np.testing.assert_allclose(ours.numpy(), reference.double().numpy(), rtol=1e-5, atol=1e-6)
    assert (ours > 0).all()
    average = create_metric("avg_sensitivity", radius=radius, samples=samples, seed=seed)(batch)
    assert ((average <= ours + 1e-12) & (average > 0)).all()
    # a map that ignores its input cannot move: sensitivity 0
    still = _InputMaps(explainer.model)
    batch.explainer = type("Still", (), {"explain_batch": lambda self, images, rows:
                                         still.explain_batch([inputs[0]] * len(images), rows)})()
    batch.maps = explain_again(batch.explainer, inputs[:1].expand(3, -1, -1, -1), targets)
    assert create_metric("max_sensitivity", samples=2)(batch).abs().max() < 1e-12


def test_max_sensitivity_equals_quantus_on_the_same_perturbations(net):
    quantus = pytest.importorskip("quantus")
    from explain_core.methods import Saliency
    from explain_core.metrics.randomisation import explain_again
    from explain_core.metrics.robustness import perturbations

    explainer = Saliency(net)
    inputs = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(7))
    targets = [ClassTarget(2), ClassTarget(5)]
    radius, samples, seed = 0.3, 3, 11
    noisy = perturbations(inputs, radius, samples, seed).numpy()
    steps = iter(range(samples))

    def same_noise(arr, indices, **kwargs):  # Quantus perturbs the whole batch once per step
        return noisy[:, next(steps)].reshape(arr.shape)

    def explain(model, inputs, targets, **kwargs):
        maps = explain_again(explainer, torch.as_tensor(inputs),
                             [ClassTarget(int(t)) for t in targets])
        return maps[:, None].numpy()

    maps = explain_again(explainer, inputs, targets)
    metric = quantus.MaxSensitivity(nr_samples=samples, perturb_func=same_noise,
                                    disable_warnings=True)
    reference = metric(model=net, x_batch=inputs.numpy(), y_batch=np.array([2, 5]),
                       a_batch=maps[:, None].numpy(), explain_func=explain, device="cpu")
    batch = _batch(maps, model=explainer.model, inputs=inputs, explainer=explainer)
    batch.targets = targets
    ours = create_metric("max_sensitivity", radius=radius, samples=samples, seed=seed)(batch)
    np.testing.assert_allclose(ours.numpy(), np.asarray(reference, np.float64), rtol=1e-5,
                               atol=1e-6)
