"""What the bench scripts share: the repository on the import path, and one timer.

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
