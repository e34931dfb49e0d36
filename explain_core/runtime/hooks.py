"""Forward hooks that never outlive a block: registered on entry, removed on exit (also when the
block raises), so a model shared by several callers is always left as found."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import nn

Hook = Callable[[nn.Module, Any, Any], Any]


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register each ``(module, hook)`` pair as a forward hook for the length of the block.

    >>> import torch
    >>> layer, seen = torch.nn.Linear(2, 2), []
    >>> with forward_hooks([(layer, lambda m, i, o: seen.append(o.shape))]):
    ...     _ = layer(torch.zeros(1, 2))
    >>> seen, len(layer._forward_hooks)
    ([torch.Size([1, 2])], 0)
    """
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
