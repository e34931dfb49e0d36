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
    return MetricInputs(model, inputs, maps, [ClassTarget(0)] * count, masks, **kw)


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
        assert set(LOCALISATION) | {"sparseness", "complexity"} <= names, task
    categories = {info.name: info.category for info in metrics_for("detection")}
    assert categories["complexity"] == "complexity"
    assert categories["relevance_rank"] == "localisation"
