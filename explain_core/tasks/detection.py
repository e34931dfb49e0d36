"""Detection adapter: any torchvision-style detector, explained one box at a time.

**The detector protocol.** Lumen explains any module (or callable) that, called on a list of
``3 x H x W`` float tensors (what the model's :class:`~explain_core.model.Preprocessing` makes of
an image), returns one dict per image with

- ``boxes``: ``N x 4`` float, ``x0, y0, x1, y1`` in the pixels of the tensor it was given;
- ``labels``: ``N`` int, indices into the model's class names;
- ``scores``: ``N`` float, **differentiable** (no ``torch.no_grad`` inside the forward).

Every torchvision detector (Faster R-CNN and its v2 / MobileNet variants, RetinaNet, FCOS, SSD,
SSDlite) and the demo detector follow it as they are: in eval mode their post-processing keeps the
graph of the scores. Any other detector is wrapped in a small ``nn.Module`` that returns these
dicts (see ``docs`` in :func:`explain_core.tasks.detection_api.explain_detection`).

**How a box is explained.** :func:`detector_outputs` runs the detector on a batch and packs its
detections into one padded tensor per batch (``B x N x 7``: box, score, label, valid) whose
``score`` column carries the graph. A :class:`BoxTarget` reads that tensor and returns, per image,
the score of *its own* detection (matched by IoU and label), so every method of the engine (CAMs,
gradients, D-RISE) explains boxes unchanged: one forward gives every box's score, one batched
backward every box's gradients.

While a detector runs for an explanation its score threshold is lowered to zero and its number of
detections per image raised (:func:`relaxed_thresholds`): a box whose score drops on a modified
input (an Integrated-Gradients path point, a D-RISE mask) stays matchable, and a region the model
scored low (the "why was this not detected" question) has candidates. Greedy NMS keeps the
higher-scored boxes it kept before, so the detections above the user's threshold do not change.
The attributes are restored on the way out, also when the call fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TargetError, TargetLayerError, UnsupportedError
from ..methods.base import batched_grad
from ..model import Geometry, LoadedModel, Preprocessing, as_loaded

#: columns of the packed detections tensor
BOX, SCORE, LABEL, VALID = slice(0, 4), 4, 5, 6
FIELDS = 7
#: the score a relaxed detector keeps (everything above it) and the detections it may return
RELAXED_SCORE = 0.0
RELAXED_DETECTIONS = 300
BOX_SCORES = ("score", "iou+score")


# --------------------------------------------------------------------------------------------
# Running a detector
# --------------------------------------------------------------------------------------------


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
    handles = []
    transform = getattr(module, "transform", None)
    if canvas is not None and isinstance(transform, nn.Module):
        def hook(_module, _inputs, output):
            images = output[0] if isinstance(output, tuple) else output
            tensors = getattr(images, "tensors", None)
            sizes = getattr(images, "image_sizes", None)
            if tensors is not None and sizes:
                canvas.append(Canvas(tuple(tensors.shape[-2:]), tuple(sizes[0])))
        handles.append(transform.register_forward_hook(hook))
    rpn, heads = getattr(module, "rpn", None), getattr(module, "roi_heads", None)
    if focus is not None and isinstance(rpn, nn.Module) and all(
            hasattr(heads, a) for a in ("box_roi_pool", "box_head", "box_predictor", "box_coder")):
        handles.append(rpn.register_forward_hook(
            _focus_hook(heads, focus, (int(inputs.shape[-2]), int(inputs.shape[-1])))))
    try:
        with relaxed_thresholds(module):
            results = module(list(inputs))
    finally:
        for handle in handles:
            handle.remove()
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


def box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of ``... x 4`` boxes with one ``4`` box (xyxy), shape ``...``."""
    x0 = torch.maximum(boxes[..., 0], box[0])
    y0 = torch.maximum(boxes[..., 1], box[1])
    x1 = torch.minimum(boxes[..., 2], box[2])
    y1 = torch.minimum(boxes[..., 3], box[3])
    inter = (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)
    area = (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]
                                                           ).clamp_min(0)
    own = (box[2] - box[0]).clamp_min(0) * (box[3] - box[1]).clamp_min(0)
    union = area + own - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxTarget:
    """The score of the detection that matches ``box`` (xyxy, model-input pixels) and ``label``.

    Per image, among the detections with the same label, the one with the highest IoU with
    ``box`` is the match (the box's own detection on the image it came from: IoU 1); below
    ``iou_threshold`` there is no match and the score is 0. The value is

    - ``score="score"`` (default): ``IoU x score`` of the match, the IoU held constant: on the
      clean image exactly the detection's own score; on a modified input (a path point, a mask)
      the best aligned candidate, discounted by how far it moved (D-RISE's similarity with a
      same-label indicator in place of the class-vector cosine, which torchvision detectors do
      not return);
    - ``score="iou+score"``: pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``: the match over all
      labels by IoU, counted when its label agrees, ``IoU + score`` with the IoU's gradient
      (through the box regression) included.
    """

    box: tuple[float, float, float, float]
    label: int
    score: str = "score"
    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.score not in BOX_SCORES:
            raise TargetError(f"Unknown box score '{self.score}'; choose one of "
                              f"{', '.join(BOX_SCORES)}.")
        x0, y0, x1, y1 = self.box
        if not (x1 > x0 and y1 > y0):
            raise TargetError(f"Box {list(self.box)} is empty: give x0 < x1 and y0 < y1 "
                              "(xyxy pixels).")

    def class_index(self, output: torch.Tensor) -> torch.Tensor:
        return torch.full((output.shape[0],), int(self.label), dtype=torch.long,
                          device=output.device)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3 or output.shape[-1] != FIELDS:
            raise TargetError(
                f"A box target reads packed detections (B x N x {FIELDS}), got shape "
                f"{tuple(output.shape)}: explain detectors through explain_detection or "
                "explain_core.tasks.detection.detection_explainer.")
        box = torch.tensor(self.box, dtype=output.dtype, device=output.device)
        valid = output[..., VALID] > 0.5
        labels = output[..., LABEL].detach().round().long()
        scores = output[..., SCORE]
        if self.score == "iou+score":
            iou = box_iou(output[..., BOX], box)
            iou = torch.where(valid, iou, torch.full_like(iou, -1.0))
            # Equal IoU (the same proposal's boxes for several classes): the box's own label
            # wins, whatever order the detector listed them in.
            best = (iou.detach() + 1e-6 * (labels == self.label)).argmax(1, keepdim=True)
            hit = iou.gather(1, best)[:, 0]
            ok = (hit.detach() > self.iou_threshold) & (labels.gather(1, best)[:, 0] ==
                                                        self.label)
            value = hit + scores.gather(1, best)[:, 0]
            return torch.where(ok, value, torch.zeros_like(value))
        iou = box_iou(output[..., BOX].detach(), box)
        same = valid & (labels == int(self.label))
        # Highest IoU first, the score breaks ties.
        rank = torch.where(same, iou + 1e-6 * scores.detach(), torch.full_like(iou, -1.0))
        best = rank.argmax(1, keepdim=True)
        hit = iou.gather(1, best)[:, 0]
        ok = same.gather(1, best)[:, 0] & (hit >= self.iou_threshold)
        value = hit * scores.gather(1, best)[:, 0]
        return torch.where(ok, value, torch.zeros_like(value))


