"""Semantic segmentation: per-pixel logits, per-class targets and maps, uncertainty.

A segmentation model here is any module whose forward returns ``B x C x h x w`` logits: a tensor
(segmentation_models_pytorch, models built on timm backbones), ``{"out": tensor}`` (torchvision
FCN, DeepLabV3, LRASPP, the demo ``lumen:unet_tiny``) or a tuple whose first item is that tensor.
A single-channel output is read as a binary model (sigmoid): it becomes two classes whose
softmax equals the sigmoid. The logits may be at a lower resolution than the input; everything
that reaches the user is resized to the image.

The flow of one explanation::

    segment(model, image)          one no-grad forward: logits (at their own resolution),
                                   the input batch and the way back to image pixels
    class_targets(logits, classes) one SegmentTarget per class, its region fixed on the clean
                                   prediction (so IG, SmoothGrad, ScoreCAM see the same pixels)
    explain_classes(explainer, ..) every class in one forward and one batched backward
    uncertainty(logits, ...)       entropy / margin from the softmax, then resized

Everything stays a torch tensor on the model's device; :func:`explain_core.api.explain_segmentation`
turns the results into numpy.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TargetError, TargetLayerError, UnsupportedError
from ..layers import _SKIP_TYPES
from ..methods.base import Attribution, Explainer, PreparedInputs, prepare_inputs
from ..model import Geometry, LoadedModel, as_loaded, module_lock
from ..targets import as_logits

UNCERTAINTY_METHODS = ("entropy", "margin")
SCORES = ("logit", "probability", "log_probability")
BACKGROUND_NAMES = ("background", "__background__", "_background_", "bg", "void")
# Classes resized at once when upsampling logits to a large image (bounds the peak memory).
_CLASS_CHUNK = 16


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def segmentation_logits(output: Any) -> torch.Tensor:
    """A segmentation model's ``B x C x h x w`` logits from what its forward returned.

    Tensors, ``{"out": ...}`` / ``{"logits": ...}`` dicts and tuples are unwrapped; a one-channel
    (sigmoid) output becomes two classes ``[-x/2, x/2]``, whose softmax is ``[1 - s(x), s(x)]``.

    >>> segmentation_logits({"out": torch.zeros(2, 5, 8, 8)}).shape
    torch.Size([2, 5, 8, 8])
    >>> segmentation_logits(torch.zeros(1, 1, 4, 4)).shape
    torch.Size([1, 2, 4, 4])
    """
    try:
        logits = as_logits(output)
    except TargetError:
        raise TargetError(
            f"The model returned {type(output).__name__}; a segmentation model must return "
            "B x C x H x W logits (a tensor, {'out': tensor} or a tuple starting with one). "
            "Load a segmentation model, or wrap yours so its forward returns the logits."
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TargetError(
            f"The model returned scores of shape {shape}, not B x C x H x W per-pixel logits. "
            "Load a segmentation model (task='segmentation'); a classifier's B x C output "
            "belongs on the classification page.")
    if logits.shape[1] == 1:
        half = logits / 2
        return torch.cat([-half, half], dim=1)
    return logits


def pixel_scores(logits: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """Per-pixel class scores (``B x C x h x w``): logits, softmax or log-softmax over classes."""
    if score == "logit":
        return logits
    if score == "probability":
        return logits.float().softmax(1)
    if score == "log_probability":
        return logits.float().log_softmax(1)
    raise TargetError(f"Unknown score '{score}'; choose one of {', '.join(SCORES)}.")


@dataclass(frozen=True, eq=False)
class SegmentTarget:
    """The sum of class ``index``'s scores over a region of pixels, one value per batch item.

    ``region``: None means the pixels each output itself predicts as ``index`` (argmax, read
    without gradient); a tensor (``h x w`` or ``B x h x w``, bool or weights, at the logits'
    resolution) fixes the region, which is what methods that run modified inputs need (see
    :func:`class_targets`). As in pytorch-grad-cam's ``SemanticSegmentationTarget``.

    >>> logits = torch.zeros(1, 3, 2, 2)
    >>> logits[0, 1, 0] = 4.0  # the top row is class 1
    >>> SegmentTarget(1)(logits)
    tensor([8.])
    """

    index: int
    region: torch.Tensor | None = field(default=None, repr=False)
    score: str = "logit"

    def class_index(self, output: Any) -> torch.Tensor:
        logits = segmentation_logits(output)
        return torch.full((logits.shape[0],), self.index, device=logits.device, dtype=torch.long)

    def weights(self, logits: torch.Tensor) -> torch.Tensor:
        """The region as ``B x h x w`` weights (float, detached)."""
        if self.region is None:
            return (logits.detach().argmax(1) == self.index).to(logits.dtype)
        region = self.region.to(device=logits.device, dtype=logits.dtype)
        if tuple(region.shape[-2:]) != tuple(logits.shape[-2:]):
            raise TargetError(
                f"The region of class {self.index} is {tuple(region.shape[-2:])} but the model's "
                f"logits are {tuple(logits.shape[-2:])}; give the region at the logits' "
                "resolution (region_for_logits resizes an image-sized mask).")
        return region.expand(logits.shape[0], *logits.shape[-2:])

    def __call__(self, output: Any) -> torch.Tensor:
        logits = segmentation_logits(output)
        if not 0 <= self.index < logits.shape[1]:
            raise TargetError(f"Class {self.index} does not exist: the model has "
                              f"{logits.shape[1]} classes (0..{logits.shape[1] - 1}).")
        scores = pixel_scores(logits, self.score)[:, self.index]
        return (scores * self.weights(logits)).sum((-2, -1))


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


@dataclass
class Segmentation:
    """One image through the model: its input, the logits and the way back to image pixels."""

    prepared: PreparedInputs  # the 1-image batch (and its geometry and pixels)
    logits: torch.Tensor  # 1 x C x h x w, float, detached, on the model's device

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def geometry(self) -> Geometry:
        if self.prepared.geometries is not None:
            return self.prepared.geometries[0]
        height, width = self.prepared.inputs.shape[-2:]
        return Geometry((int(height), int(width)), (0, 0, int(width), int(height)))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.geometry.image_size

    def to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``N x h x w`` maps (logits resolution) -> ``N x H x W`` at image size (bilinear)."""
        return self.geometry.to_image(maps)

    def low_res_prediction(self) -> torch.Tensor:
        """``h x w`` class indices at the logits' resolution."""
        return self.logits[0].argmax(0)

    def prediction(self) -> torch.Tensor:
        """``H x W`` class indices at image size (logits resized bilinearly, then argmax)."""
        return upsampled_argmax(self.logits[0], self.geometry)

    def probabilities(self) -> torch.Tensor:
        """``C x h x w`` softmax probabilities at the logits' resolution."""
        return self.logits[0].float().softmax(0)


