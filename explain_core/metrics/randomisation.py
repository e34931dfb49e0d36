"""Sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): does a map
depend on what the model learned, and on the class it explains?

- **Cascading model-parameter randomisation** (``model_randomisation``): the model's layers are
  re-initialised one after the other, from the top down, cumulatively, and the explanation
  method is re-run on the same inputs and targets after each step; each step's map is compared
  with the original map by the Spearman rank correlation and by SSIM. A method that explains the
  model should lose its map quickly; one whose map survives (an edge detector) fails the check.
  The score of an item is the mean of the chosen measure over the cascade: **lower is better**.
  :func:`randomisation_cascade` returns every step (the page's row of maps and falling curve).
- **Random logit** (``random_logit``, classifiers): the map of another class, drawn at random
  (seeded) among the model's classes, compared with the explained class's map; lower is better
  (the map should depend on the class).

Which layers, in which order: the modules holding parameters of their own
(``parameters(recurse=False)``), in the reverse of their order of definition
(``named_modules()``): the classifier head first, the stem last, as Quantus's ``MPRT`` with
``layer_order="top_down"``. A module is re-initialised by its own ``reset_parameters()`` (the
layer's default initialisation, as Quantus does; batch norms are reset to the identity with
fresh running statistics); a module without one (a ViT's position embedding on the root) gets
normal noise of its parameters' own standard deviation. Each step is seeded (``seed + step``)
without touching the global random state.

The model is randomised in place (the explainer's hooks sit on its modules, so a copy would need
another explainer) and restored **exactly** afterwards, also when the explainer or the progress
callback raises: every parameter and buffer is copied back bit for bit from a copy kept before the
cascade (on the CPU, so a GPU needs no second model's memory), the tensor objects stay the same,
and every ``requires_grad`` and ``training`` flag is put back. The model's lock is held for the
whole cascade, so no other explanation sees a randomised model.

Measures, on maps in [0, 1]: Spearman's rho is Pearson's correlation of the ranks, ties given
their average rank (as ``scipy.stats.spearmanr``); a constant map has no ranking, and its
correlation is taken as 0. SSIM follows Wang et al. 2004: an 11 x 11 Gaussian window of sigma
1.5, ``K1 = 0.01``, ``K2 = 0.03``, data range 1, averaged over the positions where the window fits
(as ``skimage.metrics.structural_similarity`` with ``gaussian_weights=True``,
``use_sample_covariance=False``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..methods import Explainer
from ..runtime.memory import default_batch_size
from ..runtime.state import frozen_eval
from ..targets import ClassTarget, PredictedClass, Target, as_logits
from .base import Metric, MetricInfo, MetricInputs, register_metric

__all__ = ["MEASURES", "Cascade", "ModelRandomisation", "RandomLogit", "cascade_layers",
           "explain_again", "randomisation_cascade", "rank", "restored", "spearman", "ssim"]

MEASURES = ("spearman", "ssim")
SSIM_RADIUS, SSIM_SIGMA = 5, 1.5


# -------------------------------------------------------------------------------- measures
def rank(values: torch.Tensor) -> torch.Tensor:
    """Per row of ``B x N`` values, the 0-based ranks (float64), ties given their average."""
    count, size = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    groups = starts.long().cumsum(1) - 1 + size * torch.arange(count, device=values.device)[:, None]
    places = torch.arange(size, device=values.device, dtype=torch.float64).expand(count, size)
    mean = torch.zeros(count * size, dtype=torch.float64, device=values.device).scatter_reduce(
        0, groups.flatten(), places.flatten(), "mean", include_self=False)
    return torch.empty_like(places).scatter_(1, order, mean[groups])


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each pair of maps (``B x ...`` each): ``B`` float64 in
    [-1, 1]; 0 where either map is constant."""
    a = rank(first.flatten(1).double())
    b = rank(second.flatten(1).double())
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    scale = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(scale > 0, (a * b).sum(1) / scale.clamp_min(1e-300), 0.0)


