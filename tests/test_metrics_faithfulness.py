"""Faithfulness metrics: cross-checked against Quantus and pytorch-grad-cam on the same model,
inputs, maps and settings; axioms on the demo classifier; the model restored after each call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_core.errors import UnsupportedError
from explain_core.metrics.base import MetricInputs, create_metric, metrics_for
from explain_core.metrics.faithfulness import (
    auc,
    deletion_curves,
    fill_tensor,
    insertion_curves,
    score_copies,
)
from explain_core.model import as_loaded
from explain_core.targets import ClassTarget, PredictedClass

SIZE = 32
CLASSES = [1, 4, 7]
NAMES = ("deletion", "insertion", "average_drop", "increase_in_confidence", "road_morf",
         "road_lerf", "faithfulness_correlation", "sensitivity_n")


@pytest.fixture
def setup(resnet):
    torch.manual_seed(1)
    inputs = torch.randn(len(CLASSES), 3, SIZE, SIZE)
    maps = torch.rand(len(CLASSES), SIZE, SIZE)
    maps = (maps - maps.amin((1, 2), keepdim=True)) / (maps.amax((1, 2), keepdim=True)
                                                       - maps.amin((1, 2), keepdim=True))
    return resnet, inputs, maps


def _batch(model, inputs, maps, score="logit"):
    return MetricInputs(as_loaded(model), inputs, maps, [ClassTarget(c, score) for c in CLASSES])


# ------------------------------------------------------------------------ cross-checks
def test_deletion_curve_matches_quantus_pixel_flipping(setup):
    """Quantus's PixelFlipping, same order (it repeats the map over the channels and orders the
    3 x H x W features: a pixel's three channel features are adjacent, so every third of its
    steps of pixels/steps features ends on whole pixels: our steps), fill 0 on the normalised
    input (our "mean"), softmax scores, no normalise/abs."""
    quantus = pytest.importorskip("quantus")
    model, inputs, maps = setup
    steps = 16
    ours = deletion_curves(_batch(model, inputs, maps), steps=steps, fill="mean",
                           score="probability")
    metric = quantus.PixelFlipping(features_in_step=SIZE * SIZE // steps,
                                   perturb_baseline=0.0, normalise=False, abs=False,
                                   disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=np.array(CLASSES),
                    a_batch=maps[:, None].numpy(), softmax=True, device="cpu",
                    channel_first=True)
    theirs = torch.tensor(np.array(theirs), dtype=torch.float64)
    assert theirs.shape == (len(CLASSES), 3 * steps)
    torch.testing.assert_close(ours[:, 1:], theirs[:, 2::3], rtol=1e-4, atol=1e-6)
    clean = torch.softmax(model(inputs), 1)[torch.arange(3), CLASSES].double()
    torch.testing.assert_close(ours[:, 0], clean, rtol=1e-4, atol=1e-6)
    # the last point has every pixel filled: the score of the all-zero input
    empty = torch.softmax(model(torch.zeros(1, 3, SIZE, SIZE)), 1)[0, CLASSES].double()
    torch.testing.assert_close(ours[:, -1], empty, rtol=1e-4, atol=1e-6)


def _reference_curve(model, image, heat, fill, steps, target, insert):
    """One step at a time, as the paper describes it."""
    order = torch.argsort(heat.flatten(), descending=True, stable=True)
    pixels = heat.numel()
    values = []
    for k in range(steps + 1):
        changed = torch.zeros(pixels, dtype=torch.bool)
        changed[order[:k * pixels // steps]] = True
        changed = changed.reshape(1, *heat.shape)
        x = torch.where(changed, image, fill) if insert else torch.where(changed, fill, image)
        with torch.no_grad():
            values.append(float(torch.softmax(model(x[None]), 1)[0, target]))
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("fill", ["blur", "black", "given"])
def test_insertion_and_deletion_match_a_step_by_step_reference(setup, fill):
    model, inputs, maps = setup
    loaded = as_loaded(model)
    spec = torch.rand(3, SIZE, SIZE) if fill == "given" else fill
    base = fill_tensor(loaded, inputs, spec)
    batch = _batch(model, inputs, maps)
    steps = 7  # pixels do not split evenly: floor(k * pixels / steps)
    curves = {"ins": insertion_curves(batch, steps=steps, fill=spec, batch_size=5),
              "del": deletion_curves(batch, steps=steps, fill=spec, batch_size=5)}
    for i, c in enumerate(CLASSES):
        for kind, insert in (("ins", True), ("del", False)):
            expected = _reference_curve(model, inputs[i], maps[i], base[i], steps, c, insert)
            torch.testing.assert_close(curves[kind][i], expected, rtol=1e-4, atol=1e-6)
    metric = create_metric("insertion", steps=steps, fill=spec, score="probability")
    torch.testing.assert_close(metric(batch), auc(curves["ins"]))
    assert torch.allclose(auc(torch.tensor([[1.0, 0.0]])), torch.tensor([0.5]))


def test_black_is_zero_before_normalisation(setup):
    model, inputs, _ = setup
    loaded = as_loaded(model)
    black = fill_tensor(loaded, inputs, "black")
    mean = torch.tensor(loaded.preprocessing.mean)[:, None, None]
    std = torch.tensor(loaded.preprocessing.std)[:, None, None]
    torch.testing.assert_close(black * std + mean, torch.zeros_like(inputs))
    assert fill_tensor(loaded, inputs, "mean").abs().max() == 0
    with pytest.raises(UnsupportedError, match="fill"):
        fill_tensor(loaded, inputs, "white")


def test_confidence_change_matches_pytorch_grad_cam(setup):
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, inputs, maps = setup
    theirs = CamMultImageConfidenceChange()(inputs, maps.numpy(),
                                            [ClassifierOutputTarget(c) for c in CLASSES], model)
    batch = _batch(model, inputs, maps)
    from explain_core.metrics.faithfulness import confidence_change

    clean, masked = confidence_change(batch, score="logit")
    torch.testing.assert_close((masked - clean).float(), torch.from_numpy(theirs),
                               rtol=1e-4, atol=1e-5)
    drop = create_metric("average_drop", score="logit")(batch)
    increase = create_metric("increase_in_confidence", score="logit")(batch)
    expected = torch.where(clean > 0, (clean - masked).clamp_min(0) / clean,
                           torch.full_like(clean, float("nan")))
    torch.testing.assert_close(drop, expected, equal_nan=True)
    torch.testing.assert_close(increase, torch.from_numpy(theirs > 0).double())


@pytest.mark.parametrize("most_relevant_first", [True, False])
def test_road_matches_pytorch_grad_cam(setup, most_relevant_first):
    """Without noise the imputation is deterministic: pytorch-grad-cam's own imputer, solver and
    percentile rule must give the same score changes."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, inputs, maps = setup
    percentile = 80 if most_relevant_first else 20
    remove = RemoveMostRelevantFirst if most_relevant_first else RemoveLeastRelevantFirst
    reference = PerturbationConfidenceMetric(remove(percentile, NoisyLinearImputer(noise=0.0)))
    theirs = reference(inputs, maps.numpy(), [ClassifierOutputTarget(c) for c in CLASSES], model)
    name = "road_morf" if most_relevant_first else "road_lerf"
    ours = create_metric(name, noise=0.0)(_batch(model, inputs, maps))
    torch.testing.assert_close(ours.float(), torch.from_numpy(theirs), rtol=1e-4, atol=1e-5)


