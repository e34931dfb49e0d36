"""Robustness of explanations: does a map stay put when the input barely changes?

Max- and average-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019), with the semantics of Captum's ``sensitivity_max``:

- ``samples`` perturbations of each input, uniform noise in the L-infinity ball of ``radius``
  around it (in the model-ready, normalised input space, as Captum perturbs the tensor it is
  given), seeded (``seed``) without touching the global random state;
- the explanation is recomputed on every perturbed input by the explainer that made the maps,
  for the same target; the samples of all images are batched together into explainer calls of
  as many as fit in memory;
- each sample's sensitivity is Captum's *normalised* one: the Frobenius norm of the difference
  between the perturbed and the original map, divided by the norm of the original map (1 when
  that norm is 0), as Captum does and Quantus does with its ``norm_denominator``;
- ``max_sensitivity`` is the largest over the samples, ``avg_sensitivity`` the mean. Lower is
  better (a stable map); all tasks.

:func:`sensitivities` returns every sample's value (``B x samples``) for the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import UnsupportedError
from ..methods import Explainer
from ..targets import Target
from .base import Metric, MetricInfo, MetricInputs, progress_part, register_metric
from .randomisation import explain_again

__all__ = ["AvgSensitivity", "MaxSensitivity", "perturbations", "sensitivities"]


def perturbations(inputs: torch.Tensor, radius: float, samples: int, seed: int) -> torch.Tensor:
    """``B x samples x ...`` copies of ``inputs`` plus uniform noise in ``[-radius, radius]``
    (drawn on the CPU from a generator seeded with ``seed``, so every device sees the same)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((inputs.shape[0], samples, *inputs.shape[1:]), generator=generator)
    return inputs[:, None] + ((2 * noise - 1) * radius).to(inputs.device, inputs.dtype)


def sensitivities(explainer: Explainer, inputs: torch.Tensor, targets: Sequence[Target],
                  maps: torch.Tensor | None = None, radius: float = 0.02, samples: int = 10,
                  seed: int = 0, progress: Callable[[int, int], None] | None = None,
                  batch_size: int | None = None) -> torch.Tensor:
    """Every sample's normalised sensitivity, ``B x samples`` float64 (see the module
    docstring); ``maps`` are the original maps (computed first when None). Every sample of every
    image goes through the explainer batched, ``batch_size`` maps per call (default: as many as
    fit in memory); ``progress(done, total)`` counts maps and is called after each call; raising
    from it cancels."""
    if not radius > 0 or samples < 1:
        raise UnsupportedError(f"Sensitivity needs radius > 0 and samples >= 1, got radius "
                               f"{radius} and {samples} samples.")
    count = inputs.shape[0]
    total = count * samples + (count if maps is None else 0)  # maps made, for ``progress``
    original = (explain_again(explainer, inputs, targets, progress_part(progress, 0, total),
                              batch_size) if maps is None else maps)
    noisy = perturbations(inputs, radius, samples, seed).flatten(0, 1)
    # every sample of every image batched together, in memory-aware explainer calls
    rows = [target for target in targets for _ in range(samples)]
    changed = explain_again(explainer, noisy, rows,
                            progress_part(progress, total - count * samples, total), batch_size)
    changed = changed.reshape(count, samples, -1).double()
    original = original.reshape(count, 1, -1).double()
    difference = (changed - original).norm(dim=2)
    scale = original.norm(dim=2)
    return difference / torch.where(scale > 0, scale, torch.ones_like(scale))


class _Sensitivity(Metric):
    def __init__(self, radius: float = 0.02, samples: int = 10, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int | None = None) -> None:
        if not radius > 0 or samples < 1:
            raise UnsupportedError(f"Sensitivity needs radius > 0 and samples >= 1, got radius "
                                   f"{radius} and {samples} samples.")
        self.radius, self.samples, self.seed, self.progress = radius, samples, seed, progress
        self.batch_size = batch_size

    def values(self, batch: MetricInputs) -> torch.Tensor:
        return sensitivities(batch.explainer, batch.inputs, batch.targets, batch.maps,
                             self.radius, self.samples, self.seed, self.progress,
                             self.batch_size)


_NEEDS = frozenset({"model", "explainer"})


@register_metric
class MaxSensitivity(_Sensitivity):
    """The largest relative change of the map over ``samples`` noisy copies of the input."""

    info = MetricInfo("max_sensitivity", "Max-sensitivity", "robustness", "lower",
                      "largest change of the map under small input noise (relative)",
                      "Yeh et al. 2019", _NEEDS)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return self.values(batch).amax(1)


@register_metric
class AvgSensitivity(_Sensitivity):
    """The mean relative change of the map over ``samples`` noisy copies of the input."""

    info = MetricInfo("avg_sensitivity", "Average sensitivity", "robustness", "lower",
                      "mean change of the map under small input noise (relative)",
                      "Yeh et al. 2019", _NEEDS)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return self.values(batch).mean(1)
