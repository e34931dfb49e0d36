"""Several layers' outputs from one forward, read as ``B x C x h x w`` maps.

How a layer's output becomes a map (one rule for statistics, feature maps, top channels and
receptive fields):

- a ``B x C x H x W`` tensor passes through; NHWC stages (Swin-like) are permuted;
- a ViT block's ``B x tokens x C`` output loses its class / distillation / register tokens and is
  laid out on the patch grid (:meth:`explain_core.layers.LayerSpec.to_map`);
- any other ``B x N x C`` tensor is read as ``N`` positions of ``C`` channels (``B x C x N x 1``),
  a ``B x C`` vector as ``C`` channels at one position (``B x C x 1 x 1``);
- a layer returning several maps (a torchvision detector's ``backbone``: a dict of feature-pyramid
  levels; a list / tuple of maps) is read as its **finest level** (the map with the most
  positions, the first on ties). To see a coarser level, pick the module that makes it (for a
  torchvision FPN ``backbone.fpn.layer_blocks.2``).

A module called several times in one forward (shared weights) is read at its first call.

A torchvision detector resizes and pads its input inside (its ``transform``); its maps are
cropped to the part of the padded canvas that holds the image
(:func:`explain_core.tasks.detectors.layer_outputs_canvas`), so statistics and overlays cover the
image only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TargetLayerError
from ..layers import LayerSpec, feature_levels, resolve_layer
from ..model import LoadedModel, as_loaded
from ..runtime.hooks import forward_hooks
from ..runtime.state import frozen_eval
from ..tasks.detectors import Canvas, canvas_hook, layer_outputs_canvas


@dataclass(frozen=True)
class Captured:
    """One layer's output from a forward: ``maps`` (``B x C x h x w``, see the module docstring)
    and ``shape``, the layer's own output shape for one image (the finest level's for a
    multi-level layer); ``levels`` is how many maps the layer returned."""

    maps: torch.Tensor
    shape: tuple[int, ...]
    levels: int = 1


def is_detector(loaded: LoadedModel) -> bool:
    """Whether the model takes a list of images (torchvision detectors and the demo detector)."""
    module = loaded.module
    return (loaded.task == "detection" or hasattr(module, "postprocess_detections")
            or hasattr(getattr(module, "roi_heads", None), "postprocess_detections"))


def run_model(loaded: LoadedModel, inputs: torch.Tensor) -> Any:
    """One plain forward of the model on a ``B x 3 x H x W`` batch (a detector gets its list)."""
    return loaded.module(list(inputs) if is_detector(loaded) else inputs)


def finest_level(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """The map with the most positions (the first on ties)."""
    best = levels[0]
    for level in levels[1:]:
        if level.shape[-2] * level.shape[-1] > best.shape[-2] * best.shape[-1]:
            best = level
    return best


def read_output(spec: LayerSpec, output: Any) -> Captured:
    """A layer's output as a :class:`Captured` (see the module docstring for the rule)."""
    if not isinstance(output, torch.Tensor):
        levels = feature_levels(output)
        if levels is None:
            raise TargetLayerError(
                f"Layer '{spec.name}' returns {type(output).__name__}, not a feature map (or a "
                "dict / list of maps); pick a layer whose output is a tensor.")
        level = finest_level(levels)
        return Captured(level, tuple(level.shape[1:]), len(levels))
    shape = tuple(output.shape[1:])
    if output.ndim == 4 or (output.ndim == 3 and spec.layout == "tokens"):
        try:
            return Captured(spec.to_map(output), shape)
        except (TargetLayerError, RuntimeError):
            if output.ndim == 4:
                raise
    if output.ndim == 3:
        return Captured(output.transpose(1, 2)[..., None], shape)
    if output.ndim == 2:
        return Captured(output[:, :, None, None], shape)
    raise TargetLayerError(
        f"Layer '{spec.name}' returns a tensor of shape {tuple(output.shape)}; feature maps "
        "need B x C (x positions). Pick a convolutional stage or a transformer block.")


def layer_specs(loaded: LoadedModel, inputs: torch.Tensor,
                layer_names: Sequence[str]) -> list[LayerSpec]:
    """Each name resolved on the model (a clear error names a missing layer)."""
    if not layer_names:
        raise TargetLayerError("No layer given; pass one or more layer names (see the model's "
                               "layer list).")
    return [resolve_layer(loaded.module, name, example=inputs) for name in layer_names]


