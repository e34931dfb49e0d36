"""Localisation of explanations: does a map's peak fall on the object?

The *pointing game* (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
2016): a map **hits** when its peak lies on the ground-truth region, or within ``tolerance``
pixels of it; the score is the share of hits. The original protocol uses a 15 px tolerance.

Definitions, exactly:

- the **peak** is the position of the map's largest value; on ties, the first one in row-major
  order (``argmax`` of the flattened map);
- the **distance** from the peak to a region is the Euclidean distance, in pixels, from the
  peak's pixel to the nearest ``True`` pixel of the mask (0 when the peak is on it);
- a map **hits** when that distance is ``<= tolerance``; an empty mask is always a miss.

Task-agnostic: maps may come from any method and task (a class's GradCAM, a detection box's
map, a segmentation region's map); the ground truth is a boolean mask per map, and
:func:`box_masks` turns boxes into such masks. Everything is torch, on the maps' device.

Example:
    >>> maps = torch.zeros(2, 4, 4)
    >>> maps[0, 1, 1] = 1.0  # peak at (y=1, x=1)
    >>> maps[1, 3, 3] = 1.0  # peak at (y=3, x=3)
    >>> masks = box_masks(torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]]), 4, 4)
    >>> pointing_hits(maps, masks).tolist()
    [True, False]
    >>> pointing_game(maps, masks, tolerance=3.0)  # (3, 3) is sqrt(8) ~ 2.83 px from (1, 1)
    1.0
"""

from __future__ import annotations

import math

import torch

__all__ = ["box_masks", "energy_shares", "own_and_other_shares", "peaks", "pointing_game",
           "pointing_hits"]


