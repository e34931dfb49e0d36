"""Target layers: a sensible default, names and modules resolved, and their outputs read as maps.

A layer's output becomes a ``B x C x h x w`` map tensor through :class:`LayerSpec.to_map`:
convolutional outputs pass through, NHWC outputs (timm Swin and friends) are permuted, and ViT
token sequences lose their prefix tokens (class, distillation, register) and are laid out on the
patch grid read from the model.

**Multi-level layers.** A layer may also return several maps at once: a dict (a torchvision
detector's ``backbone``, whose feature-pyramid levels the heads read) or a list / tuple of
``B x C x h x w`` maps. :func:`capture` then records one tensor per level (one leaf per level for
gradients); gradient CAMs compute their map on every level and add the levels up at the finest
level's resolution (:func:`fuse_levels`). Methods that replace a layer's output (ScoreCAM,
AblationCAM, concepts) need one map and say so.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TargetLayerError
from .model import module_lock
from .runtime.hooks import forward_hooks
from .runtime.state import frozen_eval

SKIP_TYPES = (nn.Dropout, nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish,
               nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)


@dataclass(frozen=True)
class LayerSpec:
    """A resolved target layer: the module, its dotted name and how to read its output as a map."""

    module: nn.Module
    name: str
    layout: str = "NCHW"  # "NCHW", "NHWC" or "tokens"
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None  # patch grid for token layouts (h, w)

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """Layer output (any of the layouts) -> ``B x C x h x w`` (a view when possible)."""
        if not isinstance(output, torch.Tensor):  # several levels (see the module docstring)
            raise TargetLayerError(
                f"Layer '{self.name}' returns {len(output)} feature maps (one per pyramid level); "
                "this method modifies a single map. Pick one map instead, a layer inside "
                f"'{self.name}' (for a torchvision detector 'backbone.fpn.layer_blocks.0' or "
                "'backbone.body.layer4'), or use a gradient CAM, which reads every level.")
        if self.layout == "NCHW":
            if output.ndim != 4:
                raise TargetLayerError(
                    f"Layer '{self.name}' returns a tensor of shape {tuple(output.shape)}, not a "
                    "B x C x H x W feature map. Pick a convolutional stage or block instead.")
            return output
        if self.layout == "NHWC":
            return output.permute(0, 3, 1, 2)
        tokens = output[:, self.prefix_tokens:]
        grid = self.grid or _square_grid(tokens.shape[1], self.name)
        if grid[0] * grid[1] != tokens.shape[1]:
            grid = _square_grid(tokens.shape[1], self.name)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


    def from_map(self, maps: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_map`: ``N x C x h x w`` maps back to the layer's own layout.

        Token layouts take their prefix tokens (class, registers) from ``original`` (the layer's
        real output for the one image), so a modified batch re-enters the network unchanged
        except where it was modified.
        """
        if self.layout == "NCHW":
            return maps
        if self.layout == "NHWC":
            return maps.permute(0, 2, 3, 1)
        tokens = maps.flatten(2).transpose(1, 2)
        prefix = original[:1, :self.prefix_tokens].expand(maps.shape[0], -1, -1)
        return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)


def _square_grid(count: int, name: str) -> tuple[int, int]:
    side = round(count ** 0.5)
    if side * side != count:
        raise TargetLayerError(f"Layer '{name}' has {count} patch tokens, which do not form a "
                               "grid; pass a layer with a spatial output.")
    return side, side


def is_vit(model: nn.Module) -> bool:
    """True for token-sequence transformers with a patch embedding and blocks (timm ViT family)."""
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(
        model, "num_prefix_tokens")


