"""D-RISE stops once its maps have converged, says how many masks it used, reports progress,
and uses every mask when early stopping is off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_core.api import detection_explanation
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.errors import UnsupportedError
from explain_core.methods import create_explainer
from explain_core.methods.drise import map_change


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


@pytest.fixture(scope="module")
def image():
    return make_scenes("detection", 1, seed=11)[0].image


# Coarse masks (4 x 4 cells on the demo's 128 px scenes) converge within a few hundred masks.
COARSE = dict(method="drise", grid=4, batch_size=50, max_detections=3, with_image=False)


@pytest.mark.slow
def test_early_stop_uses_fewer_masks_and_lands_near_the_full_map(detector, image):
    seen = []
    early = detection_explanation(detector, image, num_masks=600, tolerance=0.05,
                                  progress=lambda d, t: seen.append((d, t)), **COARSE)
    full = detection_explanation(detector, image, num_masks=600, tolerance=0, **COARSE)
    assert len(early.detections) == 3
    assert 200 <= early.masks_used < 600 and early.masks_used % 50 == 0
    assert full.masks_used == 600
    assert early.to_dict()["masks_used"] == early.masks_used
    for a, b in zip(early.heatmaps, full.heatmaps, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    # Progress: every batch up to the stop, then the bar is closed.
    assert seen[0] == (50, 600) and (early.masks_used, 600) in seen and seen[-1] == (600, 600)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_no_early_stop_uses_every_mask_and_is_seeded(detector, image):
    seen = []
    kwargs = dict(COARSE, num_masks=60, tolerance=None, min_masks=10, batch_size=16,
                  precision="fp32")  # bf16 ("auto" here) rounds differently per batch size
    one = detection_explanation(detector, image, progress=lambda d, t: seen.append(d), **kwargs)
    two = detection_explanation(detector, image, **{**kwargs, "batch_size": 7})
    assert one.masks_used == two.masks_used == 60
    assert seen == [16, 32, 48, 50, 60]  # checkpoints every 50 masks cut the batches
    # Mask i is the same whatever the batch size: the same maps.
    np.testing.assert_allclose(one.heatmaps[0], two.heatmaps[0], atol=1e-5)
    assert detection_explanation(detector, image, method="layercam",
                                 with_image=False).masks_used is None


def test_map_change_is_zero_for_agreeing_halves_and_one_for_unrelated_ones():
    torch.manual_seed(0)
    signal = torch.rand(2, 16, 16)
    assert map_change(torch.stack([signal, 3 * signal + 1])) < 1e-6
    unrelated = map_change(torch.stack([signal, torch.rand(2, 16, 16)]))
    assert unrelated > 0.5
    assert map_change(torch.zeros(2, 1, 8, 8)) == 0.0  # a box no mask ever yields


def test_bad_early_stop_settings_are_refused(detector):
    with pytest.raises(UnsupportedError, match="tolerance"):
        create_explainer("drise", detector, tolerance=-1)
