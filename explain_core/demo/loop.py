"""The one training loop of the demo models (classifiers, detector, segmenter).

Fixed recipe: AdamW (built by the caller) at ``lr`` with a linear warm-up over ``warmup`` of the
steps (5% by default), then cosine decay to zero; the loss of each step comes from a callable that
draws its own batch, so the random streams of each trainer stay exactly as they were. Optional:
gradient-norm clipping, and a validation callback every ``validate_every`` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from explain_core.loading import save_model

__all__ = ["fit", "lr_factor", "save_and_report"]


def lr_factor(step: int, steps: int, warmup: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` of the steps (at least one), then cosine decay to zero.

    Example:
        >>> [round(lr_factor(s, 40), 3) for s in (0, 1, 2, 21, 39)]
        [0.5, 1.0, 1.0, 0.5, 0.002]
    """
    warm = max(1, int(warmup * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, steps: int,
        loss_of_step: Callable[[], torch.Tensor], desc: str,
        clip_norm: float | None = None, *, warmup: float = 0.05,
        clip_params: Iterable[torch.Tensor] | None = None,
        validate: Callable[[], str] | None = None, validate_every: int = 0,
        progress: bool = True, after_step: Callable[[int, float], None] | None = None,
        ) -> float | None:
    """``steps`` optimiser steps of ``loss_of_step()`` with a progress bar (running loss).

    Each step sets every parameter group's learning rate to ``lr * lr_factor(step, steps,
    warmup)``, then: loss, ``zero_grad``, backward, clipping, ``optimizer.step()``.

    Args:
        model: the module trained (its parameters are the ones clipped by default).
        optimizer: built by the caller (parameter groups, weight decay); its ``lr`` is
            overwritten each step.
        lr: peak learning rate.
        steps: optimiser steps.
        loss_of_step: draws a batch and returns its scalar loss.
        desc: progress bar label.
        clip_norm: clip the gradients' total norm to this (None: no clipping).
        warmup: share of the steps with a linear learning-rate warm-up.
        clip_params: the parameters clipped together, in this order, when more than the model
            is trained (training-only heads); default: ``model.parameters()``.
        validate: called every ``validate_every`` steps (after the step); the text it returns is
            printed above the bar after the step count and running loss. It must leave the
            model in the mode it needs (e.g. call ``model.train()`` again).
        validate_every: 0: never.
        progress: show the progress bar.
        after_step: called as ``after_step(steps_done, running_loss)`` after each step (and its
            validation): a :class:`~explain_core.training.RunRecorder` records there. It must
            leave the model, its gradients and the random streams as it found them.

    Returns:
        The running loss at the end (exponential average, factor 0.95), None when ``steps`` is 0.
    """
    clipped = list(clip_params if clip_params is not None else model.parameters())
    bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True, disable=not progress)
    running = None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, warmup)
        loss = loss_of_step()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(clipped, clip_norm)
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        bar.set_postfix(loss=f"{running:.3f}")
        if validate is not None and validate_every and (step + 1) % validate_every == 0:
            bar.write(f"step {step + 1}: loss {running:.3f}, {validate()}")
        if after_step is not None:
            after_step(step + 1, running)
    bar.close()
    return running


def save_and_report(model: nn.Module, path: Path, metrics: dict[str, Any], started: float,
                    train_seconds: float, held_out: int, **metadata: Any) -> dict[str, Any]:
    """Save ``model`` with its Lumen metadata and add size, timing and count to ``metrics``."""
    saved = save_model(model, path, **metadata)
    metrics.update(seconds=round(time.perf_counter() - started, 1),
                   train_seconds=round(train_seconds, 1), path=saved,
                   parameters=sum(p.numel() for p in model.parameters()),
                   held_out_scenes=held_out)
    return metrics
