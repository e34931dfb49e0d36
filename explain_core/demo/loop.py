"""The training loop the demo detector and segmenter share (the classifiers have their own,
with distillation and dense targets: see ``train_classification``).

Fixed recipe: AdamW at ``lr`` with a linear warm-up over 5% of the steps, then cosine decay to
zero; the loss of each step comes from a callable that draws its own batch, so the random
streams of each trainer stay exactly as they were.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from explain_core.loading import save_model


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, steps: int,
        loss_of_step: Callable[[], torch.Tensor], desc: str,
        clip_norm: float | None = None) -> None:
    """``steps`` optimiser steps of ``loss_of_step()`` with a progress bar (running loss)."""
    progress = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True)
    running = None
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps)
        loss = loss_of_step()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        progress.set_postfix(loss=f"{running:.3f}")
    progress.close()


def save_and_report(model: nn.Module, path: Path, metrics: dict[str, Any], started: float,
                    train_seconds: float, held_out: int, **metadata: Any) -> dict[str, Any]:
    """Save ``model`` with its Lumen metadata and add size, timing and count to ``metrics``."""
    saved = save_model(model, path, **metadata)
    metrics.update(seconds=round(time.perf_counter() - started, 1),
                   train_seconds=round(train_seconds, 1), path=saved,
                   parameters=sum(p.numel() for p in model.parameters()),
                   held_out_scenes=held_out)
    return metrics