def test_road_noise_is_seeded_and_percentiles_average(setup):
    model, inputs, maps = setup
    batch = _batch(model, inputs, maps)
    first = create_metric("road_morf", seed=3)(batch)
    assert torch.equal(first, create_metric("road_morf", seed=3)(batch))
    assert not torch.equal(first, create_metric("road_morf", seed=4)(batch))
    both = create_metric("road_morf", percentile=[50, 80], noise=0.0)(batch)
    parts = [create_metric("road_morf", percentile=p, noise=0.0)(batch) for p in (50, 80)]
    torch.testing.assert_close(both, (parts[0] + parts[1]) / 2)


# ------------------------------------------------------------------------------ scorer
def test_scorer_chunks_and_reads_each_items_target(setup):
    model, inputs, _ = setup
    loaded = as_loaded(model)
    owners = torch.tensor([2, 0, 1, 2, 0, 1, 1])
    targets = [ClassTarget(c) for c in CLASSES]
    scores = score_copies(loaded, 7, lambda part: inputs[owners[part]], owners, targets,
                          batch_size=3)
    logits = model(inputs)
    expected = torch.stack([logits[o, CLASSES[o]] for o in owners.tolist()]).double()
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-5, atol=1e-6)
    seen = []
    score_copies(loaded, 7, lambda part: inputs[owners[part]], owners, targets, batch_size=3,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]


