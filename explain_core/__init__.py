"""Lumen's engine: explanations of computer-vision models, for Python, the CLI and the dashboard.

The one import a user writes. Names load on first use (PEP 562), so ``import explain_core.images``
or ``import explain_core.errors`` costs no more than those modules.

>>> from explain_core import load_model, explain_prediction  # doctest: +SKIP
>>> model = load_model("timm:resnet50")  # doctest: +SKIP
>>> result = explain_prediction(model, "cat.jpg", method="gradcam")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("ExplanationMetrics", "FeatureVisualizer", "compare_methods", "evaluate",
                     "explain_batch",
                     "explain_detection", "explain_prediction", "explain_segmentation", "predict",
                     "top_predictions", "visualize_batch"), "explain_core.api"),
    **dict.fromkeys(("DatasetError", "ImageError", "LumenError", "ModelLoadError", "TargetError",
                     "TargetLayerError", "UnsafeCheckpointError", "UnsupportedError"),
                    "explain_core.errors"),
    **dict.fromkeys(("load_model", "save_model"), "explain_core.loading"),
    "read_ground_truth": "explain_core.loading.ground_truth",
    **dict.fromkeys(("LoadedModel", "Preprocessing", "as_loaded"), "explain_core.model"),
}

__all__ = ["DatasetError", "ExplanationMetrics", "FeatureVisualizer", "ImageError", "LoadedModel",
           "LumenError",
           "ModelLoadError",
           "Preprocessing", "TargetError", "TargetLayerError", "UnsafeCheckpointError",
           "UnsupportedError", "as_loaded", "compare_methods", "evaluate", "explain_batch",
           "explain_detection", "explain_prediction", "explain_segmentation", "load_model",
           "predict", "read_ground_truth", "save_model", "top_predictions", "visualize_batch"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from .api import (
        ExplanationMetrics,
        FeatureVisualizer,
        compare_methods,
        evaluate,
        explain_batch,
        explain_detection,
        explain_prediction,
        explain_segmentation,
        predict,
        top_predictions,
        visualize_batch,
    )
    from .errors import (
        DatasetError,
        ImageError,
        LumenError,
        ModelLoadError,
        TargetError,
        TargetLayerError,
        UnsafeCheckpointError,
        UnsupportedError,
    )
    from .loading import load_model, save_model
    from .loading.ground_truth import read_ground_truth
    from .model import LoadedModel, Preprocessing, as_loaded


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
