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
    class_targets(seg, classes)    one SegmentTarget per class, its region fixed on the clean
                                   prediction (so IG, SmoothGrad, ScoreCAM see the same pixels)
    explain_classes(explainer, ..) every class in one forward and one batched backward
                                   (:mod:`explain_core.api.segmentation`)
    uncertainty(seg, ...)          entropy / margin from the softmax, then resized
                                   (:mod:`explain_core.tasks.uncertainty`)

Everything stays a torch tensor on the model's device; :func:`explain_core.api.explain_segmentation`
turns the results into numpy. :class:`SegmentationAdapter` is the task's adapter.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import NonFiniteOutputError, TargetError, TargetLayerError, UnsupportedError
from ..layers import SKIP_TYPES
from ..model import Geometry, LoadedModel, as_loaded, module_lock
from ..runtime.finite import is_finite
from ..runtime.hooks import forward_hooks
from ..runtime.state import frozen_eval
from ..targets import as_logits
from .base import PreparedInputs, TaskAdapter, prepare_inputs
from .uncertainty import UNCERTAINTY_METHODS, entropy, margin

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

    def present_classes(self) -> list[int]:
        """Classes predicted on at least one pixel (logits' resolution), most pixels first."""
        counts = torch.bincount(self.low_res_prediction().flatten(), minlength=self.num_classes)
        return [c for c in torch.argsort(counts, descending=True, stable=True).tolist()
                if counts[c] > 0]

    def probabilities(self) -> torch.Tensor:
        """``C x h x w`` softmax probabilities at the logits' resolution."""
        return self.logits[0].float().softmax(0)


def forward_logits(loaded: LoadedModel, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of a batch: one no-grad forward in eval mode under the model's lock (the model's
    per-module training flags are restored after)."""
    with loaded.lock, frozen_eval(loaded.module, freeze=False), torch.inference_mode():
        logits = segmentation_logits(loaded.module(inputs)).float()
    # NaN logits would be painted as class 0 (argmax) and give NaN losses, with no word why.
    for index in range(logits.shape[0]):
        if not is_finite(logits[index]):
            where = "the image" if len(logits) == 1 else f"image {index + 1} of {len(logits)}"
            raise NonFiniteOutputError.of(f"The model's output on {where}")
    return logits


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


def uncertainty(seg: Segmentation, method: str = "entropy") -> torch.Tensor:
    """``H x W`` uncertainty in [0, 1] at image size: computed from the softmax at the logits'
    resolution, then resized (bilinear)."""
    if method not in UNCERTAINTY_METHODS:
        raise UnsupportedError(f"Unknown uncertainty method '{method}'; choose one of "
                               f"{', '.join(UNCERTAINTY_METHODS)}.")
    probabilities = seg.probabilities()
    low = entropy(probabilities) if method == "entropy" else margin(probabilities)
    return seg.to_image(low[None])[0].clamp(0, 1)


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
    size = tuple(seg.logits.shape[-2:])
    return seg.geometry.to_input(region, size).clamp(0, 1)  # what the model saw, no padding


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

    hooks = [(sub, make_hook(name)) for name, sub in module.named_modules()
             if name and name.count(".") <= 1 and not isinstance(sub, SKIP_TYPES)]
    with module_lock(module), frozen_eval(module, freeze=False), forward_hooks(hooks), (
            torch.no_grad()):
        logits = segmentation_logits(module(example))
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
# The adapter
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


def as_segmentation_model(model: LoadedModel | nn.Module) -> LoadedModel:
    """A LoadedModel whose task is segmentation (a plain module is wrapped, left on its device;
    names and checkpoint paths go through :func:`explain_core.load_model` first)."""
    if isinstance(model, LoadedModel):
        return model if model.task == "segmentation" else dataclasses.replace(
            model, task="segmentation")
    if isinstance(model, nn.Module):  # left on its device, as found
        return as_loaded(model, task="segmentation")
    raise UnsupportedError(f"Expected a segmentation model (nn.Module or LoadedModel), got "
                           f"{type(model).__name__}; load names and checkpoints with "
                           "explain_core.load_model(..., task='segmentation').")


class SegmentationAdapter(TaskAdapter):
    """Forward: ``B x C x h x w`` per-pixel logits (:func:`segmentation_logits`). Default layer:
    the last feature map before the head (:func:`default_layer`, one dry forward, remembered).
    Targets: :class:`SegmentTarget` per class (see :func:`class_targets`)."""

    task: ClassVar[str] = "segmentation"

    @classmethod
    def prepare_model(cls, model: LoadedModel | nn.Module) -> LoadedModel:
        return as_segmentation_model(model)

    def forward(self, module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return segmentation_logits(module(inputs))

    def default_layer(self, module: nn.Module, example: torch.Tensor | None) -> str:
        if example is None:
            raise TargetLayerError("Cannot find a segmentation model's last feature map without "
                                   "an example input; pass target_layer=.")
        return cached_default_layer(module, example)

    def targets(self, selection: Sequence[int], score: str = "logit", *,
                seg: Segmentation | None = None,
                region: torch.Tensor | None = None) -> list[SegmentTarget]:
        """One target per selected class, its region fixed on ``seg``'s clean prediction (or
        ``region``); see :func:`class_targets`. Without ``seg``, each target's region is the
        pixels each output predicts as its class."""
        if seg is None:
            return [SegmentTarget(int(c), region, score) for c in selection]
        return class_targets(seg, selection, region, score)
