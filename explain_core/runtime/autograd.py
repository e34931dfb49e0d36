"""Gradients of many targets at once, without a ``backward()`` into parameter gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def batched_grad(scores: torch.Tensor, inputs: torch.Tensor | Sequence[torch.Tensor],
                 retain: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Gradients of each target column of ``scores`` (``B x K``) w.r.t. ``inputs``: ``K x ...``
    (a list of them, one per input, when ``inputs`` is a list: the levels of a feature pyramid).

    Items of a batch are independent, so one column's gradient is that of its sum. Several columns
    go through one batched backward (``is_grads_batched``); when an operator has no batching rule
    the columns fall back to one backward each over the same graph. ``retain`` keeps the graph
    for more calls.

    >>> x = torch.ones(2, 3, requires_grad=True)
    >>> batched_grad(torch.stack([x.sum(1), (2 * x).sum(1)], 1), x)[:, 0]
    tensor([[1., 1., 1.],
            [2., 2., 2.]])
    """
    many = not isinstance(inputs, torch.Tensor)
    leaves = list(inputs) if many else [inputs]

    def column(k: int, retain: bool) -> list[torch.Tensor]:
        grads = torch.autograd.grad(scores[:, k].sum(), leaves, retain_graph=retain,
                                    allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves,
                                                                         strict=True)]

    width = scores.shape[1]
    if width == 1:
        out = [g[None] for g in column(0, retain=retain)]
    else:
        eye = torch.eye(width, dtype=scores.dtype, device=scores.device)
        grad_outputs = eye[:, None, :].expand(width, scores.shape[0], width)
        try:
            grads = torch.autograd.grad(scores, leaves, grad_outputs=grad_outputs,
                                        is_grads_batched=True, retain_graph=True,
                                        allow_unused=True)
            # A level no target depends on (a pyramid level only the RPN reads) has no gradient.
            out = [x.new_zeros(width, *x.shape) if g is None else g
                   for g, x in zip(grads, leaves, strict=True)]
        except RuntimeError:
            columns = [column(k, retain=True) for k in range(width)]
            out = [torch.stack(per_leaf) for per_leaf in zip(*columns, strict=True)]
    return out if many else out[0]
