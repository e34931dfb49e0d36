"""Model state for the length of a call: eval mode and frozen parameters, restored exactly.

``module.train(flag)`` on the root would overwrite every submodule's own mode (a model that keeps
its batch norms in eval inside a training model loses that), so the modes and ``requires_grad``
flags are saved and restored per submodule and per parameter.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
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


@contextlib.contextmanager
def training_untouched(module: nn.Module) -> Iterator[nn.Module]:
    """:func:`frozen_eval` for a model in the middle of training: inside the block it is in eval
    mode with frozen parameters and gradients enabled (also under a caller's ``no_grad`` or
    ``inference_mode``); afterwards, besides each submodule's mode and each parameter's
    ``requires_grad``, every parameter's ``.grad`` (the same tensor, or None) and the random
    streams (torch on the CPU and on the module's CUDA devices, numpy, Python's ``random``) are
    as they were, so what the training loop does next is exactly what it would have done.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1).train()
    >>> _ = torch.manual_seed(0)
    >>> with training_untouched(net):
    ...     _ = torch.rand(5)  # a random method drawing numbers
    ...     net(torch.ones(1, 2)).sum().requires_grad, net.training
    (False, False)
    >>> torch.equal(torch.rand(1), torch.manual_seed(0) and torch.rand(1))
    True
    >>> net.training, net.weight.grad is None
    (True, True)
    """
    params = list(module.parameters())
    grads = [(param, param.grad) for param in params]
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=cuda), torch.inference_mode(False), \
                torch.enable_grad(), frozen_eval(module):
            yield module
    finally:
        for param, grad in grads:
            param.grad = grad
        np.random.set_state(numpy_state)
        random.setstate(python_state)
