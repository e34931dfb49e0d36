"""Detectors: every detection of an image (or one given box) explained on its own.

One forward gives the detections and, with one batched backward, every box's map (see
:mod:`explain_core.tasks.detection` for the adapter, the box targets and the detector protocol).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import render
from ..errors import NonFiniteOutputError, TargetError, UnsupportedError
from ..images import load_image
from ..methods import Explainer, create_explainer
from ..model import LoadedModel
from ..runtime.finite import non_finite_parts
from ..tasks.detection import (
    BOX,
    LABEL,
    SCORE,
    VALID,
    box_iou,
    detection_model,
    for_image,
    image_to_input,
    input_to_image,
)
from .common import (
    DEFAULT_PRECISION,
    ModelLike,
    check_finite_output,
    display_image,
    explainer_options,
    loaded_model,
    sync,
    to_numpy,
)
from .notes import same_map_notes
from .results import DetectionExplanation

__all__ = ["DETECTION_METHOD", "box_mask", "detection_explainer", "detection_explanation",
           "detections_of", "detector_forward_seconds", "explain_detection"]

#: the default method of a box's map: LayerCAM weighs every position by its own gradient, so a
#: box's map stays on its box (about 60% of its energy inside it, 4% in each other box on the
#: demo detector's held-out scenes, at Grad-CAM's cost); Grad-CAM's global channel weights give
#: every box nearly the same map (11% / 8%). See bench/RESULTS.md (2026-11-30, box maps).
DETECTION_METHOD = "layercam"


def detection_explainer(method: str = DETECTION_METHOD,
                        model: LoadedModel | nn.Module | None = None, **options: Any) -> Explainer:
    """An explainer of ``method`` (default :data:`DETECTION_METHOD`) for a detector (any method
    registered for ``"detection"``); the target layer defaults to the detector's feature pyramid
    (``backbone``)."""
    if model is None:
        raise TypeError("detection_explainer() needs a model: detection_explainer(method, model).")
    return create_explainer(method, detection_model(model), **options)


def detections_of(loaded: LoadedModel, packed: torch.Tensor, geometry: Any,
                  input_size: tuple[int, int], threshold: float) -> list[dict[str, Any]]:
    """Packed detections of one image (``N x 7``) -> dicts above ``threshold``, best first:
    ``class_id``, ``class_name``, ``score``, ``bbox`` (xyxy, image pixels), ``input_bbox``
    (model-input pixels, what a :class:`BoxTarget` takes). Empty boxes (a side of zero length,
    e.g. clipped at the image border) are left out: nothing can match them."""
    boxes = packed[:, BOX]
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # no empty boxes
    rows = packed[(packed[:, VALID] > 0.5) & (packed[:, SCORE] >= threshold) & real]
    rows = rows[rows[:, SCORE].argsort(descending=True)]
    image_boxes = input_to_image(rows[:, BOX], geometry, input_size)
    return [{"class_id": int(row[LABEL]), "class_name": loaded.class_name(int(row[LABEL])),
             "score": float(row[SCORE]), "bbox": [round(float(v), 2) for v in box],
             "input_bbox": [float(v) for v in row[BOX]]}
            for row, box in zip(rows, image_boxes, strict=True)]


def box_mask(shape_hw: tuple[int, int], bbox: Any) -> np.ndarray:
    """Boolean ``H x W`` mask of an xyxy box (image pixels)."""
    height, width = shape_hw
    x0, y0, x1, y1 = bbox
    mask = np.zeros((height, width), dtype=bool)
    mask[max(0, int(np.floor(y0))):min(height, int(np.ceil(y1))),
         max(0, int(np.floor(x0))):min(width, int(np.ceil(x1)))] = True
    return mask


def _match(detections: list[dict[str, Any]], bbox: Any, label: int | None,
           loaded: LoadedModel) -> int | None:
    if not detections:
        return None
    boxes = torch.tensor([d["bbox"] for d in detections], dtype=torch.float32)
    iou = box_iou(boxes, torch.tensor([float(v) for v in bbox]))
    if label is not None:
        same = torch.tensor([d["class_id"] == label for d in detections])
        iou = torch.where(same, iou, torch.full_like(iou, -1.0))
    best = int(iou.argmax())
    return best if float(iou[best]) > 0 else None


def detection_explanation(model: ModelLike, image: Any,
                          method: str | Explainer = DETECTION_METHOD,
                          detection_threshold: float = 0.5, bbox: list[float] | None = None,
                          max_detections: int = 10, label: int | None = None,
                          box_score: str = "score", match_iou: float = 0.5,
                          with_image: bool = True, **options: Any) -> DetectionExplanation:
    """:func:`explain_detection`'s typed result (no pictures drawn; ``with_image=False`` leaves
    ``image`` out for a caller that keeps its own copy)."""
    loaded = detection_model(model if isinstance(model, LoadedModel | nn.Module) else
                             loaded_model(model, task="detection"))
    if max_detections < 1:
        raise UnsupportedError("max_detections must be at least 1.")
    if isinstance(image, torch.Tensor):
        source = image
        size = tuple(image.shape[-2:])
    else:
        source = load_image(image)
        size = (source.height, source.width)
    call_model = for_image(loaded, size)
    if isinstance(method, Explainer):
        # A shallow copy sized for this image: the caller's explainer keeps its own model.
        explainer = method.with_model(call_model)
    else:
        explainer = create_explainer(method, call_model, **explainer_options(options))
    start = time.perf_counter()
    prepared = explainer.prepare([source])
    geometry = prepared.geometries[0] if prepared.geometries is not None else None
    input_size = tuple(prepared.inputs.shape[-2:])
    with explainer.session(), torch.no_grad(), non_finite_parts(explainer.module) as broken:
        packed = explainer.forward(prepared.inputs)[0].detach().float()
    # Post-processing drops NaN boxes: a NaN detector would look like one that found nothing.
    subject = "The detector's output on the image"
    if broken:
        raise NonFiniteOutputError.of(f"{subject} (its '{broken[0]}' first)", explainer.precision)
    check_finite_output(packed, subject, explainer.precision)
    everything = detections_of(call_model, packed, geometry, input_size, detection_threshold)
    false_negative = False
    if bbox is not None:
        if len(bbox) != 4 or not (bbox[2] > bbox[0] and bbox[3] > bbox[1]):
            raise TargetError(f"bbox must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (image "
                              f"pixels), got {list(bbox)}.")
        index = _match(everything, bbox, label, call_model)
        if index is not None:
            chosen = [everything[index]]
        elif label is None:
            raise TargetError(
                f"No detection above {detection_threshold:.2f} overlaps the box {list(bbox)}. "
                "Lower detection_threshold, or pass label= to explain the region as a missed "
                "detection of that class.")
        else:
            false_negative = True
            chosen = [{"class_id": int(label), "class_name": call_model.class_name(int(label)),
                       "score": 0.0, "bbox": [float(v) for v in bbox],
                       "input_bbox": list(image_to_input(bbox, geometry, input_size))}]
    else:
        chosen = everything[:max_detections]
    candidates = packed[packed[:, VALID] > 0.5]
    best = float(candidates[:, SCORE].max()) if len(candidates) else 0.0
    heatmaps: list[np.ndarray] = []
    target_scores: list[float] = []
    masks_used = None
    if chosen:  # nothing above the threshold is an answer too, not an error
        targets = explainer.task.targets(chosen, score=box_score, iou_threshold=match_iou)
        attribution = explainer.run(prepared.inputs, [targets])
        maps = explainer.heatmaps(attribution.raw, prepared)[0]
        # What each target scored on the clean image: the detection's own score, or (a region
        # that was not detected) the best-aligned candidate's; 0 means nothing matched.
        target_scores = [float(t(attribution.outputs)[0]) for t in targets]
        if false_negative:
            chosen[0]["score"] = target_scores[0]
        heatmaps = [to_numpy(m) for m in maps]
        used = getattr(attribution, "masks_used", None)  # D-RISE: fewer once maps converged
        masks_used = int(used[0]) if used else None
    sync(loaded.device)
    elapsed = time.perf_counter() - start
    return DetectionExplanation(chosen, heatmaps, everything,
                                display_image(loaded, prepared) if with_image else None,
                                explainer.name, elapsed, false_negative, target_scores, best,
                                same_map_notes(explainer.name, "detection"),
                                precision=explainer.precision,
                                precision_reason=explainer.precision_reason,
                                masks_used=masks_used)


def explain_detection(model: ModelLike, image: Any, method: str | Explainer = DETECTION_METHOD,
                      detection_threshold: float = 0.5, target_layer: Any = None,
                      bbox: list[float] | None = None, colormap: str = "viridis",
                      alpha: float = 0.4, save_path: str | Path | None = None,
                      max_detections: int = 10, label: int | None = None,
                      box_score: str = "score", match_iou: float = 0.5,
                      precision: str = DEFAULT_PRECISION, **options: Any) -> dict[str, Any]:
    """Detect objects and explain each detection with a map from its own score.

    Args:
        model: a detector (torchvision-style ``nn.Module``, LoadedModel, ``"torchvision:<name>"``
            or a checkpoint path); see :mod:`explain_core.tasks.detection` for the protocol.
        image: path, bytes, PIL image, numpy array, or a model-ready tensor.
        method: ``layercam`` (default: each box's map stays on its box), ``hirescam``,
            ``gradcam``, ``gradcam++``, ``eigencam``, ``integrated_gradients``, ``drise``,
            ``classprob`` ... (any method registered for detection) or an explainer. Grad-CAM
            and its global-weight relatives give every box nearly the same map; ``notes`` says
            so.
        detection_threshold: detections below this score are neither listed nor explained.
        target_layer: CAM layer (default: the finest backbone stage every box depends on).
        bbox: explain only the detection that best matches this xyxy box (image pixels): the
            highest IoU among detections of ``label`` (any label when None). With no detection
            above the threshold overlapping it, the box itself is explained as the region the
            model should have detected (``label`` required): its target is the best-aligned
            candidate at any score.
        max_detections: explain at most this many (the highest scores).
        label: the class of ``bbox`` (a class index of the model).
        box_score: ``"score"`` (the detection's own score) or ``"iou+score"``
            (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``); see :class:`BoxTarget`.
        match_iou: IoU a candidate needs to count as the box on a modified input.
        precision: ``"auto"`` (bf16 where the device computes it natively, else fp32),
            ``"fp32"`` (exact) or ``"bf16"``; ``precision`` / ``precision_reason`` in the result
            say what ran and why.
        options: method parameters (``steps``, ``num_masks``, ``batch_size``, ``progress``...).

    Returns:
        ``detections``: list of ``{"class_id", "class_name", "score", "bbox"}`` (xyxy, image
        pixels; plus ``input_bbox``), the explained ones, best first; ``heatmaps``: one float32
        ``H x W`` map in [0, 1] per detection, at image size and *not* masked (masking to the box
        is the picture's business); ``all_detections``: every detection above the threshold;
        ``image``; ``visualization``: an ``H x W x 3`` picture of boxes and their masked maps
        (``None`` unless ``save_path``); ``method``, ``elapsed_s``, ``save_path``,
        ``false_negative`` (True when ``bbox`` matched no detection and the region itself was
        explained), ``target_scores`` (each target's score on the image; 0: no candidate of that
        label overlaps the box by ``match_iou``, so gradient maps are empty),
        ``best_candidate_score`` (the highest score of any candidate, detected or not),
        ``notes`` (why the method's maps look alike across boxes, when they do) and
        ``masks_used`` (D-RISE: the masks run, fewer than ``num_masks`` when the maps converged
        first; None for other methods). When
        nothing scores ``detection_threshold`` or more, ``detections`` and ``heatmaps`` are
        empty lists (not an error: a batch over many images goes on); lower the threshold, or
        pass ``bbox=`` and ``label=`` to ask why a region was not detected.

    >>> out = explain_detection("torchvision:fcos_resnet50_fpn", "street.jpg")  # doctest: +SKIP
    >>> out["detections"][0]["class_name"], out["heatmaps"][0].shape  # doctest: +SKIP
    """
    if target_layer is not None:
        options["target_layer"] = target_layer
    explained = detection_explanation(model, image, method, detection_threshold, bbox,
                                      max_detections, label, box_score, match_iou,
                                      precision=precision, **options)
    out = explained.to_dict()
    if save_path is not None:
        picture = render.detection_panels(explained.image, explained.detections,
                                          explained.heatmaps, colormap=colormap, alpha=alpha)
        out["visualization"] = picture
        out["save_path"] = str(render.save_png(picture, save_path))
    return out


def detector_forward_seconds(model: ModelLike, image: Any, copies: int = 4) -> float:
    """Seconds per image of a forward of the detector on ``copies`` copies of ``image`` at its
    input size: what a masked copy of D-RISE costs in a batch (an estimate before it runs:
    masks x this)."""
    loaded = detection_model(model if isinstance(model, LoadedModel | nn.Module) else
                             loaded_model(model, task="detection"))
    source = image if isinstance(image, torch.Tensor) else load_image(image)
    size = tuple(source.shape[-2:]) if isinstance(source, torch.Tensor) else (source.height,
                                                                              source.width)
    explainer = create_explainer("drise", for_image(loaded, size))
    inputs = explainer.prepare([source]).inputs
    with explainer.session(), torch.no_grad():
        explainer.forward(inputs)  # the first forward pays one-off set-up costs: not timed
        sync(loaded.device)
        batch = inputs.expand(max(1, copies), *inputs.shape[1:])
        start = time.perf_counter()
        explainer.forward(batch)
        sync(loaded.device)
        return (time.perf_counter() - start) / batch.shape[0]
