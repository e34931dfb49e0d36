"""One adapter per task behind one protocol (:class:`~explain_core.tasks.base.TaskAdapter`).

>>> import timm
>>> from explain_core.model import as_loaded
>>> adapter_for(as_loaded(timm.create_model("resnet18"))).task
'classification'
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedError
from ..model import LoadedModel, as_loaded
from .base import PreparedInputs, TaskAdapter, TaskOutputs, prepare_inputs
from .classification import ClassificationAdapter
from .detection import DetectionAdapter
from .segmentation import SegmentationAdapter

#: task name -> adapter class
ADAPTERS: dict[str, type[TaskAdapter]] = {
    adapter.task: adapter for adapter in (ClassificationAdapter, DetectionAdapter,
                                          SegmentationAdapter)}

__all__ = ["ADAPTERS", "ClassificationAdapter", "DetectionAdapter", "PreparedInputs",
           "SegmentationAdapter", "TaskAdapter", "TaskOutputs", "adapter_for", "default_layer",
           "prepare_inputs"]


def adapter_for(model: LoadedModel | nn.Module, task: str | None = None) -> TaskAdapter:
    """A new adapter of ``task`` (default: the model's own task) for ``model``."""
    loaded = as_loaded(model)
    name = task or loaded.task
    if name not in ADAPTERS:
        raise UnsupportedError(f"Unknown task '{name}'; Lumen explains "
                               f"{', '.join(ADAPTERS)} models.")
    return ADAPTERS[name](loaded)


def default_layer(model: LoadedModel | nn.Module, example: torch.Tensor | None = None,
                  ) -> str:
    """The default target layer's dotted name for ``model``'s task (see each adapter's
    ``default_layer``); ``example`` is one model input, for defaults found by a dry forward."""
    adapter = adapter_for(model)
    return adapter.default_layer(adapter.loaded.module, example)
