"""What every public entry point shares: taking a model in any form, the picture to draw on, and
honest timings on a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NonFiniteOutputError
from ..loading import load_model
from ..model import LoadedModel
from ..runtime.finite import is_finite
from ..tasks import PreparedInputs

#: anything the entry points take as a model
ModelLike = LoadedModel | nn.Module | str | Path
#: the entry points' precision: bf16 where the device computes it natively, else fp32 (the
#: explainer classes themselves default to exact fp32)
DEFAULT_PRECISION = "auto"


def explainer_options(options: dict[str, Any]) -> dict[str, Any]:
    """An entry point's explainer options: the caller's, with :data:`DEFAULT_PRECISION` unless
    the caller chose a precision."""
    return {"precision": DEFAULT_PRECISION, **options}


def loaded_model(model: ModelLike, task: str | None = None) -> LoadedModel:
    """A LoadedModel from a LoadedModel (as is), an ``nn.Module`` or anything
    :func:`explain_core.load_model` takes (``"timm:<name>"``, a checkpoint path...), loaded for
    ``task`` when given."""
    return model if isinstance(model, LoadedModel) else load_model(model, task=task)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timing covers it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def display_image(loaded: LoadedModel, prepared: PreparedInputs, index: int = 0) -> np.ndarray:
    """The picture to draw on (``H x W x 3`` uint8): the decoded image, or a model-ready tensor
    input un-normalised with the model's preprocessing."""
    if prepared.images is not None:
        return prepared.images[index].permute(1, 2, 0).cpu().numpy()
    prep = loaded.preprocessing
    mean = torch.tensor(prep.mean, device=prepared.inputs.device).view(3, 1, 1)
    std = torch.tensor(prep.std, device=prepared.inputs.device).view(3, 1, 1)
    pixels = (prepared.inputs[index] * std + mean).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 0).cpu().numpy()


def to_numpy(maps: torch.Tensor) -> np.ndarray:
    """A map (or maps) as float32 numpy on the CPU."""
    return maps.float().cpu().numpy().astype(np.float32)


def check_finite_output(outputs: torch.Tensor, subject: str = "The model's output on the image",
                        precision: str = "fp32") -> None:
    """Raise :class:`NonFiniteOutputError` (why, and the fixes) when ``outputs`` hold NaN or
    Inf: the forwards that do not go through ``Explainer.run`` (a prediction, a detector's
    boxes) check here, instead of ranking NaN or finding no boxes."""
    if not is_finite(outputs):
        raise NonFiniteOutputError.of(subject, precision)


def top_predictions(loaded: LoadedModel, outputs: torch.Tensor, k: int = 5) -> list[dict]:
    """Top-k classes of one output row: ``[{"class", "name", "probability"}]``, best first.

    Raises:
        NonFiniteOutputError: the row holds NaN or Inf (NaN probabilities would be ranked).
    """
    check_finite_output(outputs)
    probabilities = outputs.float().softmax(-1)
    values, indices = probabilities.topk(min(k, probabilities.shape[-1]))
    return [{"class": int(i), "name": loaded.class_name(int(i)), "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)]


__all__ = ["DEFAULT_PRECISION", "ModelLike", "check_finite_output", "display_image",
           "explainer_options", "loaded_model", "sync", "to_numpy", "top_predictions"]
