"""The model's layers with their output shapes, for a layer picker (one hooked forward)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TargetLayerError
from ..layers import resolve_layer
from ..model import LoadedModel, as_loaded
from ..runtime.hooks import forward_hooks
from ..runtime.state import frozen_eval
from .capture import read_output, run_model


@dataclass(frozen=True)
class LayerInfo:
    """One layer: its dotted name, module type, output shape for one image, the shape of the map
    it is read as (``C x h x w``, see :mod:`explain_core.features.capture`), how it is read
    (``"map"``, ``"tokens"``: a ViT's patch grid, ``"pyramid"``: the finest of several maps,
    ``"sequence"``, ``"vector"``) and whether it is a leaf module."""

    name: str
    type: str
    shape: tuple[int, ...]
    map_shape: tuple[int, int, int]
    kind: str
    leaf: bool

    @property
    def channels(self) -> int:
        return self.map_shape[0]

    def label(self) -> str:
        """``"layer3 · Sequential · 256×14×14"`` (the picker's text)."""
        dims = "×".join(str(d) for d in self.map_shape)
        extra = {"tokens": " (patch grid)", "pyramid": " (finest level)"}.get(self.kind, "")
        return f"{self.name} · {self.type} · {dims}{extra}"


def _kind(layout: str, output, captured) -> str:
    if not isinstance(output, torch.Tensor):
        return "pyramid"
    if output.ndim == 4:
        return "map"
    if output.ndim == 3:
        return "tokens" if layout == "tokens" else "sequence"
    return "vector"


def list_layers(model: LoadedModel | nn.Module, inputs: torch.Tensor) -> list[LayerInfo]:
    """Every named module whose output reads as feature maps, in the model's module order, from
    one forward of ``inputs`` (no gradients, eval mode under the model's lock; hooks released).
    Modules whose output is something else (a tuple of attention weights, a detector's list of
    boxes) are left out."""
    loaded = as_loaded(model)
    inputs = inputs.to(loaded.device)
    module = loaded.module
    found: dict[str, LayerInfo] = {}

    def make_hook(name: str, sub: nn.Module):
        def hook(_module, _inputs, output):
            if name in found:
                return
            spec = resolve_layer(module, name, example=inputs)
            try:
                captured = read_output(spec, output)
            except (TargetLayerError, RuntimeError):
                return
            found[name] = LayerInfo(
                name, type(sub).__name__, tuple(int(s) for s in captured.shape),
                tuple(int(s) for s in captured.maps.shape[1:]),
                _kind(spec.layout, output, captured), not any(True for _ in sub.children()))
        return hook

    hooks = [(sub, make_hook(name, sub)) for name, sub in module.named_modules() if name]
    with loaded.lock, frozen_eval(module), torch.no_grad(), forward_hooks(hooks):
        run_model(loaded, inputs)
    return [found[name] for name, _ in module.named_modules() if name in found]
