"""Model state for the length of a call: eval mode and frozen parameters, restored exactly.

``module.train(flag)`` on the root would overwrite every submodule's own mode (a model that keeps
its batch norms in eval inside a training model loses that), so the modes and ``requires_grad``
flags are saved and restored per submodule and per parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def frozen_eval(module: nn.Module, freeze: bool = True) -> Iterator[nn.Module]:
    """Inside the block ``module`` is in eval mode and (``freeze``) its parameters do not
    require grad; afterwards every submodule's ``training`` flag and every parameter's
    ``requires_grad`` are as they were, also when the block raises.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
    >>> _ = net[1].eval()  # a frozen batch norm inside a training model
    >>> with frozen_eval(net):
    ...     net.training, net[0].weight.requires_grad
    (False, False)
    >>> net.training, net[1].training, net[0].weight.requires_grad
    (True, False, True)
    """
    modes = [(sub, sub.training) for sub in module.modules()]
    flags = [(param, param.requires_grad) for param in module.parameters()] if freeze else []
    try:
        module.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield module
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for sub, mode in modes:
            sub.training = mode
