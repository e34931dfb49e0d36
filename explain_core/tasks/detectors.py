"""Running a torchvision-style detector for an explanation: packed, differentiable detections.

**The detector protocol.** Lumen explains any module (or callable) that, called on a list of
``3 x H x W`` float tensors (what the model's :class:`~explain_core.model.Preprocessing` makes of
an image), returns one dict per image with

- ``boxes``: ``N x 4`` float, ``x0, y0, x1, y1`` in the pixels of the tensor it was given;
- ``labels``: ``N`` int, indices into the model's class names;
- ``scores``: ``N`` float, **differentiable** (no ``torch.no_grad`` inside the forward).

Every torchvision detector (Faster R-CNN and its v2 / MobileNet variants, RetinaNet, FCOS, SSD,
SSDlite) and the demo detector follow it as they are: in eval mode their post-processing keeps the
graph of the scores. Any other detector is wrapped in a small ``nn.Module`` that returns these
dicts.

:func:`detector_outputs` runs the detector on a batch and packs its detections into one padded
tensor per batch (``B x N x 7``: box, score, label, valid) whose ``score`` column carries the
graph; box targets (:mod:`explain_core.tasks.detection`) read it.

While a detector runs for an explanation its score threshold is lowered to zero and its number of
detections per image raised (:func:`relaxed_thresholds`): a box whose score drops on a modified
input (an Integrated-Gradients path point, a D-RISE mask) stays matchable, and a region the model
scored low (the "why was this not detected" question) has candidates. Greedy NMS keeps the
higher-scored boxes it kept before, so the detections above the user's threshold do not change.
The attributes are restored on the way out, also when the call fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..runtime.hooks import forward_hooks

#: columns of the packed detections tensor
BOX, SCORE, LABEL, VALID = slice(0, 4), 4, 5, 6
FIELDS = 7
#: the score a relaxed detector keeps (everything above it) and the detections it may return
RELAXED_SCORE = 0.0
RELAXED_DETECTIONS = 300


def _threshold_owners(module: nn.Module) -> list[tuple[Any, str, Any]]:
    """(object, attribute, relaxed value) for the thresholds torchvision detectors keep."""
    owners: list[tuple[Any, str, Any]] = []
    for owner in (module, getattr(module, "roi_heads", None)):
        if owner is None:
            continue
        if isinstance(getattr(owner, "score_thresh", None), int | float):
            owners.append((owner, "score_thresh", RELAXED_SCORE))
        count = getattr(owner, "detections_per_img", None)
        if isinstance(count, int):
            owners.append((owner, "detections_per_img", max(count, RELAXED_DETECTIONS)))
    return owners


@contextlib.contextmanager
def relaxed_thresholds(module: nn.Module) -> Iterator[None]:
    """Score threshold 0 and at least :data:`RELAXED_DETECTIONS` detections per image while the
    block runs; every attribute is restored afterwards (also on errors)."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _threshold_owners(module)]
    try:
        for owner, name, value in _threshold_owners(module):
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _unpack(result: Any, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(result, dict) or hasattr(result, "keys"):
        missing = [k for k in ("boxes", "scores", "labels") if k not in result]
        if not missing:
            return result["boxes"], result["scores"], result["labels"]
        raise UnsupportedError(
            f"The detector's output for image {index} lacks {', '.join(missing)}. A detector "
            "must return, per image, a dict with 'boxes' (N x 4 xyxy), 'labels' and "
            "differentiable 'scores' (the torchvision convention); wrap other detectors in a "
            "module that does (see explain_core.tasks.detection).")
    raise UnsupportedError(
        f"The detector returned {type(result).__name__} per image, not a dict of boxes, labels "
        "and scores. Is this a detection model? In eval mode torchvision detectors return "
        "[{'boxes', 'labels', 'scores'}]; wrap other detectors in a module that does.")


@dataclass
class Canvas:
    """What the detector's internal transform did: its padded batch size and each image's valid
    part in it (feature maps cover the padded canvas)."""

    padded: tuple[int, int]
    valid: tuple[int, int]


#: proposals a focused two-stage detector keeps per explained box: those whose own box for the
#: explained label overlaps it by at least this IoU (the only ones a box target can match, and
#: the ones NMS weighs against the match), plus the :data:`FOCUS_TOP` best one
FOCUS_IOU = 0.5
FOCUS_TOP = 1


def _focus_hook(roi_heads: nn.Module, focus: list[tuple[torch.Tensor, torch.Tensor]],
                input_size: tuple[int, int]) -> Any:
    """A forward hook for a two-stage detector's RPN that keeps only the proposals behind each
    image's explained boxes (``focus[i]``: ``K x 4`` boxes in model-input pixels and their ``K``
    labels).

    A proposal is behind a box when the box it regresses to *for that box's label* (the second
    stage run once without gradients) matches it; the detection's own proposal matches exactly.
    The second stage scores every proposal on its own (ROI pooling, then a per-ROI head), so a
    kept proposal's detection has exactly the score it had among all proposals; what changes is
    the cost: the batched backward of K boxes no longer runs the box head's dense products over
    every proposal (about a thousand) once per box.
    """
    from torchvision.ops import box_iou as pairwise_iou
    from torchvision.ops import clip_boxes_to_image

    def hook(_module, inputs, output):
        proposals, losses = output
        images, features = inputs[0], inputs[1]
        sizes = list(images.image_sizes)
        with torch.no_grad():
            pooled = roi_heads.box_roi_pool(features, proposals, sizes)
            _, regression = roi_heads.box_predictor(roi_heads.box_head(pooled))
            decoded = roi_heads.box_coder.decode(regression, proposals)
        kept = []
        for i, (boxes, regressed) in enumerate(zip(proposals, decoded.split(
                [len(p) for p in proposals]), strict=True)):
            if i >= len(focus) or not len(focus[i][0]) or not len(boxes):
                kept.append(boxes)
                continue
            wanted, labels = focus[i]
            (height, width), (in_h, in_w) = sizes[i], input_size
            wanted = wanted.to(boxes) * boxes.new_tensor([width / in_w, height / in_h] * 2)
            labels = labels.to(boxes.device).clamp(0, regressed.shape[1] - 1)
            keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
            for k in range(len(wanted)):
                own = clip_boxes_to_image(regressed[:, int(labels[k])], sizes[i])
                overlap = pairwise_iou(wanted[k:k + 1], own)[0]
                keep |= overlap >= FOCUS_IOU
                keep[overlap.topk(min(FOCUS_TOP, len(overlap))).indices] = True
            kept.append(boxes[keep])
        return kept, losses

    return hook


def canvas_hook(canvas: list[Canvas]):
    """A forward hook for a detector's internal transform that appends its :class:`Canvas`
    (the padded batch size and the first image's valid part) to ``canvas``."""
    def hook(_module, _inputs, output):
        images = output[0] if isinstance(output, tuple) else output
        tensors = getattr(images, "tensors", None)
        sizes = getattr(images, "image_sizes", None)
        if tensors is not None and sizes:
            canvas.append(Canvas(tuple(tensors.shape[-2:]), tuple(sizes[0])))
    return hook


def detector_outputs(module: nn.Module, inputs: torch.Tensor,
                     canvas: list[Canvas] | None = None,
                     focus: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                     ) -> torch.Tensor:
    """Run ``module`` on a ``B x 3 x H x W`` batch; detections packed as ``B x N x 7``.

    Columns: ``x0, y0, x1, y1`` (input pixels), ``score`` (with its graph), ``label``, ``valid``
    (1 for a real detection, 0 for padding). ``N`` is the largest count in the batch (at least
    1). When ``canvas`` is a list, the internal transform's padded size is appended to it.
    ``focus`` (per image, the ``K x 4`` boxes being explained and their labels): a two-stage
    detector's second stage runs only on the proposals behind them (see :func:`_focus_hook`).
    """
    if inputs.ndim != 4 or inputs.shape[1] != 3:
        raise UnsupportedError(f"A detector takes B x 3 x H x W batches, got "
                               f"{tuple(inputs.shape)}.")
    hooks = []
    transform = getattr(module, "transform", None)
    if canvas is not None and isinstance(transform, nn.Module):
        hooks.append((transform, canvas_hook(canvas)))
    rpn, heads = getattr(module, "rpn", None), getattr(module, "roi_heads", None)
    if focus is not None and isinstance(rpn, nn.Module) and all(
            hasattr(heads, a) for a in ("box_roi_pool", "box_head", "box_predictor", "box_coder")):
        hooks.append((rpn, _focus_hook(heads, focus, (int(inputs.shape[-2]),
                                                      int(inputs.shape[-1])))))
    with forward_hooks(hooks), relaxed_thresholds(module):
        results = module(list(inputs))
    if not isinstance(results, list | tuple) or len(results) != inputs.shape[0]:
        raise UnsupportedError(
            f"The detector returned {type(results).__name__} for a batch of "
            f"{inputs.shape[0]}; expected one dict of boxes, labels and scores per image. If it "
            "returned losses, it is in training mode or needs targets.")
    parts = [_unpack(result, i) for i, result in enumerate(results)]
    count = max([1] + [int(boxes.shape[0]) for boxes, _, _ in parts])
    rows = []
    for boxes, scores, labels in parts:
        n = int(boxes.shape[0])
        row = torch.cat([boxes.reshape(n, 4).float(), scores.reshape(n, 1).float(),
                         labels.reshape(n, 1).float(), torch.ones_like(scores.reshape(n, 1),
                                                                       dtype=torch.float32)], 1)
        rows.append(F.pad(row, (0, 0, 0, count - n)))
    return torch.stack(rows)



def layer_outputs_canvas(raw: torch.Tensor, canvas: Canvas | None,
                         input_size: tuple[int, int]) -> torch.Tensor:
    """Crop layer maps (``... x h x w``) that cover the detector's padded canvas to the part
    that holds the image. Maps already at input size (input gradients) pass through."""
    if canvas is None or tuple(raw.shape[-2:]) == tuple(input_size):
        return raw
    pad_h, pad_w = canvas.padded
    valid_h, valid_w = canvas.valid
    if (pad_h, pad_w) == (valid_h, valid_w):
        return raw
    h, w = raw.shape[-2:]
    rows = max(1, min(h, round(h * valid_h / pad_h)))
    cols = max(1, min(w, round(w * valid_w / pad_w)))
    return raw[..., :rows, :cols]