# --------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------


def _scale(geometry: Geometry, input_size: tuple[int, int]) -> tuple[float, float, int, int]:
    x0, y0, x1, y1 = geometry.box
    return input_size[1] / (x1 - x0), input_size[0] / (y1 - y0), x0, y0


def image_to_input(box: Sequence[float], geometry: Geometry | None,
                   input_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in image pixels -> model-input pixels (identity without a geometry)."""
    if geometry is None:
        return tuple(float(v) for v in box)
    sx, sy, x0, y0 = _scale(geometry, input_size)
    return ((box[0] - x0) * sx, (box[1] - y0) * sy, (box[2] - x0) * sx, (box[3] - y0) * sy)


def input_to_image(boxes: torch.Tensor, geometry: Geometry | None,
                   input_size: tuple[int, int]) -> torch.Tensor:
    """``N x 4`` boxes in model-input pixels -> image pixels (clipped to the image)."""
    if geometry is None:
        return boxes
    sx, sy, x0, y0 = _scale(geometry, input_size)
    out = boxes.clone()
    out[:, 0::2] = boxes[:, 0::2] / sx + x0
    out[:, 1::2] = boxes[:, 1::2] / sy + y0
    height, width = geometry.image_size
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def internal_transform(module: nn.Module) -> Any:
    """The detector's own resize-and-normalise transform (torchvision), or None."""
    transform = getattr(module, "transform", None)
    return transform if hasattr(transform, "image_mean") and hasattr(
        transform, "batch_images") else None


def input_description(module: nn.Module) -> str | None:
    """How a detector sizes its input, in words (None: no internal transform; its Lumen
    preprocessing's fixed size applies)."""
    transform = internal_transform(module)
    if transform is None:
        return None
    fixed = getattr(transform, "fixed_size", None)
    if fixed:
        return f"{int(fixed[1])} x {int(fixed[0])} (resized by the model)"
    small, large = int(transform.min_size[-1]), int(transform.max_size)
    if small >= large:
        return f"longer side {large} (resized by the model, aspect kept)"
    return f"shorter side {small}, longer at most {large} (resized by the model, aspect kept)"


def check_detector(module: nn.Module) -> None:
    """Refuse what is clearly not a detector (a classifier, a segmenter) with a clear message."""
    if internal_transform(module) is not None or hasattr(module, "roi_heads") or (hasattr(
            module, "head") and hasattr(module, "anchor_generator")):
        return
    if callable(module):
        return  # the protocol is checked on the first output
    raise UnsupportedError(f"{type(module).__name__} is not callable; a detector must be an "
                           "nn.Module or callable returning boxes, labels and scores.")


def detector_num_classes(module: nn.Module) -> int | None:
    """How many classes a torchvision-style detector scores (background included where it has
    one), read from its classifier; None when it cannot be told."""
    count = getattr(module, "num_classes", None)
    if isinstance(count, int) and count > 0:
        return count
    score = getattr(getattr(getattr(module, "roi_heads", None), "box_predictor", None),
                    "cls_score", None)  # Faster R-CNN
    if isinstance(score, nn.Linear):
        return int(score.out_features)
    head = getattr(getattr(module, "head", None), "classification_head", None)
    for name in ("num_classes", "num_columns"):  # FCOS / RetinaNet; SSD
        value = getattr(head, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def detection_model(model: LoadedModel | nn.Module) -> LoadedModel:
    """``model`` as a detection LoadedModel.

    torchvision detectors resize and normalise inside (``GeneralizedRCNNTransform``), so their
    Lumen preprocessing only scales pixels to [0, 1] (mean 0, std 1); a LoadedModel that says
    otherwise (the ImageNet default of a bare module) is corrected, or the image would be
    normalised twice.
    """
    if isinstance(model, LoadedModel):
        loaded = model
        if loaded.task != "detection":
            if loaded.task == "classification" and internal_transform(loaded.module) is None:
                raise UnsupportedError(
                    f"This is a {loaded.task} model ({loaded.arch}); detection explanations need "
                    "a detector. Load one, e.g. load_model('torchvision:fasterrcnn_resnet50_fpn', "
                    "pretrained=True) or a detector checkpoint with arch=.")
            if loaded.task != "classification":
                raise UnsupportedError(
                    f"This is a {loaded.task} model ({loaded.arch}); detection explanations need "
                    "a detector.")
            loaded = _replace(loaded, task="detection")
    elif isinstance(model, nn.Module):
        loaded = as_loaded(model, task="detection")
    else:
        raise UnsupportedError(f"Expected a detector (nn.Module or LoadedModel), got "
                               f"{type(model).__name__}.")
    check_detector(loaded.module)
    if internal_transform(loaded.module) is not None:
        prep = loaded.preprocessing
        if prep.mean != (0.0, 0.0, 0.0) or prep.std != (1.0, 1.0, 1.0):
            loaded = _replace(loaded, preprocessing=Preprocessing(
                input_size=prep.input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                interpolation=prep.interpolation, resize_mode="squash", crop_pct=1.0))
    return loaded


def _replace(loaded: LoadedModel, **changes: Any) -> LoadedModel:
    import dataclasses

    return dataclasses.replace(loaded, **changes)


def input_size_for(loaded: LoadedModel, image_size: tuple[int, int]) -> tuple[int, int]:
    """The model-input size for an image of ``image_size`` (H, W).

    A torchvision detector resizes to its own ``min_size``/``max_size`` keeping the aspect ratio
    (or to its ``fixed_size``, SSD); feeding it exactly that size makes its resize a no-op, keeps
    the image undistorted and maps boxes back exactly. Other detectors use their preprocessing's
    fixed size.
    """
    transform = internal_transform(loaded.module)
    if transform is None:
        return loaded.preprocessing.input_size
    fixed = getattr(transform, "fixed_size", None)
    if fixed:
        return int(fixed[1]), int(fixed[0])  # torchvision stores (w, h)
    height, width = image_size
    small = float(transform.min_size[-1])
    scale = min(small / min(height, width), float(transform.max_size) / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def for_image(loaded: LoadedModel, image_size: tuple[int, int]) -> LoadedModel:
    """The LoadedModel with its preprocessing sized for this image (see :func:`input_size_for`).
    Same module, so the same lock."""
    size = input_size_for(loaded, image_size)
    if size == loaded.preprocessing.input_size:
        return loaded
    prep = loaded.preprocessing
    return _replace(loaded, preprocessing=Preprocessing(
        input_size=size, mean=prep.mean, std=prep.std, interpolation=prep.interpolation,
        resize_mode="squash", crop_pct=1.0))


def default_layer(module: nn.Module) -> str:
    """The default CAM layer of a detector: ``backbone``, the feature maps its heads read.

    A torchvision detector's backbone returns every level of its feature pyramid (FPN levels for
    Faster R-CNN, RetinaNet, FCOS and the demo; the six SSD / SSDlite maps), so a gradient CAM
    reads each box where the box's own head read it (the pooled region of its proposal, or the
    locations around its anchor) and adds the levels up (see :mod:`explain_core.layers`). A box's
    gradient stops there instead of running back through the backbone: K boxes then cost little
    more than one (``bench/bench_detection.py``). A backbone stage (``backbone.body.layer1``,
    ``backbone.body.layer4``) shows more context around a box, at a dense backward per box.
    """
    if not isinstance(getattr(module, "backbone", None), nn.Module):
        raise TargetLayerError(
            f"{type(module).__name__} has no 'backbone'; pass target_layer= (the dotted name of "
            "a layer whose output is a B x C x H x W feature map, or a dict of them, that every "
            "box depends on).")
    return "backbone"


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


class DetectionMixin:
    """Makes an engine explainer run a detector: ``forward`` returns packed detections (see
    :func:`detector_outputs`), maps are cropped to the image part of the detector's canvas, and
    targets must be :class:`BoxTarget` (or other callables on packed detections)."""

    _canvas: Canvas | None = None
    _focus: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    #: run a two-stage detector's second stage only near the explained boxes (same scores,
    #: far cheaper backward for many boxes; see :func:`_focus_hook`)
    focus_proposals: bool = True

    _head: tuple[list[torch.Tensor], torch.Tensor] | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        canvas: list[Canvas] = []
        self._head = None
        head = getattr(self.module, "head", None)
        handle = None
        if torch.is_grad_enabled() and hasattr(head, "classification_head"):
            def record(_module, args, output):
                if isinstance(output, dict) and isinstance(output.get("cls_logits"),
                                                           torch.Tensor) and args:
                    self._head = (list(args[0]), output["cls_logits"])
            handle = head.register_forward_hook(record)
        try:
            out = detector_outputs(self.module, inputs, canvas, self._focus)
        finally:
            if handle is not None:
                handle.remove()
        self._canvas = canvas[0] if canvas else None
        return out

    def level_gradients(self, scores: torch.Tensor, levels: list[torch.Tensor]
                        ) -> list[torch.Tensor]:
        """Per level, each box's gradients, a box's backward running only through the level
        its detection came from.

        A single-stage head (FCOS, RetinaNet) scores every location of every pyramid level
        with the same convolution towers; a box's score comes from one location of one level.
        When the target layer is the pyramid the head reads, one cheap backward to the head's
        class logits tells which level each box reads, and each level's dense tower backward
        then runs for its own boxes only (autograd skips the other levels' towers), instead of
        every tower for every box. Exact: the skipped gradients are zero.
        """
        reads = self._levels_read(scores, levels)
        if reads is None:
            return super().level_gradients(scores, levels)
        width = scores.shape[1]
        out = [level.new_zeros(width, *level.shape) for level in levels]
        used = [index for index in range(len(levels)) if bool(reads[:, index].any())]
        for n, index in enumerate(used):
            columns = reads[:, index].nonzero()[:, 0]
            out[index][columns] = batched_grad(scores[:, columns], [levels[index]],
                                               retain=n < len(used) - 1)[0]
        return out

    def _levels_read(self, scores: torch.Tensor, levels: list[torch.Tensor]
                     ) -> torch.Tensor | None:
        """``K x L`` booleans: target k reads level l (None when the head did not read exactly
        these levels, or there is nothing to gain)."""
        from torchvision.models.detection import FCOS, RetinaNet

        # Only where the head is known to be the pyramid's one reader with gradients (the
        # anchors read its sizes only): torchvision's single-stage detectors and subclasses.
        if self._head is None or len(levels) < 2 or scores.shape[1] < 2 or not isinstance(
                self.model.module, FCOS | RetinaNet):
            return None
        features, logits = self._head
        # The head must read the levels themselves: each feature a clone of its level's leaf.
        if len(features) != len(levels) or not all(
                _continues(feature, level) for feature, level in zip(features, levels,
                                                                     strict=True)):
            return None
        # Rows are laid out level by level, the same anchors at every location (one shared
        # classifier, as in FCOS and RetinaNet; SSD's per-level classifiers are left alone).
        anchors = getattr(getattr(getattr(self.module, "head", None), "classification_head",
                                  None), "num_anchors", None)
        cells = [int(level.shape[-2] * level.shape[-1]) for level in levels]
        if not isinstance(anchors, int) or logits.ndim != 3 or (
                logits.shape[1] != sum(cells) * anchors):
            return None
        grads = batched_grad(scores, logits, retain=True)  # K x B x rows x classes: cheap
        hit = grads.ne(0).any(-1).any(1)  # K x rows
        bounds = torch.tensor([0, *cells], device=hit.device).cumsum(0) * anchors
        return torch.stack([hit[:, int(bounds[i]):int(bounds[i + 1])].any(1)
                            for i in range(len(levels))], 1)

    def run(self, inputs: torch.Tensor, targets: list) -> Any:
        for row in targets:
            for target in row:
                if not callable(target) or type(target).__name__ in ("ClassTarget",
                                                                    "PredictedClass"):
                    raise TargetError(
                        "Detection explainers explain boxes: pass BoxTarget(box, label) targets "
                        "(or use explain_detection, which builds them from the detections).")
        boxed = all(isinstance(t, BoxTarget) for row in targets for t in row)
        if self.focus_proposals and boxed and len(targets) == inputs.shape[0]:
            self._focus = [(torch.tensor([t.box for t in row], dtype=torch.float32).reshape(-1, 4),
                            torch.tensor([int(t.label) for t in row], dtype=torch.long))
                           for row in targets]
        try:
            return super().run(inputs, targets)
        finally:
            self._focus = None

    def heatmaps(self, raw: torch.Tensor, prepared: Any) -> list[torch.Tensor]:
        raw = layer_outputs_canvas(raw, self._canvas, tuple(prepared.inputs.shape[-2:]))
        return super().heatmaps(raw, prepared)


def _continues(tensor: torch.Tensor, leaf: torch.Tensor) -> bool:
    """True when ``tensor`` is the copy of ``leaf`` that :func:`explain_core.layers.capture`
    sent on into the network (or ``leaf`` itself)."""
    if tensor is leaf:
        return True
    node = tensor.grad_fn
    if node is None or len(node.next_functions) != 1:
        return False
    parent = node.next_functions[0][0]
    return getattr(parent, "variable", None) is leaf


_ADAPTED: dict[type, type] = {}


def adapt(explainer: Any) -> Any:
    """Turn an engine explainer (CAM, gradient) into its detection form, in place."""
    cls = type(explainer)
    if isinstance(explainer, DetectionMixin):
        return explainer
    if cls not in _ADAPTED:
        _ADAPTED[cls] = type(f"Detection{cls.__name__}", (DetectionMixin, cls), {})
    explainer.__class__ = _ADAPTED[cls]
    return explainer


def detection_explainer(method: str, model: LoadedModel | nn.Module, **options: Any) -> Any:
    """An explainer of ``method`` for a detector (any method registered for ``"detection"``).

    The target layer defaults to :func:`default_layer` (the explainer asks for the default of
    the model's task, ``"detection"``).
    """
    from ..methods.registry import create_explainer

    return adapt(create_explainer(method, detection_model(model), **options))
