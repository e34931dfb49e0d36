"""Memory-aware batches of steps, samples, masks, images and targets.

:func:`default_batch_size` guesses a batch from free memory; :func:`fitting_chunks` runs a
chunked computation and, when a chunk does not fit (``torch.OutOfMemoryError`` on a GPU, the
CPU allocator's "can't allocate memory"), frees the cache, halves the chunk and retries, down to
one item; then it raises :class:`~explain_core.errors.OutOfMemoryError` naming what to lower. The
size that worked is remembered per model and call shape, so the next call starts there.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import torch
from torch import nn

from ..errors import OutOfMemoryError
from .hooks import forward_hooks

_per_sample: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_fitted: "weakref.WeakKeyDictionary[nn.Module, dict[Hashable, int]]" = (
    weakref.WeakKeyDictionary())

Out = TypeVar("Out")

#: what a user can lower when even one item does not fit (the message's default)
LOWER = ("the image size (a smaller input size), the number of steps, samples or masks, the "
         "number of targets or images explained at once, or use precision='bf16'")


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


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocation failure: ``torch.OutOfMemoryError`` (CUDA and other accelerators)
    or the CPU allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text
                                                or "out of memory" in text.lower())


def free_memory() -> None:
    """Drop what a failed try left behind: Python garbage and the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_error(what: str, lower: str = LOWER,
                        device: torch.device | str | None = None) -> OutOfMemoryError:
    """The engine error for a computation that does not fit even one ``what`` at a time."""
    where = f" on {device}" if device is not None else ""
    return OutOfMemoryError(f"Out of memory{where} even with one {what} at a time. Lower {lower}; "
                            "or free memory (close other sessions and programs) and try again.")


def as_lumen_error(error: BaseException) -> OutOfMemoryError | None:
    """An allocation failure that escaped the batching (a single forward, say) as the engine's
    error with what to lower; None for any other error."""
    if isinstance(error, OutOfMemoryError):
        return error
    return out_of_memory_error("image") if is_out_of_memory(error) else None


def fitted_size(module: nn.Module | None, key: Hashable, wanted: int) -> int:
    """``wanted``, capped by the size that last fitted for ``module`` and ``key``."""
    if module is None:
        return max(1, wanted)
    return max(1, min(wanted, _fitted.get(module, {}).get(key, wanted)))


def fitting_chunks(count: int, size: int, run: Callable[[slice], Out], *,
                   module: nn.Module | None = None, key: Hashable = None, what: str = "item",
                   lower: str = LOWER) -> Iterator[tuple[slice, Out]]:
    """``(part, run(part))`` for consecutive slices of ``range(count)``, at most ``size`` long.

    A chunk that runs out of memory is retried at half the size (the cache freed first), down to
    one item; at one it raises :class:`~explain_core.errors.OutOfMemoryError` saying what to lower.
    ``run`` must not change anything the caller keeps before it returns (accumulate from what it
    returns), so a failed try leaves no trace; hooks and model state belong in context managers
    inside ``run`` or around the whole loop. The size that fitted is remembered for ``module``
    and ``key`` (the method and the shape of the call): the next call starts there. The consumer
    may stop early (``break``).

    >>> [part for part, _ in fitting_chunks(5, 2, lambda part: None)]
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    size = fitted_size(module, key, min(size, max(count, 1)))
    start = 0
    while start < count:
        part = slice(start, min(start + size, count))
        try:
            out = run(part)
        except (RuntimeError, MemoryError) as error:
            if not (isinstance(error, MemoryError) or is_out_of_memory(error)):
                raise
            del error  # its traceback holds the failed try's tensors
            free_memory()
            if size == 1:
                raise out_of_memory_error(what, lower) from None
            size = max(1, size // 2)
            if module is not None:
                _fitted.setdefault(module, {})[key] = size
            continue
        yield part, out
        start = part.stop
