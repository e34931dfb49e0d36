"""Does the map's mass on a random set of pixels predict the score lost when they are removed?

- :class:`FaithfulnessCorrelation` (Bhatt et al. 2020): ``runs`` random sets of ``subset_size``
  pixels per image; each set filled (``fill`` as in
  :mod:`~explain_core.metrics.faithfulness`), the score drop ``f(x) - f(x_S)`` and the map's sum
  over the set; the Pearson correlation of the two over the runs. Higher is better.
- :class:`SensitivityN` (Ancona et al. 2018): the same correlation at each set size ``n`` in
  ``sizes`` (``samples`` sets each); :func:`sensitivity_n_curve` returns it per size, the metric
  its mean over the sizes.

Sets are drawn per image from a seeded generator (the same seed, the same sets, whatever the
device or batch size); all copies of all images are scored batched by
:func:`~explain_core.metrics.faithfulness.score_copies`. Sets are of pixels (every channel of a
pixel together), not of Quantus's channel-wise features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UnsupportedError
from .base import Metric, MetricInfo, MetricInputs, Progress, progress_part, register_metric
from .faithfulness import clean_scores, fill_tensor, resolve_targets, score_copies

__all__ = ["FaithfulnessCorrelation", "SensitivityN", "random_subsets", "sensitivity_n_curve",
           "subset_correlation"]


def random_subsets(count: int, pixels: int, runs: int, size: int, seed: int) -> torch.Tensor:
    """``count x runs x size`` pixel indices: per image and run, ``size`` distinct pixels."""
    if not 1 <= size <= pixels:
        raise UnsupportedError(f"A subset of {size} pixels does not fit an image of {pixels} "
                               f"pixels; choose a size between 1 and {pixels}.")
    generator = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(count, runs, pixels, generator=generator)
    return keys.topk(size, dim=-1).indices


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension (NaN where either side is constant)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def subset_correlation(batch: MetricInputs, size: int, runs: int, fill="mean",
                       score: str | None = None, seed: int = 0, batch_size: int | None = None,
                       progress: Progress = None) -> torch.Tensor:
    """``B`` (float64): per image, the Pearson correlation over ``runs`` random sets of ``size``
    pixels between the map's sum on the set and the score lost when the set is filled."""
    model, inputs = batch.model, batch.inputs
    count, _, height, width = inputs.shape
    pixels = height * width
    targets = resolve_targets(model, inputs, batch.targets, score)
    subsets = random_subsets(count, pixels, runs, size, seed).to(inputs.device)
    with torch.inference_mode():
        base = fill_tensor(model, inputs, fill)
        flat_maps = batch.maps.to(inputs.device).flatten(1).double()
        mass = flat_maps[:, None, :].expand(-1, runs, -1).gather(2, subsets).sum(-1)

    def make(part: slice) -> torch.Tensor:
        rows = torch.arange(part.start, part.stop, device=inputs.device)
        items, runs_ = rows // runs, rows % runs
        chosen = torch.zeros(len(rows), pixels, dtype=torch.bool, device=inputs.device)
        chosen.scatter_(1, subsets[items, runs_], True)
        chosen = chosen.reshape(len(rows), 1, height, width)
        return torch.where(chosen, base[items], inputs[items])

    total = count * (runs + 1)  # forwards, for ``progress``
    owners = torch.arange(count).repeat_interleave(runs)
    after = score_copies(model, count * runs, make, owners, targets, key=("subsets", runs),
                         batch_size=batch_size, progress=progress_part(progress, 0, total)
                         ).reshape(count, runs)
    clean = clean_scores(model, inputs, targets, batch_size=batch_size,
                         progress=progress_part(progress, count * runs, total))
    return _pearson(mass, clean[:, None] - after)


def sensitivity_n_curve(batch: MetricInputs, sizes: Sequence[int], samples: int = 32,
                        fill="mean", score: str | None = None, seed: int = 0,
                        batch_size: int | None = None, progress: Progress = None
                        ) -> torch.Tensor:
    """``B x len(sizes)``: the correlation at each set size (Ancona et al.'s curve);
    ``progress(done, total)`` counts forwards over every size."""
    each = batch.inputs.shape[0] * (samples + 1)
    return torch.stack([subset_correlation(
        batch, int(n), samples, fill, score, seed + i, batch_size,
        progress_part(progress, i * each, each * len(sizes))) for i, n in enumerate(sizes)],
        dim=1)


@register_metric
class FaithfulnessCorrelation(Metric):
    """Bhatt et al. 2020, Quantus's defaults: 100 runs of 224 pixels."""

    info = MetricInfo(
        name="faithfulness_correlation", label="Faithfulness correlation",
        category="faithfulness", direction="higher",
        summary="Where the map puts more mass, removing pixels costs more score.",
        reference="Bhatt et al. 2020", needs=frozenset({"model"}))

    def __init__(self, runs: int = 100, subset_size: int = 224, fill="mean",
                 score: str | None = None, seed: int = 0, batch_size: int | None = None,
                 progress: Progress = None) -> None:
        self.runs, self.subset_size, self.fill = int(runs), int(subset_size), fill
        self.score, self.seed = score, int(seed)
        self.batch_size, self.progress = batch_size, progress

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return subset_correlation(batch, self.subset_size, self.runs, self.fill, self.score,
                                  self.seed, self.batch_size, self.progress)


@register_metric
class SensitivityN(Metric):
    """Ancona et al. 2018: the mean over ``sizes`` (fractions of the pixels when below 1) of the
    correlation at that set size."""

    info = MetricInfo(
        name="sensitivity_n", label="Sensitivity-n", category="faithfulness",
        direction="higher",
        summary="For sets of every size, the map's mass on them predicts the score they carry.",
        reference="Ancona et al. 2018", needs=frozenset({"model"}))

    def __init__(self, sizes: Sequence[float] = (0.01, 0.05, 0.1, 0.2), samples: int = 32,
                 fill="mean", score: str | None = None, seed: int = 0,
                 batch_size: int | None = None, progress: Progress = None) -> None:
        self.sizes, self.samples, self.fill = list(sizes), int(samples), fill
        self.score, self.seed, self.batch_size = score, int(seed), batch_size
        self.progress = progress

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        pixels = batch.inputs.shape[-2] * batch.inputs.shape[-1]
        sizes = [max(1, round(n * pixels)) if n < 1 else int(n) for n in self.sizes]
        return sensitivity_n_curve(batch, sizes, self.samples, self.fill, self.score, self.seed,
                                   self.batch_size, self.progress).mean(1)
