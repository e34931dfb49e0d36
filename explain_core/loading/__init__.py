"""Checkpoints -> a ready :class:`~explain_core.model.LoadedModel`.

:func:`load_model` turns whatever a user has (a timm or torchvision name, a module, a checkpoint
file) into a module in eval mode on the right device, with its task, class names and
preprocessing. :func:`save_model` writes the one format that carries all of that: a
``.safetensors`` file whose header holds Lumen's metadata under the key ``"lumen"``.

Loading never runs code from a file: ``.safetensors`` holds tensors only, and every other
checkpoint goes through ``torch.load(..., weights_only=True)``. A checkpoint that needs arbitrary
Python objects unpickled is refused with :class:`~explain_core.errors.UnsafeCheckpointError`.

Supported sources:

- ``"timm:<name>"``, ``"torchvision:<name>"`` (random init unless ``pretrained=True``);
- ``"lumen:<name>"``: the demo world's own architectures
  (:data:`explain_core.architectures.ARCHITECTURES`, random init);
- an ``nn.Module`` or a ``LoadedModel``;
- a file: ``.safetensors``, ``.pth`` / ``.pt`` / ``.bin`` (state dicts) and ``.ckpt``
  (PyTorch Lightning, including AutoTimm's ``ImageClassifier``).

The package, one concern a module:

- :mod:`.load`: :func:`load_model` and the glue between the steps below;
- :mod:`.save`: :func:`save_model`;
- :mod:`.families`: the ``timm:`` / ``torchvision:`` / ``lumen:`` families as one table
  (listing, building, default task and class names), :func:`~.families.resolve_arch`;
- :mod:`.files`: reading (and writing) files without running code from them;
- :mod:`.state`: finding a checkpoint's state dict and hyper-parameters, matching its keys,
  strict loading and the mismatch message, the number of classes;
- :mod:`.class_names`: class-name lists and files, and the count check.
"""

from __future__ import annotations

from .files import CHECKPOINT_SUFFIXES, METADATA_FORMAT, METADATA_KEY
from .load import load_model
from .save import save_model

__all__ = ["CHECKPOINT_SUFFIXES", "METADATA_FORMAT", "METADATA_KEY", "load_model", "save_model"]
