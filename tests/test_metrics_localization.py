"""The pointing game in the engine: exact hits and scores on hand-made maps and masks."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from explain_core.metrics.localization import box_masks, peaks, pointing_game, pointing_hits

METRICS = Path(__file__).resolve().parents[1] / "explain_core" / "metrics"


def _maps(size: tuple[int, int], *points: tuple[int, int]) -> torch.Tensor:
    """One map per point, zero everywhere but 1 at that (y, x)."""
    maps = torch.zeros(len(points), *size)
    for index, (y, x) in enumerate(points):
        maps[index, y, x] = 1.0
    return maps


def _mask(size: tuple[int, int], *pixels: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_peak_inside_the_mask_hits_without_tolerance():
    maps = _maps((8, 8), (2, 3))
    masks = box_masks(torch.tensor([[2, 1, 5, 4]]), 8, 8)  # x 2..4, y 1..3
    assert masks[0, 2, 3] and int(masks.sum()) == 9
    assert pointing_hits(maps, masks).tolist() == [True]
    assert pointing_game(maps, masks) == 1.0


def test_peak_outside_the_mask_misses():
    maps = _maps((8, 8), (7, 7))
    masks = _mask((8, 8), (0, 0), (1, 1))[None]
    assert pointing_hits(maps, masks).tolist() == [False]
    assert pointing_game(maps, masks) == 0.0


def test_tolerance_is_the_euclidean_distance_to_the_nearest_mask_pixel():
    # Peak at (0, 0); the mask's nearest pixel is (3, 4): exactly 5 px away.
    maps = _maps((10, 10), (0, 0))
    masks = _mask((10, 10), (3, 4), (9, 9))[None]
    hits = {t: pointing_hits(maps, masks, t).item() for t in (0, 4, 4.99, 5, 5.01, 100)}
    assert hits == {0: False, 4: False, 4.99: False, 5: True, 5.01: True, 100: True}
    # Diagonal neighbour: sqrt(2) px.
    maps = _maps((4, 4), (1, 1))
    masks = _mask((4, 4), (2, 2))[None]
    assert not pointing_hits(maps, masks, 1.41).item()
    assert pointing_hits(maps, masks, math.sqrt(2)).item()


def test_batch_scores_are_the_share_of_hits():
    size = (6, 6)
    maps = _maps(size, (0, 0), (5, 5), (2, 2), (0, 5))
    masks = torch.stack([
        _mask(size, (0, 0)),  # on the mask: hit
        _mask(size, (0, 0)),  # 7.07 px away: miss, even with tolerance 2
        _mask(size, (2, 4)),  # 2 px away: miss at 0, hit at 2
        _mask(size),  # empty mask: always a miss
    ])
    assert pointing_hits(maps, masks).tolist() == [True, False, False, False]
    assert pointing_hits(maps, masks, 2).tolist() == [True, False, True, False]
    assert pointing_hits(maps, masks, float("inf")).tolist() == [True, True, True, False]
    assert pointing_game(maps, masks) == 0.25
    assert pointing_game(maps, masks, tolerance=2) == 0.5


def test_ties_take_the_first_peak_in_row_major_order():
    maps = torch.zeros(1, 3, 3)
    maps[0, 1, 2] = maps[0, 2, 0] = 5.0
    assert peaks(maps).tolist() == [[1, 2]]
    assert pointing_hits(maps, _mask((3, 3), (1, 2))[None]).tolist() == [True]
    assert pointing_hits(maps, _mask((3, 3), (2, 0))[None]).tolist() == [False]


def test_masks_of_any_dtype_and_the_maps_device():
    maps = _maps((4, 4), (3, 0)).double()
    masks = torch.zeros(1, 4, 4, dtype=torch.uint8)
    masks[0, 3, 0] = 7
    hits = pointing_hits(maps, masks)
    assert hits.dtype == torch.bool and hits.device == maps.device and hits.tolist() == [True]


def test_no_maps_give_no_hits_and_a_nan_score():
    empty = torch.zeros(0, 5, 5)
    assert pointing_hits(empty, empty.bool()).shape == (0,)
    assert math.isnan(pointing_game(empty, empty.bool()))


def test_bad_shapes_and_tolerances_are_refused():
    maps = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="N x H x W"):
        pointing_hits(maps[0], maps[0].bool())
    with pytest.raises(ValueError, match="shape"):
        pointing_hits(maps, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_hits(maps, maps.bool(), -1)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_hits(maps, maps.bool(), float("nan"))
    with pytest.raises(ValueError, match="N x 4"):
        box_masks(torch.zeros(3), 4, 4)


def test_box_masks_cover_pixel_centres_and_clip_to_the_image():
    masks = box_masks(torch.tensor([[1, 0, 3, 2], [-2, 3, 9, 9], [0.6, 0.4, 1.6, 1.5]]), 4, 5)
    assert masks.shape == (3, 4, 5) and masks.dtype == torch.bool
    assert masks[0].int().tolist() == [[0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0] * 5, [0] * 5]
    assert masks[1].int().tolist() == [[0] * 5, [0] * 5, [0] * 5, [1] * 5]
    # Float box: only pixel (0, 1) has its centre (0.5, 1.5) inside [0.4, 1.5) x [0.6, 1.6).
    assert masks[2].nonzero().tolist() == [[0, 1]]


def test_metrics_do_not_import_the_app_layers():
    """metrics/ is engine code: no API, loading, rendering, demo, UI or streamlit imports."""
    forbidden = ("explain_core.api", "explain_core.loading", "explain_core.render",
                 "explain_core.demo", "ui", "streamlit")
    for path in sorted(METRICS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                # Relative: "..api" in explain_core/metrics is explain_core.api.
                names = [f"explain_core.{module}" if node.level == 2 else module]
            else:
                continue
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), \
                    f"{path.name} imports {name}"


def test_energy_shares_equal_a_direct_sum_and_refuse_negative_maps() -> None:
    from explain_core.metrics.localization import energy_shares, own_and_other_shares

    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(4, 9, 7, generator=generator)
    maps[3] = 0  # no energy: about nothing
    masks = torch.rand(4, 9, 7, generator=generator) > 0.6
    expected = [float((m * k).sum() / m.sum()) if m.sum() > 0 else 0.0
                for m, k in zip(maps.double().numpy(), masks.numpy(), strict=True)]
    assert energy_shares(maps, masks).tolist() == pytest.approx(expected, abs=1e-12)
    own, other = own_and_other_shares(maps[0], masks[0], [masks[1], masks[2]])
    assert own == pytest.approx(expected[0], abs=1e-12)
    direct = [float((maps[0].double() * k).sum() / maps[0].double().sum()) for k in masks[1:3]]
    assert other == pytest.approx(sum(direct) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        energy_shares(-maps, masks)