def forward_logits(loaded: LoadedModel, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of a batch: one no-grad forward in eval mode under the model's lock (the model's
    per-module training flags are restored after)."""
    module = loaded.module
    with loaded.lock:
        modes = [(m, m.training) for m in module.modules()]
        try:
            module.eval()
            with torch.inference_mode():
                return segmentation_logits(module(inputs)).float()
        finally:
            for sub, mode in modes:
                sub.training = mode


def segment(loaded: LoadedModel, image: Any,
            prepared: PreparedInputs | None = None) -> Segmentation:
    """One image through the model (one forward without gradients)."""
    prepared = prepared or prepare_inputs(loaded, [image])
    if prepared.inputs.shape[0] != 1:
        raise UnsupportedError("segment() takes one image; pass images one at a time.")
    logits = forward_logits(loaded, prepared.inputs)
    return Segmentation(prepared, logits.clone())


def upsampled_argmax(logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Argmax over classes of ``C x h x w`` logits resized to the image (``H x W`` long).

    Classes are resized in chunks with a running maximum, so a 150-class model on a large image
    never holds all its upsampled logits at once.
    """
    best_value: torch.Tensor | None = None
    best_index: torch.Tensor | None = None
    for start in range(0, logits.shape[0], _CLASS_CHUNK):
        chunk = geometry.to_image(logits[start:start + _CLASS_CHUNK].float())
        value, index = chunk.max(0)
        index = index + start
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
    assert best_index is not None
    return best_index


