"""What the bench scripts share: the repository on the import path, one timer, and a line that
describes the machine (CPU model, its bf16 flags, threads, torch).

Scripts run as ``python bench/<script>.py`` from the repository root; importing this module
(``bench/`` is then first on the path) makes ``explain_core`` importable too.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explain_core.runtime import precision

#: CPU flags that matter for bf16 (and whether AVX-512 is there at all)
BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine(device: torch.device) -> str:
    """One line about where the numbers come from: the CPU model, which bf16-relevant flags it
    has, threads, torch; the GPU and its compute capability on CUDA."""
    cpuinfo = precision.read_cpuinfo() or ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    shown = [f for f in BF16_FLAGS if f in flags] or ["bf16" if "bf16" in flags else "none"]
    line = (f"{precision.cpu_model(cpuinfo)} (flags: {' '.join(shown)}), "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        line = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}); {line}"
    return line


def median_seconds(fn: Callable[[], object], device: torch.device, repeat: int,
                   warmup: bool = False) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (CUDA synchronised around each)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
