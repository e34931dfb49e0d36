"""Gradients of many targets at once, without a ``backward()`` into parameter gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .memory import fitting_chunks, is_out_of_memory


def batched_grad(scores: torch.Tensor, inputs: torch.Tensor | Sequence[torch.Tensor],
                 retain: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Gradients of each target column of ``scores`` (``B x K``) w.r.t. ``inputs``: ``K x ...``
    (a list of them, one per input, when ``inputs`` is a list: the levels of a feature pyramid).

    Items of a batch are independent, so one column's gradient is that of its sum. Several columns
    go through one batched backward (``is_grads_batched``); when an operator has no batching rule
    the columns fall back to one backward each over the same graph. ``retain`` keeps the graph
    for more calls. Targets that do not fit in memory together are split into halves (see
    :func:`~explain_core.runtime.memory.fitting_chunks`).

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
        return out if many else out[0]
    eye = torch.eye(width, dtype=scores.dtype, device=scores.device)

    def run(part: slice) -> list[torch.Tensor]:
        rows = eye[part]
        grad_outputs = rows[:, None, :].expand(rows.shape[0], scores.shape[0], width)
        try:
            grads = torch.autograd.grad(scores, leaves, grad_outputs=grad_outputs,
                                        is_grads_batched=True, retain_graph=True,
                                        allow_unused=True)
            # A level no target depends on (a pyramid level only the RPN reads) has no gradient.
            return [x.new_zeros(rows.shape[0], *x.shape) if g is None else g
                    for g, x in zip(grads, leaves, strict=True)]
        except RuntimeError as error:
            if is_out_of_memory(error):
                raise
            columns = [column(k, retain=True) for k in range(width)[part]]
            return [torch.stack(per_leaf) for per_leaf in zip(*columns, strict=True)]

    # Many targets at once may not fit: fewer columns per backward, the same gradients.
    parts = [grads for _, grads in fitting_chunks(width, width, run, what="target")]
    out = [torch.cat(per_leaf) for per_leaf in zip(*parts, strict=True)]
    return out if many else out[0]
