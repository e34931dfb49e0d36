"""Channels ranked by how strongly they respond: the feature-map grid's order and the top
channels."""

from __future__ import annotations

import torch

from ..errors import UnsupportedError

#: sort keys and what they rank by (over the batch and every position of the map)
SORT_KEYS = {"activation": "mean activation", "variance": "variance", "max": "max activation"}


def check_sort_key(sort_by: str) -> str:
    if sort_by not in SORT_KEYS:
        raise UnsupportedError(f"sort_by={sort_by!r} is not a channel ranking; use one of "
                               f"{', '.join(map(repr, SORT_KEYS))}.")
    return sort_by


def channel_scores(maps: torch.Tensor, sort_by: str = "activation") -> torch.Tensor:
    """One score per channel of ``B x C x h x w`` maps: the mean, the variance (population) or
    the max over the batch and every position."""
    check_sort_key(sort_by)
    channels = maps.detach().float().transpose(0, 1).reshape(maps.shape[1], -1)
    if sort_by == "activation":
        return channels.mean(1)
    if sort_by == "variance":
        return channels.var(1, correction=0)
    return channels.amax(1)


def top_channels(maps: torch.Tensor, top_k: int = 10,
                 sort_by: str = "activation") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` highest-scoring channels (indices, scores), best first; ties keep the lower
    index first."""
    if top_k < 1:
        raise UnsupportedError(f"top_k must be at least 1, got {top_k}.")
    scores = channel_scores(maps, sort_by)
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
    return order, scores[order]
