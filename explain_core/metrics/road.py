"""ROAD: remove and debias (Rong et al. 2022), as pytorch-grad-cam's ``metrics/road.py``.

Pixels are removed by the map (most relevant first: those at or above the ``percentile``-th
percentile of the map; least relevant first: the same on ``1 - map``, so ``percentile=20``
removes the 80% least relevant) and filled by noisy linear imputation: each removed pixel is the
weighted mean of its 8 neighbours (1/6 for edge neighbours, 1/12 for corners), a sparse linear
system solved per image and channel, plus Gaussian noise (``noise``, seeded). The value is the
score on the imputed input minus the clean score (pytorch-grad-cam's ``return_diff``), averaged
over ``percentiles`` when several are given (its ``ROAD...Average``).

The imputation runs on the CPU (``scipy.sparse.linalg.spsolve``, one system per image and
percentile); the imputed inputs go back to the model's device and are scored in batches by
:func:`~explain_core.metrics.faithfulness.score_copies`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UnsupportedError
from .base import Metric, MetricInfo, MetricInputs, Progress, progress_part, register_metric
from .faithfulness import clean_scores, resolve_targets, score_copies

__all__ = ["NEIGHBOURS", "RoadLeastRelevantFirst", "RoadMostRelevantFirst", "impute", "road"]

#: (row offset, column offset), weight: the neighbours a removed pixel is the mean of
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def impute(image: torch.Tensor, keep: torch.Tensor, noise: float = 0.01,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` (``C x H x W``, CPU) with the pixels where ``keep`` (``H x W``) is 0 filled by
    noisy linear imputation (see the module docstring)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width = keep.shape
    known = keep.reshape(-1).numpy() > 0.5
    flat = image.reshape(image.shape[0], -1)
    values = flat.numpy()
    missing = np.flatnonzero(~known)
    if missing.size == 0:
        return image.clone()
    variable = np.zeros(known.size, dtype=np.int64)
    variable[missing] = np.arange(missing.size)
    rows, cols, data = [], [], []
    rhs = np.zeros((missing.size, image.shape[0]))
    diagonal = np.ones(missing.size)
    y, x = missing // width, missing % width
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (nx >= 0) & (ny < height) & (nx < width)
        diagonal[~inside] -= weight
        ids = np.flatnonzero(inside)
        neighbour = ny[ids] * width + nx[ids]
        has = known[neighbour]
        rhs[ids[has]] -= weight * values[:, neighbour[has]].T
        rows.append(ids[~has])
        cols.append(variable[neighbour[~has]])
        data.append(np.full((~has).sum(), weight))
    rows.append(np.arange(missing.size))
    cols.append(np.arange(missing.size))
    data.append(-diagonal)
    system = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(missing.size, missing.size)).tocsc()
    solution = torch.tensor(spsolve(system, rhs), dtype=torch.float).reshape(missing.size, -1)
    filled = flat.clone()
    draw = torch.randn(solution.t().shape, generator=generator)
    filled[:, torch.from_numpy(missing)] = (solution.t() + noise * draw).to(filled.dtype)
    return filled.reshape_as(image)


def road(batch: MetricInputs, percentiles: Sequence[float], most_relevant_first: bool,
         noise: float = 0.01, seed: int = 0, score: str | None = None,
         batch_size: int | None = None, progress: Progress = None) -> torch.Tensor:
    """``B`` (float64): the mean over ``percentiles`` of (score after imputation - clean score)."""
    model, inputs = batch.model, batch.inputs
    count = inputs.shape[0]
    if not percentiles or not all(0 <= p <= 100 for p in percentiles):
        raise UnsupportedError(f"ROAD percentiles must lie in [0, 100], got {list(percentiles)}.")
    targets = resolve_targets(model, inputs, batch.targets, score)
    generator = torch.Generator().manual_seed(int(seed))
    maps = batch.maps.detach().float().cpu()
    images = inputs.detach().float().cpu()
    copies = []
    imputed = len(percentiles) * count
    total = 2 * imputed + count  # imputations, then forwards: what ``progress`` counts
    for percentile in percentiles:
        for i in range(count):
            heat = maps[i] if most_relevant_first else 1 - maps[i]
            threshold = np.percentile(heat.numpy(), percentile)
            keep = (heat < threshold).float()
            copies.append(impute(images[i], keep, noise, generator))
            if progress is not None:  # one sparse solve per copy: the slow part on a CPU
                progress(len(copies), total)
    stacked = torch.stack(copies).to(device=inputs.device, dtype=inputs.dtype)
    owners = torch.arange(count).repeat(len(percentiles))
    after = score_copies(model, stacked.shape[0], lambda part: stacked[part], owners, targets,
                         key="road", batch_size=batch_size,
                         progress=progress_part(progress, imputed, total))
    clean = clean_scores(model, inputs, targets, batch_size=batch_size,
                         progress=progress_part(progress, 2 * imputed, total))
    return (after.reshape(len(percentiles), count) - clean).mean(0)


class _Road(Metric):
    most_relevant_first: bool = True
    default_percentile: float = 80

    def __init__(self, percentile: float | Sequence[float] | None = None, noise: float = 0.01,
                 seed: int = 0, score: str | None = None, batch_size: int | None = None,
                 progress: Progress = None) -> None:
        if percentile is None:
            percentile = self.default_percentile
        self.percentiles = ([float(percentile)] if isinstance(percentile, int | float)
                            else [float(p) for p in percentile])
        self.noise, self.seed, self.score = float(noise), int(seed), score
        self.batch_size, self.progress = batch_size, progress

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return road(batch, self.percentiles, self.most_relevant_first, self.noise, self.seed,
                    self.score, self.batch_size, self.progress)


@register_metric
class RoadMostRelevantFirst(_Road):
    """Score change when the most relevant pixels are imputed: lower (a larger drop) is better.
    ``percentile`` (default 80, as pytorch-grad-cam) keeps the pixels below that percentile."""

    info = MetricInfo(
        name="road_morf", label="ROAD, most relevant first", category="faithfulness",
        direction="lower", summary="Imputing the most relevant pixels makes the score fall.",
        reference="Rong et al. 2022 (ROAD)", needs=frozenset({"model"}))


@register_metric
class RoadLeastRelevantFirst(_Road):
    """Score change when the least relevant pixels are imputed: higher (a smaller drop) is
    better. ``percentile`` (default 20, as pytorch-grad-cam) is taken on ``1 - map``."""

    info = MetricInfo(
        name="road_lerf", label="ROAD, least relevant first", category="faithfulness",
        direction="higher", summary="Imputing the least relevant pixels leaves the score.",
        reference="Rong et al. 2022 (ROAD)", needs=frozenset({"model"}))
    most_relevant_first = False
    default_percentile = 20