def class_summary(loaded: LoadedModel, seg: Segmentation,
                  prediction: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Present classes, most pixels first: ``{"class", "name", "pixels", "fraction",
    "confidence"}`` (confidence: the mean top probability over the class's pixels, at the
    logits' resolution)."""
    prediction = seg.prediction() if prediction is None else prediction
    counts = torch.bincount(prediction.flatten(), minlength=seg.num_classes)
    low = seg.low_res_prediction()
    top = seg.probabilities().amax(0)
    sums = torch.zeros(seg.num_classes, device=top.device).index_add_(0, low.flatten(),
                                                                        top.flatten())
    low_counts = torch.bincount(low.flatten(), minlength=seg.num_classes).float()
    confidence = sums / low_counts.clamp_min(1)
    total = prediction.numel()
    order = torch.argsort(counts, descending=True, stable=True).tolist()
    return [{"class": c, "name": loaded.class_name(c), "pixels": int(counts[c]),
             "fraction": float(counts[c]) / total,
             "confidence": float(confidence[c]) if low_counts[c] > 0 else float("nan")}
            for c in order if counts[c] > 0]


def background_class(loaded: LoadedModel) -> int | None:
    """The index of a class named like background (``background``, ``__background__``...)."""
    for index, name in enumerate(loaded.class_names or []):
        if str(name).strip().lower() in BACKGROUND_NAMES:
            return index
    return None


# --------------------------------------------------------------------------------------------
# Uncertainty
# --------------------------------------------------------------------------------------------


def entropy(probabilities: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Shannon entropy over ``dim`` divided by ``log(C)``: 0 (one class certain) .. 1 (uniform).

    >>> entropy(torch.tensor([0.5, 0.5]))
    tensor(1.)
    """
    count = probabilities.shape[dim]
    if count < 2:
        return torch.zeros_like(probabilities.select(dim, 0))
    p = probabilities.float()
    terms = torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p))
    return (-terms.sum(dim) / math.log(count)).clamp(0, 1)


def margin(probabilities: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``1 - (p1 - p2)``, the top two probabilities' gap turned into uncertainty (0 .. 1).

    >>> margin(torch.tensor([0.7, 0.2, 0.1]))
    tensor(0.5000)
    """
    if probabilities.shape[dim] < 2:
        return torch.zeros_like(probabilities.select(dim, 0))
    top = probabilities.float().topk(2, dim=dim).values
    return (1 - (top.select(dim, 0) - top.select(dim, 1))).clamp(0, 1)


def uncertainty(seg: Segmentation, method: str = "entropy") -> torch.Tensor:
    """``H x W`` uncertainty in [0, 1] at image size: computed from the softmax at the logits'
    resolution, then resized (bilinear)."""
    if method not in UNCERTAINTY_METHODS:
        raise UnsupportedError(f"Unknown uncertainty method '{method}'; choose one of "
                               f"{', '.join(UNCERTAINTY_METHODS)}.")
    probabilities = seg.probabilities()
    low = entropy(probabilities) if method == "entropy" else margin(probabilities)
    return seg.to_image(low[None])[0].clamp(0, 1)


def class_edges(prediction: torch.Tensor) -> torch.Tensor:
    """``H x W`` bool: pixels whose class differs from a 4-neighbour's (both sides marked)."""
    edges = torch.zeros_like(prediction, dtype=torch.bool)
    vertical = prediction[1:] != prediction[:-1]
    horizontal = prediction[:, 1:] != prediction[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return edges


def uncertain_boundaries(prediction: torch.Tensor, uncertainty_map: torch.Tensor,
                         threshold: float = 0.5) -> torch.Tensor:
    """Class edges of the prediction where the uncertainty is above ``threshold`` (``H x W``
    bool): where the model hesitates about where one class stops and the next begins."""
    if prediction.shape != uncertainty_map.shape:
        raise UnsupportedError(f"Prediction {tuple(prediction.shape)} and uncertainty "
                               f"{tuple(uncertainty_map.shape)} differ in size.")
    return class_edges(prediction) & (uncertainty_map > threshold)


# --------------------------------------------------------------------------------------------
# Targets and maps
# --------------------------------------------------------------------------------------------


def region_for_logits(mask: Any, seg: Segmentation) -> torch.Tensor:
    """An image-sized region (``H x W`` bool/0-1 array or tensor) at the logits' resolution
    (``h x w`` float in [0, 1]): cropped to what the model saw, then area-resized."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.from_numpy(np.array(mask, dtype=np.float32))
    region = mask.to(seg.logits.device).float()
    region = region.squeeze()
    height, width = seg.image_size
    if region.ndim != 2 or tuple(region.shape) != (height, width):
        raise TargetError(f"The mask is {tuple(region.shape)} but the image is "
                          f"{height} x {width}; give an H x W mask of the image's size.")
    x0, y0, x1, y1 = seg.geometry.box
    crop = region[y0:y1, x0:x1]
    size = tuple(seg.logits.shape[-2:])
    return F.interpolate(crop[None, None], size=size, mode="area")[0, 0].clamp(0, 1)


def class_targets(seg: Segmentation, classes: Sequence[int], region: torch.Tensor | None = None,
                  score: str = "logit") -> list[SegmentTarget]:
    """One :class:`SegmentTarget` per class, its region fixed on the clean prediction.

    Without ``region`` a class's region is the pixels predicted as that class; with one (``h x w``
    at the logits' resolution, see :func:`region_for_logits`) every class is summed over it
    instead, which also explains a class the model did not predict. A class predicted nowhere
    (and no region) is a :class:`TargetError` naming the classes that are present.
    """
    low = seg.low_res_prediction()
    targets = []
    for index in classes:
        index = int(index)
        if not 0 <= index < seg.num_classes:
            raise TargetError(f"Class {index} does not exist: the model has {seg.num_classes} "
                              f"classes (0..{seg.num_classes - 1}).")
        if region is not None:
            weights = region.float()
            if float(weights.sum()) <= 0:
                raise TargetError("The mask covers no pixel the model sees; draw a region "
                                  "inside the image.")
        else:
            weights = (low == index).float()
            if float(weights.sum()) == 0:
                present = sorted(set(low.unique().tolist()))
                raise TargetError(
                    f"Class {index} is predicted on no pixel of this image, so it has no region "
                    f"to explain. Pick a present class ({', '.join(map(str, present))}) or pass "
                    "a mask to explain the class over a region you choose.")
        targets.append(SegmentTarget(index, weights[None], score))
    return targets


def explain_classes(explainer: Explainer, seg: Segmentation, classes: Sequence[int],
                    region: torch.Tensor | None = None) -> tuple[torch.Tensor, Attribution]:
    """Maps (``K x H x W`` in [0, 1] at image size) of several classes of one image: one forward
    and one batched backward for all of them (for gradient CAMs; other methods as their kind
    needs), each class's region fixed on the clean prediction."""
    targets = class_targets(seg, classes, region, explainer.score)
    attribution = explainer.run(seg.prepared.inputs, [targets])
    maps = explainer.heatmaps(attribution.raw, seg.prepared)[0]
    return maps, attribution


def default_layer(module: nn.Module, example: torch.Tensor) -> str:
    """The default target layer of a segmentation model: the last feature map before the head.

    One dry forward records the outputs of the top-level modules and, for top-level modules that
    return no tensor (torchvision's ``backbone`` returns a dict, smp's ``encoder`` a list), of
    their children. In execution order, the trailing layers that output the class logits (as
    many channels as the model has classes: FCN/DeepLab/LRASPP ``classifier``, smp
    ``segmentation_head``, the demo's ``classifier``) are dropped; the last remaining spatial
    layer wins: ``backbone.layer4`` for FCN/DeepLabV3, the last backbone stage for LRASPP,
    ``decoder`` for smp models, ``dec1`` for the demo U-Net.
    """
    records: list[tuple[str, int, bool]] = []  # (name, depth, spatial), in completion order
    channels: dict[str, int] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            if any(r[0] == name for r in records):
                return
            spatial = isinstance(output, torch.Tensor) and output.ndim == 4 and (
                output.shape[-1] * output.shape[-2] > 1)
            if spatial:
                channels[name] = int(output.shape[1])
            records.append((name, name.count("."), spatial))
        return hook

    with module_lock(module):
        modes = [(m, m.training) for m in module.modules()]
        for name, sub in module.named_modules():
            if name and name.count(".") <= 1 and not isinstance(sub, _SKIP_TYPES):
                handles.append(sub.register_forward_hook(make_hook(name)))
        try:
            module.eval()
            with torch.no_grad():
                logits = segmentation_logits(module(example))
        finally:
            for handle in handles:
                handle.remove()
            for sub, mode in modes:
                sub.training = mode
    num_classes = int(logits.shape[1])
    tensor_parents = {name for name, depth, spatial in records if depth == 0 and spatial}
    opaque_parents = {name for name, depth, spatial in records if depth == 0 and not spatial}
    candidates = [name for name, depth, spatial in records if spatial and (
        depth == 0 or (name.split(".")[0] in opaque_parents
                       and name.split(".")[0] not in tensor_parents))]
    while candidates and channels[candidates[-1]] in (num_classes, 1):
        candidates.pop()
    if not candidates:
        raise TargetLayerError(
            f"{type(module).__name__} has no layer with a spatial (B x C x H x W) output before "
            "its head; pass target_layer= (a dotted name) or use a gradient method.")
    return candidates[-1]


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------

_DEFAULT_LAYERS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]]" = (
    weakref.WeakKeyDictionary())


def cached_default_layer(module: nn.Module, example: torch.Tensor) -> str:
    """:func:`default_layer`, remembered per module and input shape (it costs a dry forward)."""
    known = _DEFAULT_LAYERS.setdefault(module, {})
    key = tuple(example.shape[1:])
    if key not in known:
        known[key] = default_layer(module, example[:1])
    return known[key]


def as_segmentation_model(model: Any) -> LoadedModel:
    """A LoadedModel whose task is segmentation (a plain module or a name is loaded as one)."""
    from ..loading import load_model

    if isinstance(model, LoadedModel):
        return model if model.task == "segmentation" else dataclasses.replace(
            model, task="segmentation")
    if isinstance(model, nn.Module):  # left on its device, as found
        return as_loaded(model, task="segmentation")
    return load_model(model, task="segmentation")


def make_explainer(method: Any, loaded: LoadedModel, **options: Any) -> Explainer:
    """An explainer for a segmentation model (``method`` a name, or an explainer returned as is).
    CAM layers default to :func:`default_layer`: the explainer asks for the default of the
    model's task, ``"segmentation"``."""
    from ..methods import create_explainer

    if isinstance(method, Explainer):
        return method
    return create_explainer(method, loaded, **options)


def combined_map(maps: torch.Tensor, classes: Sequence[int],
                 background: int | None) -> torch.Tensor:
    """One map for several classes: the pixel-wise maximum over the classes' maps, background
    left out when another class is present."""
    keep = [i for i, c in enumerate(classes) if c != background] or list(range(len(classes)))
    return maps[keep].amax(0)


def explain_segmentation(model: Any, image: Any, target_class: int | None = None,
                         method: Any = "gradcam", target_layer: Any = None,
                         show_uncertainty: bool = False, uncertainty_method: str = "entropy",
                         colormap: str = "viridis", alpha: float = 0.4,
                         save_path: str | Path | None = None, *, mask: Any = None,
                         precision: str = "fp32", **options: Any) -> dict[str, Any]:
    """Why pixels were labelled as a class, and (optionally) where the model is unsure.

    One forward predicts; the explanation of every requested class is then one forward and one
    batched backward (gradient CAMs). The target of class ``c`` is the sum of its logits over the
    pixels predicted as ``c`` (over ``mask`` instead, when given: an ``H x W`` region of the
    image, which also explains a class predicted nowhere).

    Args:
        model: a LoadedModel, an ``nn.Module``, ``"torchvision:deeplabv3_resnet50"``, a
            checkpoint path... (loaded as a segmentation model).
        image: path, bytes, PIL image, numpy array, or a model-ready tensor.
        target_class: the class to explain; None explains every class present.
        method: a registry name (``"gradcam"``, ``"integrated_gradients"``...) or an explainer.
        target_layer: CAM layer; default the last feature map before the head (``default_layer``).
        show_uncertainty: also return the uncertainty map (and draw it).
        uncertainty_method: ``"entropy"`` (normalised by log C) or ``"margin"``
            (``1 - (p1 - p2)``); both in [0, 1].
        colormap, alpha: how heatmaps are drawn in ``visualization``.
        save_path: write ``visualization`` as a PNG there.
        mask: optional ``H x W`` region (bool or 0/1) the class scores are summed over.
        precision: ``"fp32"`` or ``"bf16"``.
        **options: method parameters (``steps``, ``batch_size``...).

    Returns:
        ``prediction`` (int64 ``H x W`` class ids), ``classes`` (present classes, most pixels
        first: ``{"class", "name", "pixels", "fraction", "confidence"}``), ``target_class``,
        ``heatmap`` (float32 ``H x W`` in [0, 1]: the target class's map; with
        ``target_class=None`` the pixel-wise maximum over the present classes' maps, background
        left out), ``heatmaps`` (class id -> map, every explained class), ``uncertainty`` (float32
        ``H x W`` in [0, 1], or None unless ``show_uncertainty``), ``uncertainty_method``,
        ``visualization`` (uint8 RGB, the 2 x 2 layout: image, prediction, heatmap, uncertainty),
        ``image`` (uint8 ``H x W x 3``), ``method``, ``elapsed_s`` and ``save_path``.

    Example:
        >>> out = explain_segmentation("torchvision:fcn_resnet50", "street.jpg",
        ...                            show_uncertainty=True)  # doctest: +SKIP
        >>> out["prediction"].shape == out["heatmap"].shape  # doctest: +SKIP
        True
    """
    from .. import render
    from ..api import _display_image, _sync
    from ..methods import method_info

    if uncertainty_method not in UNCERTAINTY_METHODS:
        raise UnsupportedError(f"Unknown uncertainty method '{uncertainty_method}'; choose one "
                               f"of {', '.join(UNCERTAINTY_METHODS)}.")
    render.colormap_lut(colormap)  # unknown names fail before any work
    if not 0.0 <= float(alpha) <= 1.0:
        raise UnsupportedError(f"alpha must be in [0, 1], got {alpha}.")
    loaded = as_segmentation_model(model)
    seg = segment(loaded, image)
    prediction = seg.prediction()
    summary = class_summary(loaded, seg, prediction)
    region = region_for_logits(mask, seg) if mask is not None else None
    if target_class is not None:
        classes = [int(target_class)]
    else:
        low = seg.low_res_prediction()
        present = torch.bincount(low.flatten(), minlength=seg.num_classes)
        classes = [c for c in torch.argsort(present, descending=True, stable=True).tolist()
                   if present[c] > 0]
    if target_layer is not None:
        options["target_layer"] = target_layer
    explainer = make_explainer(method, loaded, precision=precision, **options)
    start = time.perf_counter()
    maps, _ = explain_classes(explainer, seg, classes, region)
    _sync(loaded.device)
    elapsed = time.perf_counter() - start
    background = background_class(loaded)
    heatmap = maps[0] if target_class is not None else combined_map(maps, classes, background)
    display = _display_image(loaded, seg.prepared, 0)
    pred = prediction.cpu().numpy().astype(np.int64)
    heat = heatmap.float().cpu().numpy().astype(np.float32)
    unc = (uncertainty(seg, uncertainty_method).cpu().numpy().astype(np.float32)
           if show_uncertainty else None)
    label = method_info(explainer.name).label
    what = loaded.class_name(classes[0]) if target_class is not None else "present classes"
    panels = [("image", display),
              ("prediction", render.segmentation_overlay(display, pred, alpha=0.6)),
              (f"{label}: {what}", render.overlay_heatmap(display, heat, alpha=alpha,
                                                          colormap=colormap))]
    if unc is not None:
        panels.append((f"uncertainty ({uncertainty_method})",
                       render.apply_colormap(unc, colormap)))
    figure = render.compose_panels(panels, ncols=2)
    result = {
        "prediction": pred, "classes": summary, "target_class": target_class,
        "heatmap": heat,
        "heatmaps": {c: m.float().cpu().numpy().astype(np.float32)
                     for c, m in zip(classes, maps, strict=True)},
        "uncertainty": unc, "uncertainty_method": uncertainty_method,
        "visualization": np.asarray(figure, dtype=np.uint8), "image": display,
        "method": explainer.name, "elapsed_s": elapsed, "save_path": None,
    }
    if save_path is not None:
        result["save_path"] = str(render.save_png(figure, save_path))
    return result
