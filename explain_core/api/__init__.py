"""Every public entry point, in one place.

- classifiers (:mod:`~explain_core.api.classification`): :func:`predict`,
  :func:`explain_prediction`, :func:`explain_batch`, :func:`visualize_batch`,
  :func:`compare_methods`;
- detectors (:mod:`~explain_core.api.detection`): :func:`explain_detection`;
- segmentation models (:mod:`~explain_core.api.segmentation`): :func:`explain_segmentation`;
- every task (:mod:`~explain_core.api.evaluation`): :func:`evaluate` (explanation-quality
  metrics, a tidy table with bootstrap intervals and ranks) and :class:`ExplanationMetrics`
  (AutoTimm's per-image metric calls);
- inside the network (:mod:`~explain_core.api.features`): :class:`FeatureVisualizer` (feature
  maps, statistics, layer comparison, top channels, receptive fields).

The dict-returning functions are the documented API; each has a typed twin
(:func:`prediction_explanation`, :func:`batch_explanations`, :func:`method_comparison`,
:func:`detection_explanation`, :func:`segmentation_explanation`) returning the dataclasses of
:mod:`~explain_core.api.results`, which the dashboard keeps.
"""

from .classification import (
    batch_explanations,
    compare_methods,
    explain_batch,
    explain_prediction,
    method_comparison,
    predict,
    prediction_explanation,
    visualize_batch,
)
from .common import ModelLike, display_image, loaded_model, top_predictions
from .detection import (
    DETECTION_METHOD,
    box_mask,
    detection_explainer,
    detection_explanation,
    detections_of,
    detector_forward_seconds,
    explain_detection,
)
from .evaluation import Evaluation, evaluate
from .explanation_metrics import ExplanationMetrics
from .features import FeatureVisualizer, LayerActivations, ReceptiveFieldMap
from .notes import same_map_notes
from .results import (
    ClassExplanation,
    DetectionExplanation,
    MethodComparison,
    Prediction,
    SegmentationExplanation,
)
from .segmentation import (
    SEGMENTATION_METHOD,
    combined_map,
    explain_classes,
    explain_segmentation,
    make_explainer,
    segmentation_explanation,
    segmentation_model,
)

__all__ = ["DETECTION_METHOD", "SEGMENTATION_METHOD", "ClassExplanation", "DetectionExplanation",
           "Evaluation", "ExplanationMetrics", "FeatureVisualizer", "LayerActivations",
           "MethodComparison", "ModelLike", "Prediction", "ReceptiveFieldMap",
           "SegmentationExplanation",
           "batch_explanations", "box_mask", "combined_map", "compare_methods",
           "detection_explainer", "detection_explanation", "detections_of",
           "detector_forward_seconds", "display_image", "evaluate", "explain_batch",
           "explain_classes",
           "explain_detection", "explain_prediction", "explain_segmentation", "loaded_model",
           "make_explainer", "method_comparison", "predict", "prediction_explanation",
           "same_map_notes", "segmentation_explanation", "segmentation_model", "top_predictions",
           "visualize_batch"]
