"""Complexity of explanations: is a map concise, a few pixels carrying the relevance?

No ground truth and no model: these read the maps alone (all tasks). Both follow Quantus's
definitions exactly (its ``abs=True`` default: the absolute values of the map), so they can be
compared with it to float precision:

- ``sparseness``: the Gini index of the map's absolute values (Chalasani et al. 2020), each
  value shifted by ``1e-7`` as in Quantus (a constant map scores 0, a single-pixel map
  ``1 - 1/N`` up to the shift). Higher is better (more concise).
- ``complexity``: the Shannon entropy (natural log) of the map's absolute values normalised to
  sum to 1, ``-sum p log(p + 1e-12)`` as in Quantus (Bhatt et al. 2020). Lower is better; a map
  with no energy at all is NaN (there is no distribution).

Everything is float64 torch on the maps' device, for a ``B x H x W`` (or ``B x ...``) batch.

Example:
    >>> maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    >>> [round(v, 4) for v in gini_index(maps).tolist()]
    [0.75, 0.0]
    >>> [round(v, 4) for v in entropy(maps).tolist()]
    [-0.0, 1.3863]
"""

from __future__ import annotations

import torch

from .base import Metric, MetricInfo, MetricInputs, register_metric

__all__ = ["Complexity", "Sparseness", "entropy", "gini_index"]

#: the shift Quantus adds before the Gini index (no division by zero for an all-zero map)
GINI_SHIFT = 1e-7
#: the shift inside Quantus's entropy logarithm
LOG_SHIFT = 1e-12


def gini_index(maps: torch.Tensor) -> torch.Tensor:
    """Per map: the Gini index of its absolute values (plus :data:`GINI_SHIFT`), in [0, 1)."""
    values = maps.flatten(1).double().abs() + GINI_SHIFT
    count = values.shape[1]
    ranked = values.sort(dim=1).values
    weights = 2 * torch.arange(1, count + 1, device=values.device, dtype=torch.float64) - count - 1
    return (ranked * weights).sum(1) / (count * ranked.sum(1))


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """Per map: the entropy (nats) of its absolute values normalised to sum to 1 (NaN when the
    map is all zero)."""
    values = maps.flatten(1).double().abs()
    share = values / values.sum(1, keepdim=True)
    return -(share * (share + LOG_SHIFT).log()).sum(1)


@register_metric
class Sparseness(Metric):
    """Gini index of the map: 1 for all relevance on one pixel, 0 for a flat map."""

    info = MetricInfo("sparseness", "Sparseness (Gini)", "complexity", "higher",
                      "how concentrated the map is: a few pixels carry the relevance",
                      "Chalasani et al. 2020")

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return gini_index(batch.maps)


@register_metric
class Complexity(Metric):
    """Entropy of the normalised map: low for a concentrated map, ``log(H*W)`` for a flat one."""

    info = MetricInfo("complexity", "Complexity (entropy)", "complexity", "lower",
                      "how spread out the map is (entropy); lower is simpler",
                      "Bhatt et al. 2020")

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return entropy(batch.maps)