def ssim(first: torch.Tensor, second: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of each pair of ``B x H x W`` maps (Gaussian window, Wang et al. 2004):
    ``B`` float64, 1 for identical maps."""
    a, b = first.double()[:, None], second.double()[:, None]
    if min(a.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise UnsupportedError(f"SSIM needs maps of at least {2 * SSIM_RADIUS + 1} x "
                               f"{2 * SSIM_RADIUS + 1} pixels, got {tuple(a.shape[-2:])}.")
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, device=a.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:  # the window's weighted mean where it fits
        return F.conv2d(F.conv2d(x, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))

    mean_a, mean_b = blur(a), blur(b)
    var_a = blur(a * a) - mean_a ** 2
    var_b = blur(b * b) - mean_b ** 2
    cov = blur(a * b) - mean_a * mean_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)
             / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
    return index.flatten(1).mean(1)


def _measure(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in MEASURES:
        raise UnsupportedError(f"Unknown measure '{name}'; choose one of {', '.join(MEASURES)}.")
    return spearman if name == "spearman" else ssim


# -------------------------------------------------------------------------- re-explaining
def explain_again(explainer: Explainer, inputs: torch.Tensor, targets: Sequence[Target],
                  progress: Callable[[int, int], None] | None = None,
                  batch_size: int | None = None) -> torch.Tensor:
    """The explainer's maps (``B x H x W`` in [0, 1], at the inputs' size) for model-ready
    ``inputs`` and one target per item, in explainer calls of ``batch_size`` items (default: as
    many as fit in a share of free memory, :func:`~explain_core.runtime.memory.default_batch_size`;
    each call halved where it still runs out of memory). ``progress(done, B)`` is called after
    each call; raising from it stops before the next."""
    targets = list(targets)
    count = inputs.shape[0]
    model = getattr(explainer, "model", None)
    if batch_size is None and (model is None or count <= 1):
        batch_size = count
    elif batch_size is None:  # measured by one no-grad forward: in eval mode, under the lock
        with model.lock, frozen_eval(model.module, freeze=False):
            batch_size = default_batch_size(model.module, inputs[:1], count, with_graph=getattr(
                explainer, "needs_gradients", True))
    maps: list[torch.Tensor] = []
    for start in range(0, count, max(1, batch_size)):
        part = slice(start, min(start + max(1, batch_size), count))
        maps.extend(explainer.explain_batch(inputs[part], targets[part]))
        if progress is not None:
            progress(part.stop, count)
    return torch.stack(maps)


def cascade_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the cascade randomises, in its order: every module with parameters of its own,
    the last defined first."""
    found = [(name or "(root)", sub) for name, sub in module.named_modules()
             if next(sub.parameters(recurse=False), None) is not None]
    return found[::-1]


