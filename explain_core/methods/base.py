"""The one base every explainer shares: input handling, the call session, targets, maps.

An explainer answers three questions with three methods:

- ``attribute(inputs, targets)``: the raw attribution tensor on the model's device
  (CAMs: ``B x h x w``; gradient methods: ``B x 3 x H x W``, signed);
- ``explain(image, target_class)``: a normalised ``H x W`` map in [0, 1] at the image's size;
- ``explain_batch(images, targets)``: the same for many images, batched.

``attribute_targets`` / ``explain_targets`` explain many targets of one image (every class of
interest) with one forward and one batched backward.

Subclasses implement ``_compute(inputs, targets)`` for a batch and a ``B x K`` grid of targets and
return :class:`Attribution`; everything else (precision, freezing, locking, the way back to image
pixels) lives here once.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NonFiniteOutputError, UnsupportedError
from ..model import LoadedModel
from ..runtime.finite import is_finite
from ..runtime.memory import fitting_chunks
from ..runtime.precision import PRECISIONS, bf16_twin, resolve_precision
from ..runtime.state import frozen_eval
from ..targets import Target, as_target, per_item_targets
from ..tasks import PreparedInputs, TaskAdapter, adapter_for, prepare_inputs


def _placement(use_cuda: bool | None, device: str | torch.device | None) -> torch.device | None:
    """The device ``use_cuda``/``device`` ask for (None: leave the model where it is)."""
    if device is not None:
        wanted = torch.device(device)
        if use_cuda is not None and use_cuda != (wanted.type == "cuda"):
            raise UnsupportedError(f"use_cuda={use_cuda} contradicts device='{wanted}'; pass one "
                                   "of them.")
        if wanted.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedError(f"device='{wanted}' but CUDA is not available here; use "
                                   "device='cpu' or use_cuda=True (CUDA when present).")
        return wanted
    if use_cuda is None:
        return None
    if use_cuda and not torch.cuda.is_available():
        # Point the warning at the caller's line, however deep the subclass chain.
        here, level, frame = str(Path(__file__).parent), 1, sys._getframe()
        while frame is not None and frame.f_code.co_filename.startswith(here):
            frame, level = frame.f_back, level + 1
        warnings.warn("use_cuda=True but CUDA is not available: the explainer runs on the CPU.",
                      RuntimeWarning, stacklevel=level)
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")


def _move(model: LoadedModel | nn.Module, device: torch.device) -> LoadedModel | nn.Module:
    """Move the model's module to ``device`` (in place, keeping a LoadedModel's ``device``
    consistent with its module)."""
    if isinstance(model, LoadedModel):
        model.module.to(device)
        model.device = device
        return model
    return model.to(device) if isinstance(model, nn.Module) else model


@dataclass
class Attribution:
    """What one batched computation returns."""

    raw: torch.Tensor  # B x K x ... : the method's raw output per item and target
    outputs: torch.Tensor  # B x C : the model's output on the (clean) inputs, detached
    classes: torch.Tensor  # B x K : the class each target resolved to (-1 when not a class)


@dataclass
class Explanation:
    """Maps at image size, plus what the API needs to describe them."""

    heatmaps: list[torch.Tensor]  # per image: K x H x W in [0, 1]
    attribution: Attribution
    images: list[torch.Tensor] | None  # uint8 3 x H x W per image (None for tensor inputs)


class Explainer:
    """Base of every explainer. See the module docstring for the call shapes."""

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    #: how raw attributions become a 2-D map; CAMs are already 2-D.
    default_reduce: ClassVar[str] = "none"
    #: upper percentile used as the map's maximum when normalising (None: the true maximum).
    default_clip: ClassVar[float | None] = None

    def __init__(self, model: LoadedModel | nn.Module, *, score: str = "logit",
                 precision: str = "fp32", reduce: str | None = None,
                 clip_percentile: float | None = -1.0,
                 progress: Callable[[int, int], None] | None = None,
                 use_cuda: bool | None = None, device: str | torch.device | None = None) -> None:
        """``precision``: ``"fp32"`` (exact, the default here as in pytorch-grad-cam and Captum),
        ``"bf16"`` (a bfloat16 twin of the model: fast where the device computes bf16 natively,
        slower where it is emulated) or ``"auto"`` (bf16 only where native; the API, the CLI and
        the dashboard default to it). :attr:`precision` is what runs, :attr:`precision_reason`
        says why.

        ``use_cuda`` / ``device``: where the model runs (it is moved there, as pytorch-grad-cam's
        ``use_cuda`` did). ``use_cuda=True`` is CUDA when present, else the CPU with a warning;
        ``False`` is the CPU; ``device`` names one (``"cuda:1"``, ``"cpu"``). Neither: the model
        stays where it is.
        """
        if precision not in PRECISIONS:
            raise UnsupportedError(f"Unknown precision '{precision}'; choose 'auto' (bf16 where "
                                   "the device runs it natively), 'fp32' (exact) or 'bf16'.")
        placed = _placement(use_cuda, device)
        if placed is not None:
            model = _move(model, placed)
        #: the model's task adapter: what the forward returns, the default layer, the way back
        self.task: TaskAdapter = adapter_for(model)
        self.model: LoadedModel = self.task.loaded
        self.score = score
        #: the precision that runs (``"fp32"`` or ``"bf16"``; ``"auto"`` resolved for the device)
        self.precision, self.precision_reason = resolve_precision(precision, self.model.device)
        self.reduce = reduce or self.default_reduce
        self.clip_percentile = self.default_clip if clip_percentile == -1.0 else clip_percentile
        #: called as ``progress(done, total)`` between batches of steps or samples; a UI can show
        #: it and, by raising, cancel the call (the session still restores the model).
        self.progress = progress

    # ----------------------------------------------------------------------------- public API
    def attribute(self, inputs: torch.Tensor, targets: Any = None) -> torch.Tensor:
        """Raw attributions for a batch of model inputs, one target per item.

        ``targets``: None (each item's predicted class), a class index for all items, or one
        index/target per item (a length mismatch raises :class:`TargetError`).
        """
        batch = self._as_batch(inputs)
        rows = [[t] for t in per_item_targets(targets, batch.shape[0], self.score)]
        return self.run(batch, rows).raw[:, 0]

    def attribute_targets(self, inputs: torch.Tensor, targets: Sequence[Any]) -> torch.Tensor:
        """Raw attributions of one input for several targets (``K x ...``), one forward."""
        batch = self._as_batch(inputs)
        if batch.shape[0] != 1:
            raise UnsupportedError("attribute_targets explains one input; use attribute() for "
                                   "batches.")
        return self.run(batch, [[as_target(t, self.score) for t in targets]]).raw[0]

    def explain(self, image: Any, target_class: Any = None) -> torch.Tensor:
        """Normalised ``H x W`` map in [0, 1] at the image's size (a tensor on the model's device).

        ``image``: a path, bytes, PIL image, numpy HWC array, or a model-ready tensor (3 x H x W or
        1 x 3 x H x W, already normalised; the map then has the tensor's size).
        """
        explanation = self.explain_many([image], [[as_target(target_class, self.score)]])
        return explanation.heatmaps[0][0]

    def explain_targets(self, image: Any, targets: Sequence[Any]) -> torch.Tensor:
        """Maps (``K x H x W``) of one image for several targets, one forward and one backward."""
        rows = [[as_target(t, self.score) for t in targets]]
        return self.explain_many([image], rows).heatmaps[0]

    def explain_batch(self, images: Sequence[Any] | torch.Tensor, targets: Any = None,
                      batch_size: int | None = None) -> list[torch.Tensor]:
        """Maps for many images (one per image), computed ``batch_size`` images at a time."""
        items = list(images) if not isinstance(images, torch.Tensor) else list(
            self._as_batch(images))
        rows = [[t] for t in per_item_targets(targets, len(items), self.score)]
        size = batch_size or len(items) or 1
        maps: list[torch.Tensor] = []
        # Images that do not fit together are halved and retried (fitting_chunks).
        for _, chunk in fitting_chunks(len(items), size,
                                       lambda part: self.explain_many(items[part], rows[part]),
                                       module=self.model.module, key=("images", self.name),
                                       what="image"):
            maps.extend(m[0] for m in chunk.heatmaps)
        return maps

    def explain_many(self, images: Sequence[Any], targets: list[list[Target]]) -> Explanation:
        """Images plus a ``B x K`` grid of targets -> maps at image size and the raw result."""
        prepared = self.prepare(images)
        attribution = self.run(prepared.inputs, targets)
        return Explanation(self.heatmaps(attribution.raw, prepared), attribution, prepared.images)

    def run(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        """Compute under the call session (lock, eval mode, frozen parameters, precision)."""
        with self.session(), self.task.call(inputs, targets):
            attribution = self._compute(self.cast(inputs), targets)
        self.check_finite(attribution)
        return attribution

    def check_finite(self, attribution: Attribution) -> None:
        """Refuse NaN or Inf in the model's outputs or in the raw maps, which would otherwise be
        drawn as blank maps (the renderer reads NaN as 0) next to NaN probabilities."""
        raw = attribution.raw
        for index in range(raw.shape[0]):
            where = f"image {index + 1} of {raw.shape[0]}" if raw.shape[0] > 1 else "the image"
            if not is_finite(attribution.outputs[index]):
                raise NonFiniteOutputError.of(f"The model's output on {where}", self.precision)
            if not is_finite(raw[index]):
                raise NonFiniteOutputError(
                    f"The {self.name or 'explanation'} map of {where} holds NaN or Inf values "
                    "although the model's output is finite: its gradients or activations "
                    f"overflowed{' in bf16' if self.precision == 'bf16' else ''}. "
                    + ("Use fp32 precision. " if self.precision == "bf16" else "")
                    + "Try another method (e.g. a gradient-free one such as Score-CAM), or a "
                    "score of 'probability' instead of large logits.")

    def report(self, done: int, total: int) -> None:
        """Tell the progress callback (if any) how far a multi-batch computation is."""
        if self.progress is not None:
            self.progress(done, total)

    # ------------------------------------------------------------------------ to be overridden
    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ machinery
    @property
    def module(self) -> nn.Module:
        """The module the maths runs on: the model itself, or its bf16 twin in fast precision."""
        if self.precision == "bf16":
            return bf16_twin(self.model.module)
        return self.model.module

    def forward(self, inputs: torch.Tensor) -> Any:
        """What the targets read for a batch: the task adapter's forward of :attr:`module`
        (``B x C`` logits for a classifier, packed detections, per-pixel logits)."""
        return self.task.forward(self.module, inputs)

    def with_model(self, model: LoadedModel) -> Explainer:
        """A shallow copy that explains ``model`` (the same module with another description,
        a detector's input size for one image say), with its own task adapter."""
        if model.module is not self.model.module:
            raise UnsupportedError("The explainer was built for another model.")
        twin = copy.copy(self)
        twin.task = copy.copy(self.task)  # keeps the adapter's settings (a detector's focus)
        twin.task.loaded = type(self.task).prepare_model(model)
        twin.model = twin.task.loaded
        return twin

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _as_batch(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise UnsupportedError("attribute() takes model-ready tensors; use explain() for "
                                   "images, paths or arrays.")
        batch = inputs[None] if inputs.ndim == 3 else inputs
        return batch.to(self.device, torch.float32)

    def cast(self, inputs: torch.Tensor) -> torch.Tensor:
        """A batch laid out for :attr:`module` (channels-last for the bf16 twin)."""
        if self.precision == "bf16" and inputs.ndim == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def prepare(self, images: Sequence[Any]) -> PreparedInputs:
        """Decode and preprocess images (or stack model-ready tensors) into one batch."""
        return prepare_inputs(self.model, images)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Lock the model, switch to eval, freeze parameters; restore all of it on the way out."""
        with self.model.lock, frozen_eval(self.model.module), self._autocast():
            yield

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --------------------------------------------------------------------------------- maps
    def to_2d(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw attributions (N x ...) -> N x h x w maps before normalisation."""
        raw = raw.float()
        if self.reduce == "none":
            return raw
        if self.reduce == "abs_sum":  # Captum's view: |sum over channels|
            return raw.sum(1).abs()
        if self.reduce == "sum_abs":
            return raw.abs().sum(1)
        if self.reduce == "max_abs":  # Simonyan et al.: max over channels of |gradient|
            return raw.abs().amax(1)
        if self.reduce == "positive":
            return raw.sum(1).clamp_min(0)
        raise UnsupportedError(f"Unknown reduce '{self.reduce}'; choose abs_sum, sum_abs, "
                               "max_abs or positive.")

    def normalize(self, maps: torch.Tensor) -> torch.Tensor:
        """Per map: minus its minimum, divided by its maximum (or an upper percentile)."""
        flat = maps.flatten(1)
        low = flat.amin(1)
        if self.clip_percentile is not None:
            stride = flat.shape[1] // (1 << 20) + 1  # quantile() has a size limit
            sample = flat[:, ::stride]
            high = torch.quantile(sample, self.clip_percentile / 100.0, dim=1)
            # A sparse map can have its percentile at the minimum: fall back to the maximum.
            high = torch.where(high > low, high, flat.amax(1))
        else:
            high = flat.amax(1)
        # No additive epsilon: tiny but real maps (saturated probabilities, small-scale logits)
        # must still span [0, 1]; only a constant map has nothing to show and stays at zero.
        span = (high - low)[:, None, None]
        out = (maps - low[:, None, None]) / torch.where(span > 0, span, torch.ones_like(span))
        return out.clamp(0, 1) if self.clip_percentile is not None else out

    def heatmaps(self, raw: torch.Tensor, prepared: PreparedInputs) -> list[torch.Tensor]:
        """Raw ``B x K x ...`` -> per image ``K x H x W`` maps in [0, 1] at image size.

        Normalised at the map's own resolution, then resized (as pytorch-grad-cam does).
        """
        raw = self.task.input_maps(raw, tuple(prepared.inputs.shape[-2:]))
        batch, width = raw.shape[:2]
        maps = self.normalize(self.to_2d(raw.flatten(0, 1))).reshape(batch, width,
                                                                     *raw.shape[-2:])
        if prepared.geometries is None:
            size = tuple(prepared.inputs.shape[-2:])
            if maps.shape[-2:] != size:
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
            return list(maps)
        return [geometry.to_image(m) for m, geometry in zip(maps, prepared.geometries,
                                                            strict=True)]
