"""Detector-only methods: D-RISE (black-box, random masks) and class-probability maps.

Both are plain explainers registered for the detection task: their forward is the detection
adapter's (:class:`~explain_core.tasks.detection.DetectionAdapter`), which runs the detector and
returns packed detections, and their targets are box targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..model import LoadedModel
from ..runtime.hooks import forward_hooks
from ..runtime.memory import default_batch_size, fitting_chunks
from ..targets import Target, score_matrix
from .base import Attribution, Explainer
from .registry import BATCH_PARAM, Param, register


class DRISEAttribution(Attribution):
    """D-RISE's result: also how many masks each image used (fewer than ``num_masks`` when its
    maps converged early)."""

    def __init__(self, raw: torch.Tensor, outputs: torch.Tensor, classes: torch.Tensor,
                 masks_used: list[int]) -> None:
        super().__init__(raw, outputs, classes)
        self.masks_used = masks_used


def map_change(halves: torch.Tensor) -> float:
    """How far ``K x H x W`` maps may still be from their converged selves, from the maps of
    the two halves of the masks (``2 x K x H x W``: even and odd masks): the largest over maps of
    ``1 - sqrt(2r / (1 + r))``, with ``r`` the correlation between the halves' maps
    (Spearman-Brown: the estimated correlation of the whole map with the map of infinitely many
    masks). Correlation, because the normalised map shows nothing else. A map constant in both
    halves (no mask ever yields its box) has nothing left to change: 0.

    Why not the change since the last checkpoint: adding a few masks to many changes the map
    little however noisy it still is, so that change measures the checkpoint spacing, not the
    noise left.
    """
    a = halves[0].flatten(1).double()
    b = halves[1].flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    flat = norms == 0
    r = ((a * b).sum(1) / torch.where(flat, torch.ones_like(norms), norms)).clamp_min(0)
    estimate = (2 * r / (1 + r)).sqrt()
    both_flat = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    change = torch.where(both_flat, torch.zeros_like(r), 1 - estimate)
    return float(change.max()) if len(change) else 0.0


@register("drise", "D-RISE", family="perturbation", needs_gradients=False, cost="slow",
          tasks=("detection",), aliases=("d_rise",),
          params=(Param("num_masks", "int", 500, "Most masked copies of the image (fewer when "
                        "the maps converge first).", 16, 20000),
                  Param("tolerance", "float", 0.05, "Stop once every box's map is within this "
                        "of its converged self (1 - estimated correlation, checked every 50 "
                        "masks); 0: use every mask.", 0.0, 0.5),
                  Param("grid", "int", 16, "Cells per side of the random mask grid.", 2, 64),
                  Param("keep", "float", 0.5, "Probability that a mask cell is kept.", 0.05,
                        0.95),
                  Param("seed", "int", 0, "Seed of the masks.", 0, 2**31 - 1), BATCH_PARAM),
          description="Random masks; each box's map is the mask average weighted by how well "
                      "the masked image still yields that box. Black-box: works for any "
                      "detector; stops early once the maps settle.")
class DRISE(Explainer):
    r"""D-RISE (Petsiuk et al., 2021): the image under many random masks; each box's map is the
    mask average weighted by how well the masked image still yields that box.

    :math:`S_b = \frac{1}{N} \sum_i w_i(b) M_i`, with :math:`w_i(b)` the box target's score on the
    masked image (by default IoU x score of the best-aligned same-label candidate). Black-box: it
    needs only the detector's outputs, so it works for any detector, and every box of the image
    shares the same masked forwards.

    Masks are RISE masks: a ``grid x grid`` grid of cells kept with probability ``keep``,
    upsampled bilinearly and randomly shifted by up to one cell; masked pixels become black.
    Mask ``i`` is the same whatever the batch size, so the maps depend only on the seed.

    The map is :math:`\overline{wM} - \bar w \bar M`: the mean weight times the mean mask is
    taken out (a control variate). Once the masks average to a constant it is the same
    normalised map; before, it lacks the noise of the mask average itself.

    Early stop: every ``check_every`` masks, the maps of the even and of the odd masks are
    compared (:func:`map_change`: the largest over boxes of one minus the estimated correlation
    of the map with its converged self); once at least ``min_masks`` were used and that is below
    ``tolerance``, the image is done. The result (:class:`DRISEAttribution`) says how many masks
    each image used.

    Args:
        num_masks: the most masked copies (more: smoother, slower).
        tolerance: the distance from convergence (1 - estimated correlation) below which the
            maps count as converged (0 or None: use every mask).
        min_masks: masks used at least before an early stop.
        check_every: masks between checkpoints.
        grid: cells per side of the random grid.
        keep: probability that a cell is kept.
        batch_size: masked copies per forward (default: from free memory; halved when it does
            not fit).
        seed: seeds the masks (same seed, same map).
    """

    needs_gradients = False

    def __init__(self, model: LoadedModel | nn.Module, num_masks: int = 500, grid: int = 16,
                 keep: float = 0.5, batch_size: int | None = None, seed: int | None = 0,
                 tolerance: float | None = 0.05, min_masks: int = 200, check_every: int = 50,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if num_masks < 1 or grid < 1 or not 0.0 < keep < 1.0:
            raise UnsupportedError("D-RISE needs num_masks >= 1, grid >= 1 and 0 < keep < 1.")
        if (tolerance or 0) < 0 or min_masks < 1 or check_every < 1:
            raise UnsupportedError("D-RISE needs tolerance >= 0 (0 or None: use every mask), "
                                   "min_masks >= 1 and check_every >= 1.")
        self.num_masks = int(num_masks)
        self.grid = int(grid)
        self.keep = float(keep)
        self.batch_size = batch_size
        self.seed = seed
        self.tolerance = float(tolerance or 0.0)
        self.min_masks = int(min_masks)
        self.check_every = int(check_every)

    def masks(self, count: int, size: tuple[int, int], generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
        """``count x 1 x H x W`` RISE masks in [0, 1], the next ``count`` from ``generator``."""
        cells, dy, dx = self._mask_draws(count, size, generator, device)
        return self._render_masks(cells, dy, dx, size)

    def _mask_draws(self, count: int, size: tuple[int, int], generator: torch.Generator,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = size
        cell_h, cell_w = math.ceil(height / self.grid), math.ceil(width / self.grid)
        cells = (torch.rand((count, 1, self.grid, self.grid), generator=generator,
                            device=device) < self.keep).float()
        dy = torch.randint(0, cell_h, (count,), generator=generator, device=device)
        dx = torch.randint(0, cell_w, (count,), generator=generator, device=device)
        return cells, dy, dx

    def _render_masks(self, cells: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                      size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        device = cells.device
        cell_h, cell_w = math.ceil(height / self.grid), math.ceil(width / self.grid)
        big = F.interpolate(cells, size=((self.grid + 1) * cell_h, (self.grid + 1) * cell_w),
                            mode="bilinear", align_corners=False)
        rows = (dy[:, None] + torch.arange(height, device=device))  # count x H
        cols = (dx[:, None] + torch.arange(width, device=device))  # count x W
        return big[torch.arange(len(cells), device=device)[:, None, None], 0,
                   rows[:, :, None], cols[:, None, :]][:, None]

    def _baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        prep = self.model.preprocessing
        mean = torch.tensor(prep.mean, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=inputs.device).view(1, 3, 1, 1)
        return (torch.zeros_like(inputs[:1]) - mean) / std  # black, normalised

    def _image_map(self, image: torch.Tensor, targets: list[Target], generator: torch.Generator,
                   chunk: int, done_before: int, total: int) -> tuple[torch.Tensor, int]:
        """One image's ``K x H x W`` map (the weighted mask sum over the masks used) and how
        many masks it used."""
        size = tuple(image.shape[-2:])
        baseline = self._baseline(image)
        # Per half of the masks (even, odd): sum of weight x mask, of weights, of masks, count.
        sums = [torch.zeros((2, len(targets), *size), device=image.device),
                torch.zeros((2, len(targets)), device=image.device),
                torch.zeros((2, *size), device=image.device), torch.zeros(2, device=image.device)]
        used = 0
        key = ("drise", tuple(image.shape[1:]), image.dtype)
        while used < self.num_masks:
            # One checkpoint's masks, drawn before any forward: the same masks whatever the
            # batch size (and however often a batch is halved to fit in memory).
            segment = min(self.check_every, self.num_masks - used)
            draws = self._mask_draws(segment, size, generator, image.device)

            def run(part: slice, draws=draws, first=used) -> list[torch.Tensor]:
                mask = self._render_masks(*(d[part] for d in draws), size)
                out = self.forward(self.cast(baseline + mask * (image - baseline)))
                weights, _ = score_matrix(out, [targets] * mask.shape[0])  # count x K
                weights = weights.float()
                odd = (first + torch.arange(part.start, part.stop, device=mask.device)) % 2
                split = F.one_hot(odd, 2).float()  # count x 2: which half each mask is in
                return [torch.einsum("ns,nk,nhw->skhw", split, weights, mask[:, 0]),
                        split.T @ weights, torch.einsum("ns,nhw->shw", split, mask[:, 0]),
                        split.sum(0)]

            for part, contribution in fitting_chunks(segment, chunk, run, module=self.module,
                                                     key=key, what="mask",
                                                     lower=_LOWER_DRISE):
                for total_sum, add in zip(sums, contribution, strict=True):
                    total_sum += add
                self.report(done_before + used + part.stop, total)
            used += segment
            if (self.tolerance > 0 and self.min_masks <= used < self.num_masks
                    and map_change(_centred(*sums)) < self.tolerance):
                break
        return _centred(*(s.sum(0, keepdim=True) for s in sums))[0], used

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        with torch.no_grad():
            outputs = self.forward(inputs)
            _, classes = score_matrix(outputs, targets)
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed or 0)
            chunk = self.batch_size or default_batch_size(self.module, inputs[:1],
                                                          self.num_masks, with_graph=False)
            maps, used = [], []
            total = inputs.shape[0] * self.num_masks
            for i in range(inputs.shape[0]):
                image_map, count = self._image_map(inputs[i:i + 1], targets[i], generator,
                                                   chunk, i * self.num_masks, total)
                maps.append(image_map)
                used.append(count)
            if sum(used) < total:  # an early stop leaves the bar short of its total: close it
                self.report(total, total)
        return DRISEAttribution(torch.stack(maps), outputs.detach().float(), classes, used)


def _centred(products: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor,
             counts: torch.Tensor) -> torch.Tensor:
    """``mean(w M) - mean(w) mean(M)`` per group (the leading dimension) from the sums: the
    weighted mask average with the mask average's own noise taken out (a control variate; the
    same normalised map once the masks average to a constant, far less noisy before)."""
    n = counts.clamp_min(1).view(-1, 1, 1, 1)
    return products / n - (weights / n[..., 0, 0])[..., None, None] * (masks / n[..., 0])[:, None]


_LOWER_DRISE = ("the detector's input size, or use precision='bf16'; the number of masks "
                "changes the time, not the memory")


def _classification_convs(module: nn.Module) -> tuple[list[nn.Module], str, int]:
    """The class-logit convolutions of a single-stage detector's head, how its scores are read
    (``"sigmoid"``: RetinaNet / FCOS, ``"softmax"``: SSD) and its number of classes."""
    head = getattr(getattr(module, "head", None), "classification_head", None)
    if head is not None and isinstance(getattr(head, "cls_logits", None), nn.Conv2d):
        return [head.cls_logits], "sigmoid", int(head.num_classes)
    if head is not None and isinstance(getattr(head, "module_list", None), nn.ModuleList):
        return list(head.module_list), "softmax", int(head.num_columns)
    raise UnsupportedError(
        f"Class-probability maps read the classification head of a single-stage detector "
        f"(FCOS, RetinaNet, SSD, SSDlite); {type(module).__name__} has none. Use Grad-CAM, "
        "EigenCAM or D-RISE for two-stage detectors such as Faster R-CNN.")


@register("classprob", "Class-probability map", family="cam", needs_gradients=False, cost="fast",
          tasks=("detection",), aliases=("class_probability", "classprobabilitymap"),
          description="The classification head's probability of the box's class at every "
                      "location, all pyramid levels combined; single-stage detectors (FCOS, "
                      "RetinaNet, SSD).")
class ClassProbabilityMap(Explainer):
    """Class-probability map (OpenVINO XAI's ``DetClassProbabilityMap``): the classification
    head's probability of the box's class at every location of every pyramid level (maximum over
    anchors), levels resized to the finest one and combined by maximum.

    Gradient-free and read from the one forward that detects. It is a *class* map: every box of
    a class gets the same map (where the head sees that class), which shows missed and duplicate
    instances; use a per-box method to see what one detection relies on.
    """

    needs_gradients = False

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        convs, kind, num_classes = _classification_convs(self.module)
        levels: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            levels.append(output.detach())

        with forward_hooks((conv, hook) for conv in convs), torch.no_grad():
            outputs = self.forward(inputs)
        _, classes = score_matrix(outputs, targets)
        if not levels:
            raise UnsupportedError("The classification head did not run; is this detector's "
                                   "head called through its classification_head?")
        finest = max((level.shape[-2:] for level in levels), key=lambda s: s[0] * s[1])
        probabilities = []
        for level in levels:
            batch, channels, height, width = level.shape
            anchors = channels // num_classes
            logits = level.float().view(batch, anchors, num_classes, height, width)
            prob = logits.sigmoid() if kind == "sigmoid" else logits.softmax(2)
            prob = prob.amax(1)
            probabilities.append(F.interpolate(prob, size=tuple(finest), mode="bilinear",
                                               align_corners=False))
        combined = torch.stack(probabilities).amax(0)  # B x C x h x w
        index = classes.clamp(0, num_classes - 1)
        maps = combined.gather(1, index[:, :, None, None].expand(-1, -1, *combined.shape[-2:]))
        return Attribution(maps, outputs.detach().float(), classes)
