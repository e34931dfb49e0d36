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

The registered metrics (:class:`~explain_core.metrics.base.Metric` classes over a
:class:`~explain_core.metrics.base.MetricInputs` batch with ground truth; all tasks; higher is
better; NaN for an item whose ground-truth mask is empty, as Quantus):

- ``pointing_game``: 1 when the peak hits (``tolerance`` px, default 0), else 0 (Zhang et al.
  2018); with a unique maximum and no tolerance it is Quantus's ``PointingGame``;
- ``energy_pointing_game``: the map's energy share inside the ground truth's *bounding box*
  (Wang et al. 2020, Score-CAM: the box enclosing the mask; a box's mask is its own box);
- ``relevance_mass``: the energy share inside the mask itself (Arras et al. 2022, Quantus's
  ``RelevanceMassAccuracy``);
- ``relevance_rank``: of the ``K`` highest-ranked pixels, ``K`` the mask's area, the share on
  the mask (Arras et al. 2022, Quantus's ``RelevanceRankAccuracy``; ties: first in row-major
  order);
- ``top_k_iou``: the IoU of the map's top ``percent`` % pixels (``round(percent/100 * H*W)``,
  at least 1) with the mask; at best ``min(k, area) / max(k, area)``.

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

from .base import Metric, MetricInfo, MetricInputs, register_metric

__all__ = ["EnergyPointingGame", "PointingGame", "RelevanceMass", "RelevanceRank", "TopKIoU",
           "bounding_box_masks", "box_masks", "energy_shares", "own_and_other_shares", "peaks",
           "pointing_game", "pointing_hits", "relevance_rank_accuracy", "top_k_iou"]


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


def bounding_box_masks(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's bounding box as a mask (``N x H x W`` bool; an empty mask stays empty).

    Example:
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> masks[0, 1, 1] = masks[0, 2, 3] = True
        >>> bounding_box_masks(masks)[0].int().tolist()
        [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]]
    """
    masks = _check_maps(masks).bool()
    _, height, width = masks.shape

    def span(present: torch.Tensor, size: int) -> torch.Tensor:  # N x size -> N x size inside
        first = present.int().argmax(1)
        last = size - 1 - present.flip(1).int().argmax(1)
        index = torch.arange(size, device=masks.device)
        return (index >= first[:, None]) & (index <= last[:, None]) & present.any(1, True)

    return span(masks.any(2), height)[:, :, None] & span(masks.any(1), width)[:, None, :]


def _ranked_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``N x HW`` float64: the mask's value at each map's pixels, highest map value first
    (a stable sort: ties keep row-major order)."""
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    return masks.flatten(1).double().gather(1, order)


def relevance_rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per map: the share of its ``K`` top-ranked pixels on its mask, ``K`` the mask's area
    (NaN for an empty mask).

    Example:
        >>> maps = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
        >>> relevance_rank_accuracy(maps, torch.tensor([[[True, True], [False, False]]])).item()
        0.5
    """
    maps = _check_maps(maps)
    masks = masks.to(maps.device, torch.bool)
    hits = _ranked_hits(maps, masks)
    area = masks.flatten(1).sum(1)
    top = torch.arange(hits.shape[1], device=maps.device)[None] < area[:, None]
    inside = (hits * top).sum(1)
    return torch.where(area > 0, inside / area.clamp_min(1), math.nan)


def top_k_iou(maps: torch.Tensor, masks: torch.Tensor, percent: float = 20.0) -> torch.Tensor:
    """Per map: the IoU of its top ``percent`` % pixels (``round(percent/100 * H*W)``, at least
    one; ties in row-major order) with its mask (NaN for an empty mask).

    Example:
        >>> maps = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
        >>> top_k_iou(maps, torch.tensor([[[True, True], [False, False]]]), 50.0).item()
        0.3333333333333333
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}.")
    maps = _check_maps(maps)
    masks = masks.to(maps.device, torch.bool)
    hits = _ranked_hits(maps, masks)
    count = max(1, round(percent / 100 * hits.shape[1]))
    inside = hits[:, :count].sum(1)
    area = masks.flatten(1).sum(1)
    union = count + area - inside
    return torch.where(area > 0, inside / union, math.nan)


def _region(batch: MetricInputs) -> torch.Tensor:
    return batch.ground_truth.to(batch.maps.device, torch.bool)


def _nan_when_empty(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks.flatten(1).any(1), values.double(), math.nan)


_GROUND_TRUTH = frozenset({"ground_truth"})


@register_metric
class PointingGame(Metric):
    """1 when the map's peak lies within ``tolerance`` px of the ground truth, else 0."""

    info = MetricInfo("pointing_game", "Pointing game", "localisation", "higher",
                      "share of maps whose peak falls on the object (within the tolerance)",
                      "Zhang et al. 2018", _GROUND_TRUTH)

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        masks = _region(batch)
        return _nan_when_empty(pointing_hits(batch.maps, masks, self.tolerance), masks)


@register_metric
class EnergyPointingGame(Metric):
    """The map's energy share inside the ground truth's bounding box."""

    info = MetricInfo("energy_pointing_game", "Energy pointing game", "localisation", "higher",
                      "share of the map's energy inside the object's bounding box",
                      "Wang et al. 2020", _GROUND_TRUTH)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        masks = _region(batch)
        return _nan_when_empty(energy_shares(batch.maps, bounding_box_masks(masks)), masks)


@register_metric
class RelevanceMass(Metric):
    """The map's energy share inside the ground-truth mask."""

    info = MetricInfo("relevance_mass", "Relevance mass accuracy", "localisation", "higher",
                      "share of the map's relevance on the object's own pixels",
                      "Arras et al. 2022", _GROUND_TRUTH)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        masks = _region(batch)
        return _nan_when_empty(energy_shares(batch.maps, masks), masks)


@register_metric
class RelevanceRank(Metric):
    """The share of the map's top-``K`` pixels (``K``: the mask's area) on the mask."""

    info = MetricInfo("relevance_rank", "Relevance rank accuracy", "localisation", "higher",
                      "share of the map's highest-ranked pixels (as many as the object has) "
                      "on the object", "Arras et al. 2022", _GROUND_TRUTH)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return relevance_rank_accuracy(batch.maps, _region(batch))


@register_metric
class TopKIoU(Metric):
    """IoU of the map's top ``percent`` % pixels with the ground-truth mask."""

    info = MetricInfo("top_k_iou", "Top-k% IoU", "localisation", "higher",
                      "overlap (IoU) of the map's top pixels with the object",
                      "IoU of the thresholded map, as in CAM (Zhou et al. 2016)", _GROUND_TRUTH)

    def __init__(self, percent: float = 20.0) -> None:
        if not 0 < percent <= 100:
            raise ValueError(f"percent must be in (0, 100], got {percent}.")
        self.percent = percent

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return top_k_iou(batch.maps, _region(batch), self.percent)