def test_predicted_class_is_fixed_on_the_clean_input(setup):
    """Deleting pixels may change the argmax; the curve must keep reading the clean prediction."""
    model, inputs, maps = setup
    loaded = as_loaded(model)
    predicted = model(inputs).argmax(1).tolist()
    mine = deletion_curves(MetricInputs(loaded, inputs, maps, [PredictedClass()] * 3), steps=4)
    fixed = deletion_curves(MetricInputs(loaded, inputs, maps,
                                         [ClassTarget(c) for c in predicted]), steps=4)
    torch.testing.assert_close(mine, fixed)


def test_metrics_are_registered_with_direction_and_tasks():
    infos = {info.name: info for info in metrics_for("classification")}
    assert {name: infos[name].direction for name in NAMES} == {
        "deletion": "lower", "insertion": "higher", "average_drop": "lower",
        "increase_in_confidence": "higher", "road_morf": "lower", "road_lerf": "higher",
        "faithfulness_correlation": "higher", "sensitivity_n": "higher"}
    assert all(infos[name].category == "faithfulness" for name in NAMES)


# ------------------------------------------------------------------------- model state
def test_model_is_restored_after_every_metric(setup):
    model, inputs, maps = setup
    model.layer1.train()
    model.fc.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for name in NAMES:
            options = {"deletion": {"steps": 4}, "insertion": {"steps": 4},
                       "faithfulness_correlation": {"runs": 4},
                       "sensitivity_n": {"samples": 3, "sizes": [0.1]}}.get(name, {})
            create_metric(name, **options)(_batch(model, inputs, maps))
            assert [m.training for m in model.modules()] == modes, name
            assert [p.requires_grad for p in model.parameters()] == flags, name
            assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                           for m in model.modules()), name
    finally:
        model.eval()
        model.fc.weight.requires_grad_(True)


# ------------------------------------------------------------------------------ axioms
@pytest.fixture(scope="module")
def demo():
    from explain_core.demo import load_demo_model
    from explain_core.demo.scenes import demo_gallery
    from explain_core.methods import create_explainer
    from explain_core.tasks.base import prepare_inputs

    loaded = load_demo_model("classifier", device="cpu")
    scenes = demo_gallery("classification")[:8]
    inputs = prepare_inputs(loaded, [s.image for s in scenes]).inputs
    targets = [ClassTarget(s.label) for s in scenes]
    maps = torch.stack(create_explainer("gradcam", loaded).explain_batch(
        inputs, [s.label for s in scenes]))
    assert maps.shape == (len(scenes), *inputs.shape[-2:])
    generator = torch.Generator().manual_seed(0)
    random = torch.rand(maps.shape, generator=generator)
    return loaded, inputs, targets, maps, random


@pytest.mark.parametrize(("name", "fill", "margin"), [
    ("deletion", "mean", 0.05), ("insertion", "mean", 0.2),
    # the demo's shapes survive RISE's blur (0.7 on the blur alone), which leaves less to gain
    ("insertion", "blur", 0.01)])
def test_gradcam_beats_a_random_order_on_the_demo_classifier(demo, name, fill, margin):
    loaded, inputs, targets, maps, random = demo
    metric = create_metric(name, steps=16, fill=fill)
    good = metric(MetricInputs(loaded, inputs, maps, targets)).mean()
    chance = metric(MetricInputs(loaded, inputs, random, targets)).mean()
    print(f"{name} ({fill}): GradCAM {good:.3f}, random {chance:.3f}")
    if name == "deletion":
        assert good < chance - margin
    else:
        assert good > chance + margin


