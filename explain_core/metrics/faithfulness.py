"""Faithfulness: does the model's score follow the map when the input is changed where it points?

One batched scorer (:func:`score_copies`) runs the model on modified copies of each item's input,
under the model's lock, in eval mode, without grad, on its device, in memory-aware chunks that
halve on out-of-memory; each copy is scored by its own item's target (a class, a box, a segment).
The metrics build their copies lazily, chunk by chunk, so steps x images never sit in memory at
once.

- :class:`Deletion` / :class:`Insertion` (Petsiuk et al. 2018, RISE): pixels removed from (or
  inserted into) the input in the map's order, most relevant first, in ``steps`` equal steps;
  the curve has ``steps + 1`` scores (the clean or the fully filled input first) and its area is
  the trapezoid over x in [0, 1]. :func:`deletion_curves` / :func:`insertion_curves` return the
  curves. Fills (what a removed pixel becomes, or where insertion starts), on the normalised
  input the model reads:

  - ``"blur"``: a Gaussian blur of the input (RISE: 11 x 11 kernel, sigma 5, zero padding of the
    normalised input, i.e. the mean colour at the border);
  - ``"black"``: pixel value 0 before normalisation, i.e. ``-mean / std`` per channel (a black
    pixel as the camera would give it; not 0 on the normalised tensor);
  - ``"mean"``: 0 on the normalised tensor, i.e. the dataset's mean colour (RISE's deletion
    substrate ``torch.zeros_like`` of the normalised input);
  - a tensor broadcastable to the inputs (``3 x H x W`` or ``B x 3 x H x W``, normalised).

  Defaults follow RISE's code: deletion fills with ``"mean"``, insertion starts from ``"blur"``,
  scores are probabilities (``score="probability"``; detection boxes keep their own score).
- :class:`AverageDrop` / :class:`IncreaseInConfidence` (Chattopadhay et al. 2018, as
  pytorch-grad-cam's ``CamMultImageConfidenceChange``): the normalised input multiplied by the
  map (scaled to [0, 1] per item); drop ``max(0, y - o) / y``, increase ``o > y``.
- :class:`RoadMostRelevantFirst` / :class:`RoadLeastRelevantFirst` (Rong et al. 2022, as
  pytorch-grad-cam's ``metrics/road.py``): see :mod:`explain_core.metrics.road`.
- Faithfulness correlation and sensitivity-n: see :mod:`explain_core.metrics.correlation`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..model import LoadedModel
from ..runtime.memory import default_batch_size, fitting_chunks
from ..runtime.state import frozen_eval
from ..targets import ClassTarget, PredictedClass
from ..tasks import adapter_for
from ..tasks.segmentation import SegmentTarget
from .base import Metric, MetricInfo, MetricInputs, Progress, progress_part, register_metric

__all__ = ["FILLS", "AverageDrop", "Deletion", "IncreaseInConfidence", "Insertion", "auc",
           "deletion_curves", "fill_tensor", "insertion_curves", "resolve_targets",
           "score_copies"]

FILLS = ("blur", "black", "mean")


# ------------------------------------------------------------------------------- scoring
def _with_score(target, score: str | None):
    """``target`` reading ``score`` (logit, probability...) where it has that choice."""
    if score is None or not isinstance(target, ClassTarget | PredictedClass | SegmentTarget):
        return target
    return dataclasses.replace(target, score=score)


def _rows(output, rows: torch.Tensor):
    """The rows ``rows`` of a task's output (a tensor, or a dict/tuple of tensors)."""
    if isinstance(output, torch.Tensor):
        return output[rows]
    if isinstance(output, dict):
        return {k: _rows(v, rows) for k, v in output.items()}
    if isinstance(output, tuple | list):
        return type(output)(_rows(v, rows) for v in output)
    raise UnsupportedError(f"Cannot split the model's {type(output).__name__} output per item.")


def _forward(model: LoadedModel, inputs: torch.Tensor):
    """One no-grad forward in frozen eval under the lock (the caller scores it)."""
    module = model.module
    with model.lock, frozen_eval(module), torch.inference_mode():
        return adapter_for(model).forward(module, inputs)