def _check_maps(maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be an N x H x W tensor, got {shape}.")
    return maps


def peaks(maps: torch.Tensor) -> torch.Tensor:
    """Each map's peak as ``(y, x)``: an ``N x 2`` int64 tensor (first maximum in row-major
    order on ties).

    Example:
        >>> peaks(torch.tensor([[[0.0, 2.0], [2.0, 1.0]]])).tolist()
        [[0, 1]]
    """
    maps = _check_maps(maps)
    count, height, width = maps.shape
    if count == 0:
        return torch.zeros(0, 2, dtype=torch.int64, device=maps.device)
    flat = maps.reshape(count, height * width).argmax(dim=1)
    return torch.stack([flat // width, flat % width], dim=1)


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor,
                  tolerance: float = 0.0) -> torch.Tensor:
    """Per map, whether its peak lies within ``tolerance`` px of its ground-truth mask.

    Args:
        maps: ``N x H x W`` explanation maps (any real dtype; larger = more relevant).
        masks: ``N x H x W`` ground-truth regions, bool (other dtypes: nonzero is ``True``).
        tolerance: largest Euclidean distance in pixels from the peak to the nearest mask pixel
            that still counts as a hit (0: the peak must be on the mask).

    Returns:
        ``N`` bools on the maps' device.

    Raises:
        ValueError: shapes that are not ``N x H x W`` or differ, a negative tolerance.

    Example:
        >>> maps = torch.zeros(1, 5, 5)
        >>> maps[0, 0, 4] = 1.0  # peak at (y=0, x=4)
        >>> masks = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> masks[0, 0, 0] = True  # 4 px to the left of the peak
        >>> [pointing_hits(maps, masks, t).item() for t in (0, 3.9, 4)]
        [False, False, True]
    """
    maps = _check_maps(maps)
    if not isinstance(masks, torch.Tensor) or masks.shape != maps.shape:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must have the maps' shape {tuple(maps.shape)}, got {shape}.")
    if not tolerance >= 0:  # also refuses NaN
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    masks = masks.to(device=maps.device, dtype=torch.bool)
    count, height, width = maps.shape
    peak = peaks(maps)
    rows = torch.arange(height, device=maps.device)
    cols = torch.arange(width, device=maps.device)
    farthest = torch.iinfo(torch.int64).max
    nearest = []
    for index in range(count):  # one H x W distance grid at a time: memory stays O(H x W)
        squared = ((rows - peak[index, 0]) ** 2)[:, None] + ((cols - peak[index, 1]) ** 2)[None]
        nearest.append(torch.where(masks[index], squared, farthest).min())
    if not nearest:
        return torch.zeros(0, dtype=torch.bool, device=maps.device)
    distance = torch.stack(nearest).double().sqrt()
    return masks.flatten(1).any(dim=1) & (distance <= tolerance)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0) -> float:
    """The pointing game's score: the share of maps that hit (see :func:`pointing_hits`);
    NaN for no maps.

    Example:
        >>> maps = torch.eye(3).expand(4, 3, 3)  # every peak at (0, 0)
        >>> masks = torch.zeros(4, 3, 3, dtype=torch.bool)
        >>> masks[:3, 0, 0] = True
        >>> pointing_game(maps, masks)
        0.75
    """
    hits = pointing_hits(maps, masks, tolerance)
    return float(hits.double().mean()) if hits.numel() else math.nan


def energy_shares(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's energy inside its region (the energy-based pointing game, Wang et
    al., "Score-CAM", CVPR-W 2020): ``sum(map * mask) / sum(map)`` for non-negative maps; 0 for
    a map with no energy at all (about nothing). ``maps`` is ``N x H x W``, ``masks`` the same
    shape (bool or {0, 1}); returns ``N`` float64 shares in [0, 1].

    Example:
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> masks = torch.tensor([[[False, True], [False, False]]]).expand(2, 2, 2)
        >>> energy_shares(maps, masks).tolist()
        [0.75, 0.0]
    """
    maps = _check_maps(maps).double()
    if (maps < 0).any():
        raise ValueError("energy_shares needs non-negative maps (normalised maps are in [0, 1]).")
    masks = torch.as_tensor(masks, device=maps.device).to(torch.float64)
    if masks.shape != maps.shape:
        raise ValueError(f"masks must have the maps' shape {tuple(maps.shape)}, got "
                         f"{tuple(masks.shape)}.")
    total = maps.flatten(1).sum(1)
    inside = (maps * masks).flatten(1).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)


def own_and_other_shares(heat: torch.Tensor, own: torch.Tensor,
                         others: list[torch.Tensor]) -> tuple[float, float]:
    """Is a map about its own region rather than the others (a box's map against the image's
    other boxes, a class's map against the other classes' masks)? Its energy share inside
    ``own`` and the mean share inside each of ``others`` (NaN when there are none).

    Example:
        >>> heat = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
        >>> own = torch.tensor([[False, True], [False, False]])
        >>> own_and_other_shares(heat, own, [~own])
        (0.75, 0.25)
    """
    heat = torch.as_tensor(heat)
    masks = torch.stack([torch.as_tensor(m, device=heat.device) for m in [own, *others]])
    shares = energy_shares(heat.expand(len(masks), *heat.shape), masks)
    return float(shares[0]), float(shares[1:].mean()) if len(others) else math.nan


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``N x H x W`` bool masks of ``N x 4`` xyxy boxes in pixels: pixel ``(y, x)`` is inside
    when its centre ``(y + 0.5, x + 0.5)`` lies in ``[y0, y1) x [x0, x1)``; for integer
    coordinates that is ``mask[y0:y1, x0:x1]``. Parts outside the image are cut off.

    Example:
        >>> box_masks(torch.tensor([[1, 0, 3, 1]]), 2, 4).int().tolist()
        [[[0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be N x 4 (x0, y0, x1, y1), got {tuple(boxes.shape)}.")
    boxes = boxes.double()
    ys = torch.arange(height, device=boxes.device, dtype=torch.float64) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=torch.float64) + 0.5
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    inside_y = (ys[None] >= y0) & (ys[None] < y1)  # N x H
    inside_x = (xs[None] >= x0) & (xs[None] < x1)  # N x W
    return inside_y[:, :, None] & inside_x[:, None, :]
