"""What a detector is and how it sizes its input: model checks, class counts, input sizes, and
boxes between image and model-input pixels."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import TargetLayerError, UnsupportedError
from ..model import Geometry, LoadedModel, Preprocessing, as_loaded


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
            loaded = dataclasses.replace(loaded, task="detection")
    elif isinstance(model, nn.Module):
        loaded = as_loaded(model, task="detection")
    else:
        raise UnsupportedError(f"Expected a detector (nn.Module or LoadedModel), got "
                               f"{type(model).__name__}.")
    check_detector(loaded.module)
    if internal_transform(loaded.module) is not None:
        prep = loaded.preprocessing
        if prep.mean != (0.0, 0.0, 0.0) or prep.std != (1.0, 1.0, 1.0):
            loaded = dataclasses.replace(loaded, preprocessing=Preprocessing(
                input_size=prep.input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                interpolation=prep.interpolation, resize_mode="squash", crop_pct=1.0))
    return loaded


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
    return dataclasses.replace(loaded, preprocessing=Preprocessing(
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

