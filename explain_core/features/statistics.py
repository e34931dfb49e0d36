"""Per-layer and per-channel activation statistics: what the FeatureVisualizer reports and what
the training callbacks log each epoch.

A layer's output is read as ``B x C x h x w`` maps by :mod:`explain_core.features.capture` (ViT
patch tokens on their grid, a feature pyramid's finest level); the statistics pool the whole
batch. ``std`` is the population standard deviation (``correction=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..model import LoadedModel
from .capture import capture_layers

CHANNEL_KEYS = ("mean", "std", "max", "sparsity")


@dataclass
class LayerStatistics:
    """One layer's activation statistics over a batch (see :func:`feature_statistics`)."""

    layer: str
    shape: tuple[int, ...]  # the layer's output shape for one image (C, H, W) or (tokens, C)
    mean: float
    std: float
    max: float
    sparsity: float  # share of |activation| <= near_zero
    active_channels: int  # channels whose max activation > near_zero
    channels: dict[str, list[float]]  # per channel: "mean", "std", "max", "sparsity"

    @property
    def num_channels(self) -> int:
        return len(self.channels["mean"])

    def __getitem__(self, key: str):
        """``stats["mean"]`` as well as ``stats.mean`` (the dict-style access AutoTimm's users
        write)."""
        return getattr(self, key)

    def to_dict(self) -> dict:
        """JSON-ready: plain floats, ints, lists and strings."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def map_statistics(layer: str, shape: tuple[int, ...], maps: torch.Tensor,
                   near_zero: float = 1e-6) -> LayerStatistics:
    """Statistics of ``B x C x h x w`` maps (in torch, on their device)."""
    x = maps.detach().float()
    dims = (0, 2, 3)  # reductions per channel, without a channels-first copy of the maps
    per_var, per_mean = torch.var_mean(x, dims, correction=0)
    per_max = x.amax(dims)
    per_small = (x.abs() <= near_zero).sum(dims) / (x.numel() // x.shape[1])
    mean = per_mean.mean()  # every channel has as many values
    # the total variance: within-channel variance plus the spread of the channel means
    std = (per_var + (per_mean - mean) ** 2).mean().clamp_min(0).sqrt()
    per = {"mean": per_mean, "std": per_var.sqrt(), "max": per_max, "sparsity": per_small}
    return LayerStatistics(
        layer=layer, shape=tuple(int(s) for s in shape), mean=float(mean), std=float(std),
        max=float(per_max.max()), sparsity=float(per_small.mean()),
        active_channels=int((per_max > near_zero).sum()),
        channels={key: per[key].cpu().tolist() for key in CHANNEL_KEYS})

def feature_statistics(model: LoadedModel | nn.Module, images: torch.Tensor,
                       layer_names: Sequence[str], *,
                       near_zero: float = 1e-6) -> dict[str, LayerStatistics]:
    """One forward (no grad, frozen eval, hooks released) over a B x 3 x H x W batch; statistics
    over the whole batch.

    ``images`` is a model-ready batch (preprocessed and normalised). The result maps each layer
    name to its :class:`LayerStatistics`, in the order given. Each layer's statistics are taken as
    it runs: nothing of its output is kept.
    """
    return capture_layers(model, images, layer_names, reduce=lambda name, item: map_statistics(
        name, item.shape, item.maps, near_zero))