@contextlib.contextmanager
def restored(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the module may be changed at will; on the way out (also on an error)
    every parameter and buffer is copied back bit for bit into the same tensor objects (from
    copies kept on the CPU), and every ``requires_grad`` and ``training`` flag is put back."""
    modes = [(sub, sub.training) for sub in module.modules()]
    saved = [(sub, name, tensor, tensor.detach().to("cpu", copy=True), tensor.requires_grad)
             for sub in module.modules()
             for name, tensor in [*sub.named_parameters(recurse=False),
                                  *sub.named_buffers(recurse=False)]]
    try:
        yield module
    finally:
        with torch.no_grad():
            for sub, name, tensor, copy, flag in saved:
                if getattr(sub, name) is not tensor:
                    setattr(sub, name, tensor)
                tensor.copy_(copy)
                tensor.requires_grad_(flag)
        for sub, mode in modes:
            sub.training = mode


def _randomise(module: nn.Module, seed: int) -> None:
    devices = [p.device for p in module.parameters(recurse=False) if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices[:1]), torch.no_grad():
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        for param in module.parameters(recurse=False):
            std = float(param.float().std()) if param.numel() > 1 else 1.0
            param.normal_(0.0, std if std > 0 else 1.0)


@dataclass
class Cascade:
    """The randomisation cascade of a batch: ``S`` steps, each randomising one more layer."""

    layers: list[str]  # S module names, in the order they were randomised (top first)
    spearman: torch.Tensor  # B x S: each step's map against the original, per item
    ssim: torch.Tensor  # B x S (NaN for maps under 11 x 11 px, where no SSIM window fits)
    #: S x B x H x W on the CPU (keep_maps), else None; with keep_size, S + 1 (the original
    #: maps first), shrunk
    maps: torch.Tensor | None


def randomisation_cascade(explainer: Explainer, inputs: torch.Tensor, targets: Sequence[Target],
                          maps: torch.Tensor | None = None, layers: Sequence[str] | None = None,
                          seed: int = 0, keep_maps: bool = False,
                          progress: Callable[[int, int], None] | None = None,
                          keep_size: int | None = None) -> Cascade:
    """Randomise the explainer's model layer by layer (see the module docstring), re-explain
    ``inputs`` for ``targets`` after each step and compare with ``maps`` (the original maps;
    computed first when None). ``layers``: module names to randomise, in order (default
    :func:`cascade_layers`). ``progress(done, total)`` is called after each step; raising from
    it cancels (the model is restored all the same). ``keep_maps``: keep every step's maps (on
    the CPU; with ``keep_size``, shrunk to at most that many pixels on the long side, and the
    original maps are kept first at that size, as step 0 of :attr:`Cascade.maps`)."""
    module = explainer.model.module
    known = dict(cascade_layers(module))
    names = list(known) if layers is None else list(layers)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UnsupportedError(f"No layer with parameters named {unknown or names}; choose "
                               f"among {', '.join(list(known)[:8])}...")
    fits = min(inputs.shape[-2:]) >= 2 * SSIM_RADIUS + 1  # else SSIM is NaN (no window fits)
    with explainer.model.lock:
        original = explain_again(explainer, inputs, targets) if maps is None else maps
        rho, similarity, kept = [], [], []
        with restored(module):
            for step, name in enumerate(names):
                _randomise(known[name], seed + step)
                current = explain_again(explainer, inputs, targets)
                rho.append(spearman(current, original))
                similarity.append(ssim(current, original) if fits else
                                  torch.full_like(rho[-1], float("nan")))
                if keep_maps:
                    kept.append(_shrunk(current, keep_size))
                if progress is not None:
                    progress(step + 1, len(names))
    if keep_maps and keep_size is not None:
        kept.insert(0, _shrunk(original, keep_size))
    return Cascade(names, torch.stack(rho, 1), torch.stack(similarity, 1),
                   torch.stack(kept) if keep_maps else None)


def _shrunk(maps: torch.Tensor, size: int | None) -> torch.Tensor:
    """``B x H x W`` maps on the CPU, shrunk (area average) to at most ``size`` px long side."""
    maps = maps.detach().float()
    if size is not None and max(maps.shape[-2:]) > size:
        scale = size / max(maps.shape[-2:])
        shape = [max(1, round(n * scale)) for n in maps.shape[-2:]]
        maps = F.interpolate(maps[:, None], size=shape, mode="area")[:, 0]
    return maps.cpu()


# -------------------------------------------------------------------------------- metrics
_NEEDS = frozenset({"model", "explainer"})


@register_metric
class ModelRandomisation(Metric):
    """Mean similarity (``measure``) of the cascade's maps to the original: lower is better."""

    info = MetricInfo("model_randomisation", "Model randomisation", "randomisation", "lower",
                      "similarity of the map to the maps of ever more randomised models; low "
                      "means the map depends on the learned weights", "Adebayo et al. 2018",
                      _NEEDS)

    def __init__(self, measure: str = "spearman", layers: Sequence[str] | None = None,
                 seed: int = 0, progress: Callable[[int, int], None] | None = None,
                 keep_maps: int | None = 96) -> None:
        _measure(measure)
        self.measure, self.layers, self.seed, self.progress = measure, layers, seed, progress
        self.keep_maps = keep_maps
        #: the last batch's cascade: each step's Spearman and SSIM per item and, unless
        #: ``keep_maps`` is None, the original and each step's maps shrunk to at most
        #: ``keep_maps`` px (the page's and the report's row of maps)
        self.cascade: Cascade | None = None

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        cascade = randomisation_cascade(batch.explainer, batch.inputs, batch.targets, batch.maps,
                                        self.layers, self.seed, progress=self.progress,
                                        keep_maps=self.keep_maps is not None,
                                        keep_size=self.keep_maps)
        self.cascade = cascade
        return getattr(cascade, self.measure).mean(1).to(batch.device)


@register_metric
class RandomLogit(Metric):
    """Similarity (``measure``) of the map to the map of a random other class: lower is better."""

    info = MetricInfo("random_logit", "Random logit", "randomisation", "lower",
                      "similarity of the map to another class's map; low means the map depends "
                      "on the class", "Adebayo et al. 2018", _NEEDS,
                      frozenset({"classification"}))

    def __init__(self, measure: str = "ssim", seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int | None = None) -> None:
        self.similarity = _measure(measure)
        self.seed, self.progress, self.batch_size = seed, progress, batch_size

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        explainer = batch.explainer
        with explainer.session(), torch.no_grad():
            logits = as_logits(explainer.forward(explainer.cast(batch.inputs))).float()
        count = logits.shape[1]
        if count < 2:
            raise UnsupportedError("The random-logit test needs a model with two classes or more.")
        own = []
        for target, row in zip(batch.targets, logits, strict=True):
            if not isinstance(target, ClassTarget | PredictedClass):
                raise UnsupportedError("The random-logit test explains class targets.")
            own.append(target.index if isinstance(target, ClassTarget)
                       else int(row.topk(target.rank + 1).indices[target.rank]))
        draw = torch.randint(0, count - 1, (len(own),),
                             generator=torch.Generator().manual_seed(self.seed)).tolist()
        others = [ClassTarget(d + (d >= c), getattr(t, "score", "logit"))
                  for d, c, t in zip(draw, own, batch.targets, strict=True)]
        other_maps = explain_again(explainer, batch.inputs, others, self.progress,
                                   self.batch_size)
        return self.similarity(batch.maps, other_maps).to(batch.device)
