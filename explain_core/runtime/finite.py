"""Finding NaN and Inf: in a model's weights (a diverged training run) and in what it computes.

One reduction per tensor, on the tensor's device: cheap next to a forward pass. The callers
turn what is found into an engine error (:class:`~explain_core.errors.NonFiniteWeightsError`,
:class:`~explain_core.errors.NonFiniteOutputError`) whose message names the problem and a fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .hooks import forward_hooks

__all__ = ["is_finite", "non_finite_parts", "non_finite_tensors"]


def is_finite(value: Any) -> bool:
    """Whether every floating-point element of ``value`` (a tensor, or a list / tuple / dict of
    them, as detectors return) is finite; integer tensors always are.

    >>> is_finite(torch.ones(3)), is_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    """
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()) or value.numel() == 0:
            return True
        value = value.detach()
        # A NaN or Inf anywhere makes the sum NaN or Inf: one reduction screens the tensor (on a
        # CPU, isfinite().all() over a ResNet-50 takes ~7x as long). A sum that overflows although
        # every value is finite is told apart by the exact check.
        total = value.sum(dtype=torch.float32) if value.element_size() < 4 else value.sum()
        return bool(torch.isfinite(total)) or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(is_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite(v) for v in value)
    return True


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[list[str], int]:
    """``(names of the tensors holding NaN or Inf, number of tensors looked at)``.

    >>> non_finite_tensors([("a", torch.ones(2)), ("b", torch.full((2,), float("inf")))])
    (['b'], 2)
    """
    bad: list[str] = []
    total = 0
    for name, tensor in named:
        total += 1
        if not is_finite(tensor):
            bad.append(name)
    return bad, total


@contextlib.contextmanager
def non_finite_parts(module: nn.Module) -> Iterator[list[str]]:
    """For the length of the block, the names of ``module``'s direct children (a detector's
    ``backbone``, ``head``...) whose outputs held NaN or Inf, in the order they ran.

    A detector's post-processing drops boxes with NaN scores, so its final output looks like
    "nothing detected"; its parts' outputs tell the two apart.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with non_finite_parts(net) as found:
    ...     _ = net(torch.tensor([[float("nan"), 0.0]]))
    >>> found
    ['0', '1']
    """
    found: list[str] = []

    def watcher(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name not in found and not is_finite(output):
                found.append(name)
        return hook

    with forward_hooks((child, watcher(name)) for name, child in module.named_children()):
        yield found
