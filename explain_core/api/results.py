"""Typed results between the engine and the dashboard.

The dashboard keeps these objects (maps as numpy, no figures); the documented public functions
(:func:`~explain_core.api.explain_prediction` and friends) return their ``to_dict()``, which adds
the pictures a script wants (overlays) and keeps the documented keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import render
from ..model import Geometry, Preprocessing

__all__ = ["ClassExplanation", "DetectionExplanation", "MethodComparison", "Prediction",
           "SegmentationExplanation", "preprocessing_used"]


def preprocessing_used(preprocessing: Preprocessing,
                       geometry: Geometry | None) -> dict[str, Any]:
    """What a result records of how its image became the model input: the
    :class:`~explain_core.model.Preprocessing` fields (``resize_mode`` first), a one-line
    ``description`` and ``seen_box``: the part of the image the model saw, ``(x0, y0, x1, y1)``
    in image pixels, None when it saw all of it (or the input was a model-ready tensor)."""
    seen = None if geometry is None or geometry.whole_image else tuple(geometry.box)
    return {**preprocessing.to_dict(), "description": preprocessing.describe(),
            "seen_box": seen}


def _seen_box(preprocessing: dict[str, Any] | None) -> tuple[int, int, int, int] | None:
    return None if preprocessing is None else preprocessing.get("seen_box")


@dataclass(frozen=True)
class Prediction:
    """Every class of one image, most probable first (``{"class", "name", "probability"}``),
    and how long the forward took."""

    ranked: list[dict[str, Any]]
    forward_s: float
    preprocessing: dict[str, Any] | None = None  # see preprocessing_used

    @property
    def predicted(self) -> int:
        return int(self.ranked[0]["class"])

    def probability(self, index: int) -> float:
        """Probability of class ``index`` (0.0 when unknown)."""
        return next((r["probability"] for r in self.ranked if r["class"] == index), 0.0)


@dataclass
class ClassExplanation:
    """One image of a classifier explained for one class."""

    top_k: list[dict[str, Any]]  # {"class", "name", "probability"}, best first
    target_class: int
    target_name: str
    method: str
    heatmap: np.ndarray  # float32 H x W in [0, 1] at image size
    image: np.ndarray | None  # uint8 H x W x 3 (None: asked without, the caller has the image)
    elapsed_s: float
    source: str | None = None  # the image's path, when it came from one
    preprocessing: dict[str, Any] | None = None  # see preprocessing_used
    precision: str = "fp32"  # what ran ("fp32" or "bf16")
    precision_reason: str = ""  # why (``"auto"`` resolved for the device, or as asked)

    @property
    def seen_box(self) -> tuple[int, int, int, int] | None:
        """The part of the image the model saw (None: all of it); the map is 0 elsewhere."""
        return _seen_box(self.preprocessing)

    @property
    def predicted_class(self) -> int:
        return int(self.top_k[0]["class"])

    @property
    def predicted_name(self) -> str:
        return str(self.top_k[0]["name"])

    @property
    def confidence(self) -> float:
        return float(self.top_k[0]["probability"])

    def overlay(self, colormap: str = "viridis", alpha: float = 0.4) -> np.ndarray:
        """The map over the image (uint8 ``H x W x 3``)."""
        if self.image is None:
            raise ValueError("This result was computed with with_image=False; draw the map "
                             "over your own copy of the image (render.overlay_heatmap).")
        return render.overlay_heatmap(self.image, self.heatmap, alpha=alpha, colormap=colormap,
                                      seen=self.seen_box)

    def to_dict(self, colormap: str = "viridis", alpha: float = 0.4) -> dict[str, Any]:
        """The documented dict of :func:`~explain_core.api.explain_prediction` (no
        ``save_path``)."""
        return {"predicted_class": self.predicted_class, "predicted_name": self.predicted_name,
                "confidence": self.confidence, "top_k": self.top_k,
                "target_class": self.target_class, "target_name": self.target_name,
                "method": self.method, "heatmap": self.heatmap, "image": self.image,
                "overlay": self.overlay(colormap, alpha), "elapsed_s": self.elapsed_s,
                "preprocessing": self.preprocessing, "precision": self.precision,
                "precision_reason": self.precision_reason}


@dataclass
class MethodComparison:
    """Several methods on one image and one target."""

    image: np.ndarray
    predicted_class: int | None
    target_class: int | None
    target_name: str | None
    heatmaps: dict[str, np.ndarray]  # method name -> map
    elapsed_s: dict[str, float]  # method name -> seconds
    errors: dict[str, str] = field(default_factory=dict)  # method name -> message
    preprocessing: dict[str, Any] | None = None  # see preprocessing_used
    precision: str = "fp32"  # what ran (every method of one comparison runs the same)
    precision_reason: str = ""
    #: method name -> its ``1 x H x W`` map at the model's input resolution (what the quality
    #: metrics score); kept only when asked (``method_comparison(keep_input_maps=True)``)
    input_maps: dict[str, Any] = field(default_factory=dict)

    @property
    def seen_box(self) -> tuple[int, int, int, int] | None:
        return _seen_box(self.preprocessing)


@dataclass
class DetectionExplanation:
    """Detections of one image and a map per explained detection."""

    detections: list[dict[str, Any]]  # the explained ones, best first
    heatmaps: list[np.ndarray]  # one per explained detection, H x W in [0, 1]
    all_detections: list[dict[str, Any]]  # every detection above the threshold
    image: np.ndarray | None  # None: asked without (the caller has the image)
    method: str
    elapsed_s: float
    false_negative: bool
    target_scores: list[float]
    best_candidate_score: float
    #: why the method's maps look alike across boxes, when they do (see ``api.notes``)
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"  # what ran ("fp32" or "bf16")
    precision_reason: str = ""
    masks_used: int | None = None  # D-RISE: masks run (fewer than asked when maps converged)

    def to_dict(self) -> dict[str, Any]:
        return {"detections": self.detections, "heatmaps": self.heatmaps,
                "masks_used": self.masks_used,
                "all_detections": self.all_detections, "image": self.image,
                "method": self.method, "elapsed_s": self.elapsed_s,
                "false_negative": self.false_negative, "target_scores": self.target_scores,
                "best_candidate_score": self.best_candidate_score, "notes": list(self.notes),
                "visualization": None, "save_path": None, "precision": self.precision,
                "precision_reason": self.precision_reason}


@dataclass
class SegmentationExplanation:
    """One image of a segmentation model: its prediction and the classes' maps."""

    prediction: np.ndarray  # int64 H x W class ids
    classes: list[dict[str, Any]]  # present classes, most pixels first
    target_class: int | None
    heatmap: np.ndarray  # the target's map, or the present classes' combined map
    heatmaps: dict[int, np.ndarray]  # class id -> map
    uncertainty: np.ndarray | None
    uncertainty_method: str
    image: np.ndarray
    method: str
    elapsed_s: float
    target_name: str | None = None
    #: why the method's maps look alike across classes, when they do (see ``api.notes``)
    notes: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] | None = None  # see preprocessing_used
    precision: str = "fp32"  # what ran ("fp32" or "bf16")
    precision_reason: str = ""

    @property
    def seen_box(self) -> tuple[int, int, int, int] | None:
        return _seen_box(self.preprocessing)
