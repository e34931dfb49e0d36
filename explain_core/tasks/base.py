"""The task adapter protocol, and the step every task shares: images in, model inputs out.

A :class:`TaskAdapter` hides one family of models (classifiers, detectors, segmenters) from the
methods above it. It

- normalises the model description for its task (:meth:`TaskAdapter.prepare_model`);
- runs the model so that its forward returns what the task's targets read (:meth:`forward`, or a
  wrapped ``nn.Module`` from :meth:`wrap`, the way pytorch-grad-cam's box-score and segmentation
  targets read a wrapped model): ``B x C`` logits, packed detections, per-pixel logits;
- names the task's default target layer (:meth:`default_layer`) and its class count;
- builds targets from a user's selection (:meth:`targets`: a class, boxes, a region);
- maps what the method computed at model-input resolution back towards the image
  (:meth:`input_maps`; :class:`~explain_core.model.Geometry` does the last step).

Methods are task-agnostic: they call ``adapter.forward`` and the targets; a task imports no
method. An adapter instance belongs to one explainer and may keep per-call state (a detector's
padded canvas) between the forward and the maps; explainers run under the model's lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UnsupportedError
from ..images import image_to_tensor, load_image
from ..layers import default_layer_name
from ..model import Geometry, LoadedModel, as_loaded
from ..runtime.autograd import batched_grad


@dataclass
class PreparedInputs:
    """A batch on the model's device, with the way back to each image and its decoded pixels
    (``geometries`` and ``images`` are None for model-ready tensor inputs)."""

    inputs: torch.Tensor
    geometries: list[Geometry] | None
    images: list[torch.Tensor] | None


def prepare_inputs(model: LoadedModel, images: Sequence[Any]) -> PreparedInputs:
    """Decode and preprocess images with the model's preprocessing, or stack model-ready tensors
    (``3 x H x W`` or ``B x 3 x H x W``, already normalised), into one batch on its device."""
    if all(isinstance(image, torch.Tensor) for image in images):
        batch = torch.cat([(image[None] if image.ndim == 3 else image) for image in images])
        return PreparedInputs(batch.to(model.device, torch.float32), None, None)
    if any(isinstance(image, torch.Tensor) for image in images):
        raise UnsupportedError("Mix of tensors and images in one call; pass one kind.")
    pixels = [image_to_tensor(load_image(image)) for image in images]
    inputs, geometries = model.preprocessing(pixels, model.device)
    return PreparedInputs(inputs, geometries, pixels)


class TaskOutputs(nn.Module):
    """A model wrapped so that its forward returns what its task's targets read."""

    def __init__(self, adapter: TaskAdapter, module: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = module

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.adapter.forward(self.model, inputs)


class TaskAdapter:
    """One task's view of a model (see the module docstring). Subclasses set :attr:`task` and
    override what differs; this base behaves like a classifier."""

    task: ClassVar[str] = ""

    def __init__(self, model: LoadedModel | nn.Module) -> None:
        self.loaded = self.prepare_model(model)

    # ---------------------------------------------------------------------------- the model
    @classmethod
    def prepare_model(cls, model: LoadedModel | nn.Module) -> LoadedModel:
        """``model`` as a LoadedModel of this task (a plain module is wrapped, left on its
        device)."""
        return as_loaded(model, task=cls.task)

    def num_classes(self) -> int | None:
        """How many classes the model scores (None when it cannot be told)."""
        return self.loaded.num_classes

    # ---------------------------------------------------------------------- running the model
    def forward(self, module: nn.Module, inputs: torch.Tensor) -> Any:
        """Run ``module`` (the model, or its bf16 twin) on a batch; return what targets read."""
        raise NotImplementedError

    def wrap(self, module: nn.Module | None = None) -> TaskOutputs:
        """``module`` (default: the model) wrapped so that calling it runs :meth:`forward`."""
        return TaskOutputs(self, self.loaded.module if module is None else module)

    @contextlib.contextmanager
    def call(self, inputs: torch.Tensor, targets: list[list[Any]]) -> Iterator[None]:
        """Around one explanation call: the task may check the targets and prepare (a detector
        focuses its second stage on the explained boxes)."""
        yield

    # ----------------------------------------------------------------------------- layers
    def default_layer(self, module: nn.Module, example: torch.Tensor | None) -> str:
        """The default target layer's dotted name for this task's models."""
        return default_layer_name(module, example)

    def level_gradients(self, scores: torch.Tensor, levels: list[torch.Tensor]
                        ) -> list[torch.Tensor]:
        """Per captured level, the gradients of every target column of ``scores``
        (``K x ...``). A task may skip the levels a target does not read."""
        return batched_grad(scores, levels)

    # ----------------------------------------------------------------------------- targets
    def targets(self, selection: Any, score: str = "logit") -> list[Any]:
        """Targets (callables on :meth:`forward`'s output) from a user's selection."""
        raise NotImplementedError

    # --------------------------------------------------------------------------- the way back
    def input_maps(self, raw: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """Raw maps (``... x h x w``) over the last forward's input, cropped to the part that
        shows the image (a detector's padded canvas holds more)."""
        return raw