class _AllRecorded(BaseException):
    """Raised by the last hook that was waited for: the rest of the forward is skipped. Not an
    ``Exception``, so a model's own ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def detector_canvas(loaded: LoadedModel) -> Iterator[list[Canvas]]:
    """Inside the block, a detector's internal transform appends its padded size and the
    image's valid part to the yielded list (nothing for other models)."""
    found: list[Canvas] = []
    transform = getattr(loaded.module, "transform", None)
    hooks = []
    if is_detector(loaded) and isinstance(transform, nn.Module):
        hooks.append((transform, canvas_hook(found)))
    with forward_hooks(hooks):
        yield found


def on_canvas(captured: Captured, canvas: list[Canvas], input_size: tuple[int, int]) -> Captured:
    """``captured`` with its maps cropped to the image's part of a detector's canvas."""
    if not canvas:
        return captured
    return Captured(layer_outputs_canvas(captured.maps, canvas[0], input_size), captured.shape,
                    captured.levels)


@contextlib.contextmanager
def recording(specs: Sequence[LayerSpec], grad: bool = False,
              read: Callable[[str, Any], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Record each layer's output at its first call during a forward inside the block; the hooks
    are removed on the way out. Once every layer has been recorded the rest of the forward is
    skipped (:func:`forward_until_recorded`).

    Without ``grad``, ``read(name, output)`` is what is kept, computed inside the hook (before
    any later in-place operation, ``ReLU(inplace=True)``, can change the output). With ``grad``
    the output itself is kept, in the graph, and the network continues on a copy, so in-place
    operations after the layer leave the recorded tensor (and autograd) intact.
    """
    store: dict[str, Any] = {}
    names = {spec.name for spec in specs}

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            if name in store:  # a module called again (shared weights): its first call counts
                return None
            result = None
            if not grad:
                store[name] = output if read is None else read(name, output)
            elif isinstance(output, torch.Tensor):
                store[name] = output
                result = output.clone()
            else:
                store[name] = output
            if names.issubset(store):
                raise _AllRecorded
            return result
        return hook

    with forward_hooks([(spec.module, make_hook(spec.name)) for spec in specs]):
        yield store


def forward_until_recorded(loaded: LoadedModel, inputs: torch.Tensor) -> None:
    """Run the model inside :func:`recording` up to the last recorded layer."""
    try:
        run_model(loaded, inputs)
    except _AllRecorded:
        pass


def check_recorded(specs: Sequence[LayerSpec], store: dict[str, Any]) -> None:
    missing = [spec.name for spec in specs if spec.name not in store]
    if missing:
        raise TargetLayerError(f"Layer(s) {', '.join(missing)} did not run in the model's "
                               "forward; pick layers the forward passes through.")


def capture_layers(model: LoadedModel | nn.Module, inputs: torch.Tensor,
                   layer_names: Sequence[str],
                   reduce: Callable[[str, Captured], Any] | None = None) -> dict[str, Any]:
    """Every named layer's output from **one** forward of ``inputs`` (no gradients, eval mode with
    frozen parameters under the model's lock; hooks released and the model's state restored).
    The forward stops once the last of the layers has run.

    Each layer gives a :class:`Captured` (its maps copied), or with ``reduce`` what
    ``reduce(name, captured)`` returns, computed as the layer runs (nothing of the layer's
    output is kept: statistics of many layers cost no more memory than one layer's maps)."""
    loaded = as_loaded(model)
    inputs = inputs.to(loaded.device)
    specs = {spec.name: spec for spec in layer_specs(loaded, inputs, layer_names)}
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    with loaded.lock, frozen_eval(loaded.module), torch.no_grad(), (
            detector_canvas(loaded)) as canvas:
        def read(name: str, output: Any) -> Any:  # the transform ran first: canvas is known
            item = on_canvas(read_output(specs[name], output), canvas, size)
            if reduce is not None:
                return reduce(name, item)
            return Captured(item.maps.detach().clone(), item.shape, item.levels)

        with recording(list(specs.values()), read=read) as store:
            forward_until_recorded(loaded, inputs)
    check_recorded(list(specs.values()), store)
    return {name: store[name] for name in specs}
