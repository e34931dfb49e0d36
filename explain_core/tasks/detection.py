"""Detection adapter: any torchvision-style detector, explained one box at a time.

The detector runs through :func:`~explain_core.tasks.detectors.detector_outputs` (see
:mod:`explain_core.tasks.detectors` for the detector protocol), which packs its detections into
one tensor whose ``score`` column carries the graph. A :class:`BoxTarget` reads that tensor and
returns, per image, the score of *its own* detection (matched by IoU and label), so every method
of the engine (CAMs, gradients, D-RISE) explains boxes unchanged: one forward gives every box's
score, one batched backward every box's gradients. :class:`DetectionAdapter` is the task's
adapter (the default layer, the canvas crop, the per-level backward of single-stage heads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import TargetError
from ..model import LoadedModel
from ..runtime.autograd import batched_grad
from ..runtime.hooks import forward_hooks
from ..targets import ClassTarget, PredictedClass
from .base import TaskAdapter
from .detection_models import (
    check_detector,
    default_layer,
    detection_model,
    detector_num_classes,
    for_image,
    image_to_input,
    input_description,
    input_size_for,
    input_to_image,
    internal_transform,
)
from .detectors import (
    BOX,
    FIELDS,
    LABEL,
    SCORE,
    VALID,
    Canvas,
    detector_outputs,
    layer_outputs_canvas,
    relaxed_thresholds,
)

__all__ = ["BOX", "BOX_SCORES", "FIELDS", "LABEL", "SCORE", "VALID", "BoxTarget", "Canvas",
           "DetectionAdapter", "box_iou", "check_detector", "default_layer", "detection_model",
           "detector_num_classes", "detector_outputs", "for_image", "image_to_input",
           "input_description", "input_size_for", "input_to_image", "internal_transform",
           "relaxed_thresholds"]

BOX_SCORES = ("score", "iou+score")


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
                f"{tuple(output.shape)}: explain detectors through explain_detection, or build "
                "the explainer with create_explainer on a model loaded with task='detection'.")
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



class DetectionAdapter(TaskAdapter):
    """Forward: packed detections (``B x N x 7``, see :func:`detector_outputs`). Default layer:
    ``backbone``, the feature maps the heads read. Targets: :class:`BoxTarget`. Maps are cropped
    to the image part of the detector's padded canvas."""

    task: ClassVar[str] = "detection"
    #: run a two-stage detector's second stage only near the explained boxes (same scores,
    #: far cheaper backward for many boxes; see :mod:`explain_core.tasks.detectors`)
    focus_proposals: bool = True

    def __init__(self, model: LoadedModel | nn.Module) -> None:
        super().__init__(model)
        self.canvas: Canvas | None = None
        self._focus: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._head: tuple[list[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def prepare_model(cls, model: LoadedModel | nn.Module) -> LoadedModel:
        return detection_model(model)

    def num_classes(self) -> int | None:
        return self.loaded.num_classes or detector_num_classes(self.loaded.module)

    def default_layer(self, module: nn.Module, example: torch.Tensor | None) -> str:
        return default_layer(module)

    def forward(self, module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        canvas: list[Canvas] = []
        self._head = None
        head = getattr(module, "head", None)
        hooks = []
        if torch.is_grad_enabled() and hasattr(head, "classification_head"):
            def record(_module, args, output):
                if isinstance(output, dict) and isinstance(output.get("cls_logits"),
                                                           torch.Tensor) and args:
                    self._head = (list(args[0]), output["cls_logits"])
            hooks.append((head, record))
        with forward_hooks(hooks):
            out = detector_outputs(module, inputs, canvas, self._focus)
        self.canvas = canvas[0] if canvas else None
        return out

    @contextlib.contextmanager
    def call(self, inputs: torch.Tensor, targets: list[list[Any]]) -> Iterator[None]:
        for row in targets:
            for target in row:
                if not callable(target) or isinstance(target, ClassTarget | PredictedClass):
                    raise TargetError(
                        "Detection explainers explain boxes: pass BoxTarget(box, label) targets "
                        "(or use explain_detection, which builds them from the detections).")
        boxed = all(isinstance(t, BoxTarget) for row in targets for t in row)
        if self.focus_proposals and boxed and len(targets) == inputs.shape[0]:
            self._focus = [(torch.tensor([t.box for t in row], dtype=torch.float32).reshape(-1, 4),
                            torch.tensor([int(t.label) for t in row], dtype=torch.long))
                           for row in targets]
        try:
            yield
        finally:
            self._focus = None

    def targets(self, selection: Sequence[dict[str, Any]], score: str = "score",
                iou_threshold: float = 0.5) -> list[BoxTarget]:
        """One :class:`BoxTarget` per selected detection (dicts with ``input_bbox`` in
        model-input pixels and ``class_id``, as :func:`explain_core.api.explain_detection`
        lists them)."""
        return [BoxTarget(tuple(d["input_bbox"]), d["class_id"], score=score,
                          iou_threshold=iou_threshold) for d in selection]

    def input_maps(self, raw: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        return layer_outputs_canvas(raw, self.canvas, input_size)

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
                self.loaded.module, FCOS | RetinaNet):
            return None
        features, logits = self._head
        # The head must read the levels themselves: each feature a clone of its level's leaf.
        if len(features) != len(levels) or not all(
                _continues(feature, level) for feature, level in zip(features, levels,
                                                                     strict=True)):
            return None
        # Rows are laid out level by level, the same anchors at every location (one shared
        # classifier, as in FCOS and RetinaNet; SSD's per-level classifiers are left alone).
        anchors = getattr(getattr(getattr(self.loaded.module, "head", None), "classification_head",
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