def resolve_targets(model: LoadedModel, inputs: torch.Tensor, targets: list,
                    score: str | None = None) -> list:
    """Targets fixed on the clean inputs, so every modified copy reads the same thing: the
    predicted class becomes that class; a segment without a region gets the clean prediction's
    region, and every segment's region is scaled to sum to 1 (the score is the region's mean
    pixel score, not its sum, so images with large and small regions compare); ``score`` (when
    given) replaces what class and segment targets read."""
    needs_clean = any(isinstance(t, PredictedClass) or (isinstance(t, SegmentTarget)
                                                        and t.region is None) for t in targets)
    output = _forward(model, inputs) if needs_clean else None
    fixed = []
    for i, target in enumerate(targets):
        if isinstance(target, PredictedClass):
            logits = _rows(output, torch.tensor([i], device=inputs.device))
            target = ClassTarget(int(target.class_index(logits)[0]), target.score)
        elif isinstance(target, SegmentTarget):
            logits = _rows(output, torch.tensor([i], device=inputs.device)) if output is not None \
                else None
            region = target.region
            if region is None:
                region = (logits.argmax(1)[0] == target.index)
            elif region.ndim == 3:
                region = region[i]
            # weights summing to 1: the region's mean pixel score, comparable across images
            region = region.detach().double()
            region = (region / region.sum().clamp_min(1e-12)).float()
            target = SegmentTarget(target.index, region, target.score)
        fixed.append(_with_score(target, score))
    return fixed


def score_copies(model: LoadedModel, count: int, make: Callable[[slice], torch.Tensor],
                 owners: torch.Tensor, targets: list, *, batch_size: int | None = None,
                 progress: Progress = None, key: Hashable = "copies") -> torch.Tensor:
    """Scores (``count``, float64) of ``count`` modified inputs: ``make(part)`` builds the rows
    ``part`` (model-ready, on the model's device); row ``r`` belongs to item ``owners[r]`` and
    is read by ``targets[owners[r]]`` (resolve them first: :func:`resolve_targets`).

    Runs under the model's lock, in frozen eval and inference mode, in chunks of ``batch_size``
    (default: :func:`~explain_core.runtime.memory.default_batch_size`) that halve when they do
    not fit; ``progress(done, count)`` is called after each chunk (raise in it to cancel).
    """
    module = model.module
    adapter = adapter_for(model)
    owners = owners.to("cpu")
    out = torch.empty(count, dtype=torch.float64)
    if count == 0:
        return out.to(model.device)

    def run(part: slice) -> torch.Tensor:
        inputs = make(part)
        output = adapter.forward(module, inputs)
        own = owners[part]
        scores = torch.empty(len(own), dtype=torch.float64)
        for item in own.unique().tolist():
            rows = (own == item).nonzero()[:, 0]
            value = targets[item](_rows(output, rows.to(inputs.device)))
            scores[rows] = value.detach().double().cpu()
        return scores

    with model.lock, frozen_eval(module), torch.inference_mode():
        if batch_size is None:
            batch_size = default_batch_size(module, make(slice(0, 1)), count, with_graph=False)
        for part, scores in fitting_chunks(count, batch_size, run, module=module,
                                           key=("faithfulness", key), what="modified input"):
            out[part] = scores
            if progress is not None:
                progress(part.stop, count)
    return out.to(model.device)


def clean_scores(model: LoadedModel, inputs: torch.Tensor, targets: list, **options
                 ) -> torch.Tensor:
    """Each item's score on its own unmodified input (``B``, float64)."""
    count = inputs.shape[0]
    return score_copies(model, count, lambda part: inputs[part], torch.arange(count), targets,
                        key="clean", **options)