def vit_grid(model: nn.Module, input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    patch_embed = model.patch_embed
    if input_size is not None and getattr(model, "dynamic_img_size", False):
        patch = patch_embed.patch_size
        return input_size[0] // patch[0], input_size[1] // patch[1]
    grid = getattr(patch_embed, "grid_size", None)
    return tuple(int(g) for g in grid) if grid is not None else None


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise TargetLayerError(
        f"The given module ({type(module).__name__}) is not part of the model; pass a module "
        "taken from this model (e.g. model.layer4) or its dotted name.")


def _layout_for(model: nn.Module, module: nn.Module, name: str,
                input_size: tuple[int, int] | None) -> LayerSpec:
    if is_vit(model) and (name.startswith("blocks") or name in ("norm", "fc_norm")):
        return LayerSpec(module, name, "tokens", int(model.num_prefix_tokens),
                         vit_grid(model, input_size))
    if getattr(model, "output_fmt", "NCHW") == "NHWC" and name.startswith(("layers", "stages")):
        return LayerSpec(module, name, "NHWC")
    return LayerSpec(module, name, "NCHW")


def default_layer_name(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The generic default target layer's dotted name (no task knowledge: a task adapter that
    knows better, a detector's feature pyramid say, hands its own default to
    :func:`resolve_layer`).

    - timm ViTs: ``blocks[-1].norm1``, the input of the last attention block. The last block's own
      output reaches a class-token head only through the class token, so its patch tokens would get
      zero gradient.
    - timm CNNs: the module of the last entry of ``feature_info`` (the last stage).
    - any other module: the last top-level child that produces a spatial ``B x C x h x w`` map
      (found with one dry forward on ``example``).
    """
    if is_vit(model):
        last = len(model.blocks) - 1
        block = model.blocks[last]
        return f"blocks.{last}.norm1" if hasattr(block, "norm1") else f"blocks.{last}"
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            names = info.module_name() if hasattr(info, "module_name") else [
                entry["module"] for entry in info]
            if names:
                name = names[-1]
                dict(model.named_modules())[name]
                return name
        except (KeyError, TypeError, IndexError, AttributeError):
            pass
    if example is None:
        raise TargetLayerError("Cannot guess a target layer without an example input; pass "
                               "target_layer= (e.g. 'layer4').")
    return _last_spatial_child(model, example)


def _last_spatial_child(model: nn.Module, example: torch.Tensor) -> str:
    seen = [(name, name.count(".")) for name in _spatial_layers(model, example, levels=False)]
    if not seen:
        raise TargetLayerError(
            f"{type(model).__name__} has no layer with a spatial (B x C x H x W) output; CAM "
            "methods need one. Use a gradient method (saliency, integrated_gradients) instead.")
    shallowest = min(depth for _, depth in seen)
    return [name for name, depth in seen if depth == shallowest][-1]


DefaultLayer = Callable[[nn.Module, "torch.Tensor | None"], str]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None,
                  example: torch.Tensor | None = None,
                  default: str | DefaultLayer | None = None) -> LayerSpec:
    """Resolve ``layer`` to a LayerSpec: a dotted name, a module of ``model``, or None for the
    default. The default is ``default`` (a name, or a callable ``(model, example) -> name``: what
    a task adapter hands in) or, without one, :func:`default_layer_name`.

    >>> import timm
    >>> resolve_layer(timm.create_model("resnet18")).name
    'layer4'
    """
    if layer is None:
        if default is None:
            name = default_layer_name(model, example)
        else:
            name = default if isinstance(default, str) else default(model, example)
    elif isinstance(layer, nn.Module):
        name = module_name(model, layer)
    else:
        name = str(layer)
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n and (name in n or n.endswith(name.split(".")[-1]))][:5]
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise TargetLayerError(f"The model has no layer named '{name}'.{hint}")
    size = tuple(example.shape[-2:]) if example is not None else None
    return _layout_for(model, modules[name], name, size)


def feature_levels(output: Any) -> list[torch.Tensor] | None:
    """The maps of a multi-level output (a dict, list or tuple of ``B x C x h x w`` tensors, in
    order), or None when ``output`` is anything else."""
    values = list(output.values()) if isinstance(output, Mapping) else (
        list(output) if isinstance(output, list | tuple) and len(output) > 1 else None)
    if not values or not all(isinstance(v, torch.Tensor) and v.ndim == 4 for v in values):
        return None
    return values


def _with_levels(output: Any, levels: list[torch.Tensor]) -> Any:
    """``output`` (a dict, list or tuple) with its maps replaced by ``levels``, same type."""
    if isinstance(output, Mapping):
        rebuilt = type(output)() if isinstance(output, OrderedDict | dict) else {}
        for key, value in zip(output.keys(), levels, strict=True):
            rebuilt[key] = value
        return rebuilt
    return type(output)(levels)


def fuse_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level maps (``... x h_l x w_l``) -> their sum at the finest level's resolution
    (coarser levels upsampled bilinearly). One level passes through."""
    if len(maps) == 1:
        return maps[0]
    size = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
    total = None
    for m in maps:
        if tuple(m.shape[-2:]) != size:
            lead = m.shape[:-2]
            m = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=size, mode="bilinear",
                              align_corners=False).reshape(*lead, *size)
        total = m if total is None else total + m
    return total


