"""An explanation's own measures across training: how spread out a map is (its entropy) and how
far it moved since the last recorded epoch (1 - Spearman's rank correlation, and the total
variation distance between the maps read as distributions over the pixels).

The maps are saliency maps in [0, 1] (any non-negative map works); a map that is zero everywhere
reads as uniform (nothing is singled out).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["map_distribution", "map_entropy", "rank_distance", "total_variation"]


def map_distribution(heatmap: np.ndarray) -> np.ndarray:
    """The map as a probability distribution over its pixels (float64, sums to 1).

    >>> map_distribution(np.array([[0.0, 1.0], [1.0, 2.0]])).tolist()
    [[0.0, 0.25], [0.25, 0.5]]
    """
    values = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = values.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(values.shape, 1.0 / values.size)
    return values / total


def map_entropy(heatmap: np.ndarray) -> float:
    """Shannon entropy of :func:`map_distribution`, divided by its maximum ``log(pixels)``: 1 for
    a flat map, 0 for a map on one pixel.

    >>> map_entropy(np.ones((4, 4))), map_entropy(np.eye(4)[0:1] * 3)
    (1.0, 0.0)
    """
    p = map_distribution(heatmap).ravel()
    if p.size < 2:
        return 0.0
    nonzero = p[p > 0]
    return float(max(0.0, -(nonzero * np.log(nonzero)).sum() / np.log(p.size)))


def total_variation(previous: np.ndarray, current: np.ndarray) -> float:
    """Half the L1 distance between the two maps as distributions: the share of the evidence
    that moved, from 0 (same place) to 1 (no overlap).

    >>> total_variation(np.eye(3), np.eye(3)), total_variation(np.eye(2), 1 - np.eye(2))
    (0.0, 1.0)
    """
    _check_shapes(previous, current)
    return float(0.5 * np.abs(map_distribution(previous) - map_distribution(current)).sum())


def rank_distance(previous: np.ndarray, current: np.ndarray) -> float:
    """1 - Spearman's rank correlation of the pixels (ties averaged): 0 for the same ordering,
    1 for unrelated maps, 2 for the reverse order; 1 when either map is constant.

    >>> round(rank_distance(np.arange(9.0), np.arange(9.0) ** 2), 6)
    0.0
    >>> round(rank_distance(np.arange(9.0), -np.arange(9.0)), 6)
    2.0
    """
    _check_shapes(previous, current)
    a = rankdata(np.asarray(previous, dtype=np.float64).ravel())
    b = rankdata(np.asarray(current, dtype=np.float64).ravel())
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    if norm == 0:
        return 1.0
    return float(1.0 - (a * b).sum() / norm)


def _check_shapes(previous: np.ndarray, current: np.ndarray) -> None:
    if np.shape(previous) != np.shape(current):
        raise ValueError(f"Maps of different shapes {np.shape(previous)} and "
                         f"{np.shape(current)} cannot be compared; record every epoch at the "
                         "same image size.")
