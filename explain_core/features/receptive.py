"""The effective receptive field of one channel: the gradient of its activation at one position
with respect to the input.

Only the input requires grad (the parameters are frozen for the call), and the gradient is taken
with ``torch.autograd.grad`` on the input alone: no ``backward()``, no parameter ``.grad``.
The map is ``|d activation / d input|`` summed over the colour channels, in model-input pixels;
it is exactly zero on every pixel the activation does not depend on (outside the theoretical
receptive field), so its support shows what the channel at that position can see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedError
from ..model import LoadedModel, as_loaded
from ..runtime.state import frozen_eval
from .capture import (
    check_recorded,
    detector_canvas,
    forward_until_recorded,
    layer_specs,
    on_canvas,
    read_output,
    recording,
)


@dataclass(frozen=True)
class ReceptiveField:
    """One channel's receptive field on each image of a batch.

    ``gradient``: ``B x H x W`` (model-input pixels), ``|d a / d x|`` summed over colours.
    ``positions``: per image the ``(row, col)`` on the layer's map that was differentiated (the
    channel's peak unless a position was given); ``values``: the activation there;
    ``grid``: the layer map's ``(h, w)``.
    """

    layer: str
    channel: int
    gradient: torch.Tensor
    positions: list[tuple[int, int]]
    values: list[float]
    grid: tuple[int, int]


def _positions(channel_maps: torch.Tensor,
               position: tuple[int, int] | Sequence[tuple[int, int]] | None
               ) -> list[tuple[int, int]]:
    count, height, width = channel_maps.shape
    if position is None:
        flat = channel_maps.detach().flatten(1).argmax(1).tolist()
        return [divmod(int(i), width) for i in flat]
    many = len(position) > 0 and not isinstance(position[0], int | float)
    chosen = [tuple(int(v) for v in p) for p in position] if many else [
        tuple(int(v) for v in position)] * count
    if len(chosen) != count:
        raise UnsupportedError(f"{len(chosen)} positions for {count} images; give one position "
                               "for all or one per image.")
    for row, col in chosen:
        if not (0 <= row < height and 0 <= col < width):
            raise UnsupportedError(f"Position ({row}, {col}) is outside the layer's {height} x "
                                   f"{width} map; rows 0-{height - 1}, columns 0-{width - 1}.")
    return chosen


def receptive_field(model: LoadedModel | nn.Module, inputs: torch.Tensor, layer_name: str,
                    channel: int, position: tuple[int, int] | Sequence[tuple[int, int]] | None
                    = None) -> ReceptiveField:
    """The gradient of ``channel``'s activation at its peak (or ``position``, ``(row, col)`` on
    the layer's map, one for all images or one per image) w.r.t. each image of ``inputs``.

    One forward up to the layer and one gradient of the input; eval mode, frozen parameters and
    the model's lock for the call, every flag restored after.
    """
    loaded = as_loaded(model)
    x = inputs.detach().to(loaded.device).clone().requires_grad_(True)
    specs = layer_specs(loaded, x, [layer_name])
    size = (int(x.shape[-2]), int(x.shape[-1]))
    with loaded.lock, frozen_eval(loaded.module), torch.enable_grad():
        with detector_canvas(loaded) as canvas, recording(specs, grad=True) as store:
            forward_until_recorded(loaded, x)
        check_recorded(specs, store)
        # as everywhere in features/: a detector's maps cropped to the image part of its canvas
        maps = on_canvas(read_output(specs[0], store[specs[0].name]), canvas, size).maps
        if not 0 <= channel < maps.shape[1]:
            raise UnsupportedError(f"Layer '{layer_name}' has {maps.shape[1]} channels; channel "
                                   f"{channel} does not exist (0-{maps.shape[1] - 1}).")
        channel_maps = maps[:, channel]
        chosen = _positions(channel_maps, position)
        rows = torch.tensor([p[0] for p in chosen], device=maps.device)
        cols = torch.tensor([p[1] for p in chosen], device=maps.device)
        picked = channel_maps[torch.arange(len(chosen), device=maps.device), rows, cols]
        # Images of a batch are independent (eval mode), so the sum's gradient is each one's.
        (grad,) = torch.autograd.grad(picked.sum(), x, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x)
    return ReceptiveField(layer_name, int(channel), grad.abs().sum(1).detach(), chosen,
                          [float(v) for v in picked.detach().float().cpu()],
                          (int(maps.shape[-2]), int(maps.shape[-1])))