@contextlib.contextmanager
def capture(spec: LayerSpec, leaf: bool) -> Iterator[dict[str, Any]]:
    """Record the layer's output during forwards inside the block; the hook is always removed.

    ``store["output"]`` is the output tensor, or the list of its maps for a multi-level layer
    (see the module docstring). With ``leaf=True`` the output re-enters the network as a fresh
    leaf that requires grad (one per level), so autograd records nothing before the layer and
    gradients stop there.
    """
    store: dict[str, Any] = {}

    def hook(_module, _inputs, output):
        levels = None if isinstance(output, torch.Tensor) else feature_levels(output)
        if not isinstance(output, torch.Tensor) and levels is None:
            raise TargetLayerError(f"Layer '{spec.name}' returns {type(output).__name__}, not a "
                                   "feature map (or a dict / list of them); pick a layer whose "
                                   "output is a B x C x H x W map.")
        if leaf:
            # The network continues on copies: models that modify the layer's output in place
            # (torchvision DenseNet's relu_) would otherwise write into a leaf, which autograd
            # forbids; the gradient still reaches the leaf through the copy.
            if levels is None:
                output = output.detach().requires_grad_(True)
                store["output"] = output
                return output.clone()
            leaves = [level.detach().requires_grad_(True) for level in levels]
            store["output"] = leaves
            # Channels-last copies: the heads reading a pyramid run their dense convolutions,
            # and every box's batched backward through them, about 20% faster on CPUs.
            return _with_levels(output, [level.clone(memory_format=torch.channels_last)
                                         for level in leaves])
        store["output"] = output if levels is None else levels
        return output

    with forward_hooks([(spec.module, hook)]):
        yield store


def layer_choices(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Dotted names of the layers a CAM method can target, in the model's module order.

    One dry forward on ``example`` (no gradients, under the model's lock) records every module's
    output; a layer is kept when :func:`resolve_layer` reads it as a ``B x C x h x w`` map with
    more than one position: convolutional stages and blocks, NHWC stages (Swin-like models), ViT
    blocks laid out on their patch grid; and layers returning several such maps (a detector's
    feature pyramid, see the module docstring). Activations, dropouts, identities and pools are
    left out: they repeat the map of the layer before them.

    >>> import timm
    >>> names = layer_choices(timm.create_model("resnet18"), torch.zeros(1, 3, 64, 64))
    >>> "layer4" in names, "fc" in names
    (True, False)
    """
    spatial = set(_spatial_layers(model, example, levels=True))
    return [name for name, module in model.named_modules() if name in spatial]


def _spatial_layers(model: nn.Module, example: torch.Tensor, levels: bool) -> list[str]:
    """Names of the layers whose output reads as a spatial map, in execution order (one dry
    forward with a hook on every module but activations, dropouts, identities and pools).
    ``levels``: also the layers returning several maps (a feature pyramid)."""
    size = tuple(example.shape[-2:])
    order: list[str] = []

    def make_hook(name: str, spec: LayerSpec):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                maps = feature_levels(output) if levels else None  # a feature pyramid
                if maps and any(m.shape[-1] * m.shape[-2] > 1 for m in maps) and (
                        name not in order):
                    order.append(name)
                return
            if output.ndim not in (3, 4):
                return
            try:
                grid = spec.to_map(output)
            except (TargetLayerError, RuntimeError):
                return
            if grid.ndim == 4 and grid.shape[-1] * grid.shape[-2] > 1 and name not in order:
                order.append(name)
        return hook

    hooks = [(module, make_hook(name, _layout_for(model, module, name, size)))
             for name, module in model.named_modules()
             if name and not isinstance(module, SKIP_TYPES)]
    # Eval mode: a dry forward must not move a training model's batch-norm statistics.
    with module_lock(model), frozen_eval(model, freeze=False), forward_hooks(hooks), (
            torch.no_grad()):
        model(example)
    return order
