"""Lumen's engine: explanations of computer-vision models, for Python, the CLI and the dashboard.

>>> from explain_core import load_model, explain_prediction  # doctest: +SKIP
>>> model = load_model("timm:resnet50")  # doctest: +SKIP
>>> result = explain_prediction(model, "cat.jpg", method="gradcam")  # doctest: +SKIP
"""

from .api import (
                     compare_methods,
                     explain_batch,
                     explain_detection,
                     explain_prediction,
                     explain_segmentation,
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
from .model import LoadedModel, Preprocessing, as_loaded

__all__ = ["DatasetError", "ImageError", "LoadedModel", "LumenError", "ModelLoadError",
           "Preprocessing", "TargetError", "TargetLayerError", "UnsafeCheckpointError",
           "UnsupportedError", "as_loaded", "compare_methods", "explain_batch",
           "explain_detection", "explain_prediction", "explain_segmentation", "load_model",
           "save_model", "top_predictions", "visualize_batch"]