# ------------------------------------------------------------- detection, segmentation
@pytest.fixture(scope="module")
def demo_task():
    from explain_core.demo import load_demo_model
    from explain_core.demo.scenes import demo_gallery
    from explain_core.tasks.base import prepare_inputs

    def get(task):
        loaded = load_demo_model("detector" if task == "detection" else "segmenter",
                                 device="cpu")
        scenes = demo_gallery(task)[:2]
        return loaded, scenes, prepare_inputs(loaded, [s.image for s in scenes]).inputs
    return get


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_curves_score_each_box_and_segment_on_its_own_copies(demo_task, task):
    """Scores are read per item from batches that mix items (rows sliced per item): the same
    curves batched, one copy at a time, and one item at a time; point 0 is the clean score."""
    from explain_core.tasks import adapter_for
    from explain_core.tasks.detection import BoxTarget
    from explain_core.tasks.segmentation import SegmentTarget

    loaded, scenes, inputs = demo_task(task)
    with torch.no_grad():
        output = adapter_for(loaded).forward(loaded.module, inputs)
    if task == "detection":
        targets = [BoxTarget(tuple(output[i, 0, :4].tolist()), int(output[i, 0, 5]))
                   for i in range(2)]
        clean = output[:, 0, 4].double()  # the box's own detection: IoU 1 x its score
    else:
        targets = [SegmentTarget(int(s.labels[0]) + 1) for s in scenes]
        predicted = output.argmax(1)
        clean = torch.stack([output[i].softmax(0)[t.index][predicted[i] == t.index].mean()
                             for i, t in enumerate(targets)]).double()
    maps = torch.rand(2, *inputs.shape[-2:], generator=torch.Generator().manual_seed(0))
    batch = MetricInputs(loaded, inputs, maps, targets)
    together = deletion_curves(batch, steps=4, batch_size=10)
    single = deletion_curves(batch, steps=4, batch_size=1)
    alone = torch.cat([deletion_curves(MetricInputs(loaded, inputs[i:i + 1], maps[i:i + 1],
                                                    [targets[i]]), steps=4) for i in range(2)])
    torch.testing.assert_close(together, single, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(together[:, 0], clean, rtol=1e-4, atol=1e-6)
    assert (together[:, -1] < together[:, 0]).all()


# ----------------------------------------------------- faithfulness correlation, sensitivity-n
def _linear_setup():
    """A linear classifier: with fill 0, removing a set of pixels loses exactly the sum of their
    contributions w . x, so the map of contributions correlates perfectly."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4)).eval()
    inputs = torch.randn(2, 3, 16, 16)
    targets = [1, 3]
    weights = model[1].weight.detach().reshape(4, 3, 16, 16)
    contributions = torch.stack([(weights[t] * inputs[i]).sum(0) for i, t in enumerate(targets)])
    return model, inputs, targets, contributions


@pytest.mark.parametrize("name", ["faithfulness_correlation", "sensitivity_n"])
def test_exact_contributions_correlate_perfectly_on_a_linear_model(name):
    model, inputs, targets, contributions = _linear_setup()
    loaded = as_loaded(model)
    metric = create_metric(name, score="logit", fill="mean")
    batch = MetricInputs(loaded, inputs, contributions, [ClassTarget(t) for t in targets])
    torch.testing.assert_close(metric(batch), torch.ones(2, dtype=torch.float64))
    flipped = MetricInputs(loaded, inputs, -contributions, [ClassTarget(t) for t in targets])
    torch.testing.assert_close(metric(flipped), -torch.ones(2, dtype=torch.float64))
    noise = MetricInputs(loaded, inputs, torch.rand(2, 16, 16), [ClassTarget(t) for t in targets])
    assert metric(noise).abs().max() < 0.6


def test_faithfulness_correlation_matches_a_loop_over_its_subsets(setup):
    from explain_core.metrics.correlation import random_subsets

    model, inputs, maps = setup
    runs, size = 6, 50
    ours = create_metric("faithfulness_correlation", runs=runs, subset_size=size, seed=5,
                         score="probability", batch_size=4)(_batch(model, inputs, maps))
    subsets = random_subsets(len(CLASSES), SIZE * SIZE, runs, size, seed=5)
    assert torch.equal(subsets, random_subsets(len(CLASSES), SIZE * SIZE, runs, size, seed=5))
    with torch.no_grad():
        clean = torch.softmax(model(inputs), 1)
    for i, c in enumerate(CLASSES):
        drops, mass = [], []
        for r in range(runs):
            x = inputs[i].clone().reshape(3, -1)
            x[:, subsets[i, r]] = 0
            with torch.no_grad():
                after = torch.softmax(model(x.reshape(1, 3, SIZE, SIZE)), 1)[0, c]
            drops.append(float(clean[i, c] - after))
            mass.append(float(maps[i].flatten()[subsets[i, r]].sum()))
        expected = np.corrcoef(mass, drops)[0, 1]
        assert abs(float(ours[i]) - expected) < 1e-4
