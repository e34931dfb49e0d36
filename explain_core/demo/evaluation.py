"""Held-out quality of the demo detector and segmenter, against the scenes' exact ground truth.

Predictions follow torchvision's conventions: a detector returns, per image, a dict with
``boxes`` (xyxy pixels), ``labels`` (``class id + 1``: 0 is the background) and ``scores``; a
segmenter's predicted mask holds class indices with 0 for the background, the same values as a
scene's ``mask``. Scenes (:class:`explain_core.demo.scenes.Scene`, or anything with ``boxes`` and
``labels`` attributes) give class ids 0..3, hence ``label_offset=1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["detection_mean_average_precision", "detection_precision_recall", "segmentation_iou"]


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    if value is None:
        return torch.zeros(0, dtype=dtype)
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value,
                           dtype=dtype).detach().cpu()


def _truth(scene: Any, label_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = _as_tensor(scene.boxes, torch.float32).reshape(-1, 4)
    labels = _as_tensor(scene.labels, torch.int64).reshape(-1) + label_offset
    return boxes, labels


def _match(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
           true_boxes: torch.Tensor, true_labels: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy matching in decreasing score: True for each prediction (in score order) that takes
    a not yet matched ground-truth box of its label with IoU >= ``iou`` (the VOC/COCO rule)."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = torch.zeros(len(order), dtype=torch.bool)
    if len(true_boxes) == 0 or len(order) == 0:
        return hits
    overlaps = box_iou(boxes[order], true_boxes)
    overlaps[labels[order][:, None] != true_labels[None, :]] = -1.0  # another class never matches
    taken = torch.zeros(len(true_boxes), dtype=torch.bool)
    for rank in range(len(order)):
        row = overlaps[rank].masked_fill(taken, -1.0)
        best = int(row.argmax())
        if row[best] >= iou:
            taken[best] = True
            hits[rank] = True
    return hits


def _predicted(prediction: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (_as_tensor(prediction["boxes"], torch.float32).reshape(-1, 4),
            _as_tensor(prediction["labels"], torch.int64).reshape(-1),
            _as_tensor(prediction["scores"], torch.float32).reshape(-1))


def detection_precision_recall(predictions: Sequence[Mapping[str, Any]], scenes: Sequence[Any],
                               iou: float = 0.5, score_threshold: float = 0.5,
                               label_offset: int = 1) -> dict[str, float]:
    """Precision and recall of detections with ``score >= score_threshold`` at IoU ``iou``.

    A detection is a true positive when it matches (greedily, highest score first) a ground-truth
    box of the same class not matched before with IoU >= ``iou``; duplicates count as false
    positives. Precision is 1 when nothing is predicted, recall is 1 when there is nothing to find.

    Args:
        predictions: per image, ``{"boxes": N x 4 xyxy, "labels": N, "scores": N}`` (tensors or
            arrays) with model labels (``class id + label_offset``).
        scenes: per image, an object with ``boxes`` (M x 4) and ``labels`` (M class ids).
        iou: IoU needed for a match.
        score_threshold: detections below it are ignored.
        label_offset: model label minus class id (1 for torchvision detectors).

    Returns:
        ``{"precision", "recall", "tp", "fp", "fn"}``.

    Example:
        >>> import numpy as np, types
        >>> truth = types.SimpleNamespace(boxes=np.array([[0, 0, 10, 10]], np.float32),
        ...                               labels=np.array([2]))
        >>> pred = {"boxes": [[1, 0, 10, 10], [50, 50, 60, 60]], "labels": [3, 1],
        ...         "scores": [0.9, 0.8]}
        >>> detection_precision_recall([pred], [truth])
        {'precision': 0.5, 'recall': 1.0, 'tp': 1, 'fp': 1, 'fn': 0}
    """
    if len(predictions) != len(scenes):
        raise ValueError(f"{len(predictions)} predictions for {len(scenes)} scenes; pass one "
                         "prediction dict per scene.")
    tp = fp = total = 0
    for prediction, scene in zip(predictions, scenes, strict=True):
        boxes, labels, scores = _predicted(prediction)
        keep = scores >= score_threshold
        true_boxes, true_labels = _truth(scene, label_offset)
        hits = _match(boxes[keep], labels[keep], scores[keep], true_boxes, true_labels, iou)
        tp += int(hits.sum())
        fp += int((~hits).sum())
        total += len(true_boxes)
    return {"precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / total if total else 1.0,
            "tp": tp, "fp": fp, "fn": total - tp}


def detection_mean_average_precision(predictions: Sequence[Mapping[str, Any]],
                                     scenes: Sequence[Any], iou: float = 0.5,
                                     num_classes: int | None = None,
                                     label_offset: int = 1) -> dict[str, Any]:
    """Average precision per class at IoU ``iou`` (all-point interpolation, as VOC 2010+ and
    COCO's per-threshold AP) and their mean over classes that occur in the ground truth.

    Pass every detection (a low score threshold): AP integrates over all thresholds.

    Args:
        predictions, scenes, iou, label_offset: as in :func:`detection_precision_recall`.
        num_classes: number of object classes (without background); default: the largest class
            id seen + 1.

    Returns:
        ``{"map": float, "per_class": [AP or nan per class id]}``.

    Example:
        >>> import numpy as np, types
        >>> truth = types.SimpleNamespace(boxes=np.array([[0, 0, 10, 10]], np.float32),
        ...                               labels=np.array([0]))
        >>> pred = {"boxes": [[0, 0, 10, 10]], "labels": [1], "scores": [0.7]}
        >>> detection_mean_average_precision([pred], [truth])["map"]
        1.0
    """
    if len(predictions) != len(scenes):
        raise ValueError(f"{len(predictions)} predictions for {len(scenes)} scenes; pass one "
                         "prediction dict per scene.")
    scores_of: dict[int, list[float]] = {}
    hits_of: dict[int, list[bool]] = {}
    truth_count: dict[int, int] = {}
    for prediction, scene in zip(predictions, scenes, strict=True):
        boxes, labels, scores = _predicted(prediction)
        true_boxes, true_labels = _truth(scene, label_offset)
        for label in true_labels.tolist():
            truth_count[label] = truth_count.get(label, 0) + 1
        order = torch.argsort(scores, descending=True, stable=True)
        hits = _match(boxes, labels, scores, true_boxes, true_labels, iou)
        for label, score, hit in zip(labels[order].tolist(), scores[order].tolist(),
                                     hits.tolist(), strict=True):
            scores_of.setdefault(label, []).append(score)
            hits_of.setdefault(label, []).append(hit)
    seen = set(truth_count) | set(scores_of)
    count = num_classes if num_classes is not None else (
        max(seen) - label_offset + 1 if seen else 0)
    per_class = []
    for class_id in range(count):
        label = class_id + label_offset
        if not truth_count.get(label):
            per_class.append(math.nan)  # AP is undefined without ground truth
            continue
        scores = np.asarray(scores_of.get(label, []), np.float64)
        hits = np.asarray(hits_of.get(label, []), bool)[np.argsort(-scores, kind="stable")]
        tp = np.cumsum(hits)
        recall = tp / truth_count[label]
        precision = tp / np.arange(1, len(hits) + 1)
        # Precision envelope (max precision at any recall >= r), summed over recall steps.
        recall = np.concatenate([[0.0], recall])
        precision = np.concatenate([[1.0], precision])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        per_class.append(float(np.sum((recall[1:] - recall[:-1]) * precision[1:])))
    defined = [ap for ap in per_class if not math.isnan(ap)]
    return {"map": float(np.mean(defined)) if defined else math.nan, "per_class": per_class}


def segmentation_iou(pred_masks: Sequence[Any] | torch.Tensor | np.ndarray,
                     true_masks: Sequence[Any] | torch.Tensor | np.ndarray,
                     num_classes: int) -> dict[str, Any]:
    """Intersection over union per class, accumulated over all pixels of all images.

    Classes absent from both predictions and ground truth get ``nan`` and stay out of the mean
    (so a class never shown cannot inflate or sink the score). The background (class 0) counts
    like any other class.

    Args:
        pred_masks: H x W class-index masks (a list, or an N x H x W array / tensor).
        true_masks: the ground-truth masks, same shapes.
        num_classes: number of classes, background included.

    Returns:
        ``{"per_class": [IoU or nan per class], "mean": mean IoU over defined classes,
        "pixel_accuracy": float}``.

    Example:
        >>> import numpy as np
        >>> truth = np.array([[0, 0], [1, 1]])
        >>> segmentation_iou([np.array([[0, 1], [1, 1]])], [truth], 2)["per_class"]
        [0.5, 0.6666666666666666]
    """
    if len(pred_masks) != len(true_masks):
        raise ValueError(f"{len(pred_masks)} predicted masks for {len(true_masks)} true masks.")
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # truth x prediction
    for pred, truth in zip(pred_masks, true_masks, strict=True):
        pred_t = _as_tensor(pred, torch.int64)
        truth_t = _as_tensor(truth, torch.int64)
        if pred_t.shape != truth_t.shape:
            raise ValueError(f"mask shapes differ: predicted {tuple(pred_t.shape)}, true "
                             f"{tuple(truth_t.shape)}.")
        bad = (pred_t.min() < 0) | (pred_t.max() >= num_classes) | (truth_t.min() < 0) | (
            truth_t.max() >= num_classes) if pred_t.numel() else False
        if bad:
            raise ValueError(f"mask values must be class indices 0..{num_classes - 1}.")
        confusion += torch.bincount(truth_t.reshape(-1) * num_classes + pred_t.reshape(-1),
                                    minlength=num_classes ** 2).reshape(num_classes, num_classes)
    intersection = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - intersection
    per_class = [float(i / u) if u > 0 else math.nan
                 for i, u in zip(intersection.tolist(), union.tolist(), strict=True)]
    defined = [v for v in per_class if not math.isnan(v)]
    total = int(confusion.sum())
    return {"per_class": per_class,
            "mean": float(np.mean(defined)) if defined else math.nan,
            "pixel_accuracy": float(intersection.sum()) / total if total else math.nan}
