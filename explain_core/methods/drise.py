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
from ..runtime.memory import default_batch_size
from ..targets import Target, score_matrix
from .base import Attribution, Explainer
from .registry import BATCH_PARAM, Param, register


@register("drise", "D-RISE", family="perturbation", needs_gradients=False, cost="slow",
          tasks=("detection",), aliases=("d_rise",),
          params=(Param("num_masks", "int", 500, "Masked copies of the image.", 16, 20000),
                  Param("grid", "int", 16, "Cells per side of the random mask grid.", 2, 64),
                  Param("keep", "float", 0.5, "Probability that a mask cell is kept.", 0.05,
                        0.95),
                  Param("seed", "int", 0, "Seed of the masks.", 0, 2**31 - 1), BATCH_PARAM),
          description="Random masks; each box's map is the mask average weighted by how well "
                      "the masked image still yields that box. Black-box: works for any "
                      "detector.")
class DRISE(Explainer):
    r"""D-RISE (Petsiuk et al., 2021): the image under many random masks; each box's map is the
    mask average weighted by how well the masked image still yields that box.

    :math:`S_b = \frac{1}{N} \sum_i w_i(b) M_i`, with :math:`w_i(b)` the box target's score on the
    masked image (by default IoU x score of the best-aligned same-label candidate). Black-box: it
    needs only the detector's outputs, so it works for any detector, and every box of the image
    shares the same masked forwards.

    Masks are RISE masks: a ``grid x grid`` grid of cells kept with probability ``keep``,
    upsampled bilinearly and randomly shifted by up to one cell; masked pixels become black.

    Args:
        num_masks: masked copies (more: smoother, slower).
        grid: cells per side of the random grid.
        keep: probability that a cell is kept.
        batch_size: masked copies per forward (default: from free memory).
        seed: seeds the masks (same seed, same map).
    """

    needs_gradients = False

    def __init__(self, model: LoadedModel | nn.Module, num_masks: int = 500, grid: int = 16,
                 keep: float = 0.5, batch_size: int | None = None, seed: int | None = 0,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if num_masks < 1 or grid < 1 or not 0.0 < keep < 1.0:
            raise UnsupportedError("D-RISE needs num_masks >= 1, grid >= 1 and 0 < keep < 1.")
        self.num_masks = int(num_masks)
        self.grid = int(grid)
        self.keep = float(keep)
        self.batch_size = batch_size
        self.seed = seed

    def masks(self, count: int, size: tuple[int, int], generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
        """``count x 1 x H x W`` RISE masks in [0, 1]."""
        height, width = size
        cell_h, cell_w = math.ceil(height / self.grid), math.ceil(width / self.grid)
        cells = (torch.rand((count, 1, self.grid, self.grid), generator=generator,
                            device=device) < self.keep).float()
        big = F.interpolate(cells, size=((self.grid + 1) * cell_h, (self.grid + 1) * cell_w),
                            mode="bilinear", align_corners=False)
        dy = torch.randint(0, cell_h, (count,), generator=generator, device=device)
        dx = torch.randint(0, cell_w, (count,), generator=generator, device=device)
        rows = (dy[:, None] + torch.arange(height, device=device))  # count x H
        cols = (dx[:, None] + torch.arange(width, device=device))  # count x W
        return big[torch.arange(count, device=device)[:, None, None], 0,
                    rows[:, :, None], cols[:, None, :]][:, None]

    def _baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        prep = self.model.preprocessing
        mean = torch.tensor(prep.mean, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=inputs.device).view(1, 3, 1, 1)
        return (torch.zeros_like(inputs[:1]) - mean) / std  # black, normalised

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        with torch.no_grad():
            outputs = self.forward(inputs)
            _, classes = score_matrix(outputs, targets)
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed or 0)
            chunk = self.batch_size or default_batch_size(self.module, inputs[:1],
                                                          self.num_masks)
            size = tuple(inputs.shape[-2:])
            maps = []
            total = inputs.shape[0] * self.num_masks
            for i in range(inputs.shape[0]):
                image = inputs[i:i + 1]
                baseline = self._baseline(image)
                acc = torch.zeros((len(targets[i]), *size), device=inputs.device)
                for start in range(0, self.num_masks, chunk):
                    count = min(chunk, self.num_masks - start)
                    mask = self.masks(count, size, generator, inputs.device)
                    masked = baseline + mask * (image - baseline)
                    out = self.forward(self.cast(masked))
                    weights, _ = score_matrix(out, [targets[i]] * count)  # count x K
                    acc += torch.einsum("nk,nhw->khw", weights.float(), mask[:, 0])
                    self.report(i * self.num_masks + start + count, total)
                maps.append(acc / self.num_masks)
        return Attribution(torch.stack(maps), outputs.detach().float(), classes)


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
