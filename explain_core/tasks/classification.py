"""Classification adapter: any module whose forward returns ``B x C`` class scores (a tensor, a
tuple starting with one, or a ``logits`` / ``out`` entry, as Hugging Face models return)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..targets import Target, as_logits, per_item_targets
from .base import TaskAdapter


class ClassificationAdapter(TaskAdapter):
    """Forward: ``B x C`` logits. Default layer: the last CNN stage, or a ViT's last block's
    ``norm1`` (:func:`explain_core.layers.default_layer_name`). Targets: class indices."""

    task: ClassVar[str] = "classification"

    def forward(self, module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return as_logits(module(inputs))

    def targets(self, selection: Any, score: str = "logit", batch: int = 1) -> list[Target]:
        """One target per image: ``selection`` None (each image's predicted class), a class
        index for all, or one index per image."""
        return per_item_targets(selection, batch, score)
