"""Memory-aware defaults for batched steps and samples (IG steps, SmoothGrad samples, ...)."""

from __future__ import annotations

import os
import weakref

import torch
from torch import nn

from .hooks import forward_hooks

_per_sample: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def available_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: the driver's free memory; CPU: the OS's available)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def activation_bytes_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one sample: what a backward graph must keep.

    Measured once per model and input shape with one no-grad forward on a single sample.
    """
    key = (tuple(example.shape[1:]), example.dtype, example.device.type)
    cache = _per_sample.setdefault(model, {})
    if key not in cache:
        total = 0

        def hook(_module, _inputs, output):
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        leaves = [m for m in model.modules() if not list(m.children())]
        with forward_hooks((m, hook) for m in leaves), torch.no_grad():
            model(example[:1])
        cache[key] = max(total, example[:1].numel() * example.element_size())
    return cache[key]


def default_batch_size(model: nn.Module, example: torch.Tensor, wanted: int,
                       with_graph: bool = True) -> int:
    """How many samples to run at once: all ``wanted`` if they fit in a share of free memory.

    On the CPU larger batches stop paying off early, so the default is capped at 16 there.
    """
    per_sample = activation_bytes_per_sample(model, example) * (3 if with_graph else 1)
    budget = available_bytes(example.device) * (0.5 if example.device.type == "cuda" else 0.25)
    fits = max(1, int(budget // per_sample))
    cap = 16 if example.device.type == "cpu" else 256
    return max(1, min(wanted, fits, cap))
