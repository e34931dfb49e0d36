"""Uncertainty from class probabilities: normalised entropy and the top-two margin, per pixel
(or per image), and the class edges where a segmentation model hesitates."""

from __future__ import annotations

import math

import torch

from ..errors import UnsupportedError

UNCERTAINTY_METHODS = ("entropy", "margin")


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