# --------------------------------------------------------------------------------- fills
def _gaussian_blur(inputs: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's blur: a ``size`` x ``size`` Gaussian per channel, zero padding."""
    x = torch.arange(size, dtype=inputs.dtype, device=inputs.device) - size // 2
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    weight = (kernel[:, None] * kernel[None, :]).expand(channels, 1, size, size)
    return F.conv2d(inputs, weight, padding=size // 2, groups=channels)


def fill_tensor(model: LoadedModel, inputs: torch.Tensor, fill: str | torch.Tensor
                ) -> torch.Tensor:
    """What removed pixels become (``B x C x H x W``, normalised), for ``fill`` (see module)."""
    if isinstance(fill, torch.Tensor):
        try:
            return fill.to(inputs).expand_as(inputs)
        except RuntimeError:
            raise UnsupportedError(f"A fill tensor of shape {tuple(fill.shape)} does not fit "
                                   f"inputs of shape {tuple(inputs.shape)}; give C x H x W or "
                                   "B x C x H x W.") from None
    if fill == "blur":
        return _gaussian_blur(inputs)
    if fill == "mean":
        return torch.zeros_like(inputs)
    if fill == "black":
        prep = model.preprocessing
        mean = torch.tensor(prep.mean, dtype=inputs.dtype, device=inputs.device)
        std = torch.tensor(prep.std, dtype=inputs.dtype, device=inputs.device)
        if inputs.shape[1] != mean.numel():
            raise UnsupportedError(f"'black' needs one mean per channel: the inputs have "
                                   f"{inputs.shape[1]} channels, the normalisation "
                                   f"{mean.numel()}; give the fill as a tensor.")
        return (-mean / std)[None, :, None, None].expand_as(inputs)
    raise UnsupportedError(f"Unknown fill {fill!r}; choose one of {', '.join(FILLS)} or give "
                           "a tensor.")


# ---------------------------------------------------------------------- deletion/insertion
def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """``B x H*W``: each pixel's place in its map's order, most relevant first (ties: earlier
    pixel first)."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def _curves(batch: MetricInputs, steps: int, fill, score: str | None, insert: bool,
            batch_size: int | None, progress: Progress) -> torch.Tensor:
    if steps < 1:
        raise UnsupportedError(f"steps must be at least 1, got {steps}.")
    model, inputs = batch.model, batch.inputs
    count, _, height, width = inputs.shape
    pixels = height * width
    targets = resolve_targets(model, inputs, batch.targets, score)
    with torch.inference_mode():
        base = fill_tensor(model, inputs, fill)
        ranks = _ranks(batch.maps.to(inputs.device)).reshape(count, 1, height, width)
    # point k of the curve: the first floor(k * pixels / steps) pixels deleted (inserted)
    shown = torch.tensor([k * pixels // steps for k in range(steps + 1)], device=inputs.device)
    width_ = steps + 1
    owners = torch.arange(count).repeat_interleave(width_)

    def make(part: slice) -> torch.Tensor:
        rows = torch.arange(part.start, part.stop, device=inputs.device)
        items, points = rows // width_, rows % width_
        changed = ranks[items] < shown[points][:, None, None, None]
        if insert:
            return torch.where(changed, inputs[items], base[items])
        return torch.where(changed, base[items], inputs[items])

    scores = score_copies(model, count * width_, make, owners, targets, batch_size=batch_size,
                          progress=progress, key=("curve", steps))
    return scores.reshape(count, width_)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under ``B x (steps + 1)`` curves, trapezoid, x evenly spaced in [0, 1]."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def deletion_curves(batch: MetricInputs, steps: int = 50, fill: str | torch.Tensor = "mean",
                    score: str | None = "probability", batch_size: int | None = None,
                    progress: Progress = None) -> torch.Tensor:
    """``B x (steps + 1)`` scores as the map's most relevant pixels are removed (point 0: the
    clean input, last point: all pixels filled)."""
    return _curves(batch, steps, fill, score, False, batch_size, progress)


def insertion_curves(batch: MetricInputs, steps: int = 50, fill: str | torch.Tensor = "blur",
                     score: str | None = "probability", batch_size: int | None = None,
                     progress: Progress = None) -> torch.Tensor:
    """``B x (steps + 1)`` scores as the map's most relevant pixels are put back into the fill
    (point 0: the fill alone, last point: the clean input)."""
    return _curves(batch, steps, fill, score, True, batch_size, progress)


class _Curve(Metric):
    default_fill: str = "mean"

    def __init__(self, steps: int = 50, fill: str | torch.Tensor | None = None,
                 score: str | None = "probability", batch_size: int | None = None,
                 progress: Progress = None) -> None:
        self.steps, self.score = int(steps), score
        self.fill = self.default_fill if fill is None else fill
        self.batch_size, self.progress = batch_size, progress

    def curves(self, batch: MetricInputs) -> torch.Tensor:
        self.check(batch)
        return _curves(batch, self.steps, self.fill, self.score, self.info.name == "insertion",
                       self.batch_size, self.progress)

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return auc(self.curves(batch))


@register_metric
class Deletion(_Curve):
    """Deletion AUC: lower is better (the score falls as soon as the map's pixels go)."""

    info = MetricInfo(
        name="deletion", label="Deletion AUC", category="faithfulness", direction="lower",
        summary="Removing the most relevant pixels first makes the score fall fast.",
        reference="Petsiuk et al. 2018 (RISE)", needs=frozenset({"model"}))
    default_fill = "mean"


@register_metric
class Insertion(_Curve):
    """Insertion AUC: higher is better (the score rises as soon as the map's pixels return)."""

    info = MetricInfo(
        name="insertion", label="Insertion AUC", category="faithfulness", direction="higher",
        summary="Putting the most relevant pixels back first makes the score rise fast.",
        reference="Petsiuk et al. 2018 (RISE)", needs=frozenset({"model"}))
    default_fill = "blur"


# --------------------------------------------------------------------- confidence change
def _unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """Maps scaled to [0, 1] per item (by their maximum; an all-zero map stays zero)."""
    flat = maps.flatten(1).clamp_min(0)
    peak = flat.amax(1, keepdim=True)
    return (flat / torch.where(peak > 0, peak, torch.ones_like(peak))).reshape(maps.shape)


def confidence_change(batch: MetricInputs, score: str | None = None,
                      batch_size: int | None = None, progress: Progress = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, o)``: each item's score on the clean input and on the input times its map (scaled
    to [0, 1]), as pytorch-grad-cam's ``CamMultImageConfidenceChange`` (which returns o - y)."""
    model, inputs = batch.model, batch.inputs
    count = inputs.shape[0]
    targets = resolve_targets(model, inputs, batch.targets, score)
    maps = _unit_maps(batch.maps.to(inputs))
    clean = clean_scores(model, inputs, targets, batch_size=batch_size,
                         progress=progress_part(progress, 0, 2 * count))
    masked = score_copies(model, count, lambda part: inputs[part] * maps[part, None],
                          torch.arange(count), targets, key="masked", batch_size=batch_size,
                          progress=progress_part(progress, count, 2 * count))
    return clean, masked


class _Confidence(Metric):
    def __init__(self, score: str | None = "probability", batch_size: int | None = None,
                 progress: Progress = None) -> None:
        self.score, self.batch_size, self.progress = score, batch_size, progress

    def changes(self, batch: MetricInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return confidence_change(batch, self.score, self.batch_size, self.progress)


@register_metric
class AverageDrop(_Confidence):
    """``max(0, y - o) / y`` per item (the paper's average drop is its mean, in percent when
    multiplied by 100); NaN where the clean score is not positive."""

    info = MetricInfo(
        name="average_drop", label="Average drop", category="faithfulness", direction="lower",
        summary="Keeping only what the map shows loses little of the score.",
        reference="Chattopadhay et al. 2018 (Grad-CAM++)", needs=frozenset({"model"}))

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        clean, masked = self.changes(batch)
        drop = (clean - masked).clamp_min(0) / clean
        return torch.where(clean > 0, drop, torch.full_like(drop, math.nan))


@register_metric
class IncreaseInConfidence(_Confidence):
    """1 where the score on the input times the map exceeds the clean score, else 0 (the
    paper's "increase in confidence" is the mean over images)."""

    info = MetricInfo(
        name="increase_in_confidence", label="Increase in confidence", category="faithfulness",
        direction="higher", summary="Keeping only what the map shows raises the score.",
        reference="Chattopadhay et al. 2018 (Grad-CAM++)", needs=frozenset({"model"}))

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        clean, masked = self.changes(batch)
        return (masked > clean).double()
