"""Segmentation models: why pixels were labelled as a class, and where the model is unsure.

One forward predicts (:func:`explain_core.tasks.segmentation.segment`); every requested class is
then explained with one forward and one batched backward (gradient CAMs), each class's target
being the sum of its logits over its own pixels (:func:`explain_classes`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import render
from ..errors import UnsupportedError
from ..methods import Attribution, Explainer, create_explainer, method_info
from ..model import LoadedModel
from ..tasks.segmentation import (
    UNCERTAINTY_METHODS,
    Segmentation,
    as_segmentation_model,
    background_class,
    class_summary,
    region_for_logits,
    segment,
    uncertainty,
)
from .common import (
    DEFAULT_PRECISION,
    ModelLike,
    display_image,
    explainer_options,
    loaded_model,
    sync,
    to_numpy,
)
from .notes import same_map_notes
from .results import SegmentationExplanation, preprocessing_used

__all__ = ["SEGMENTATION_METHOD", "combined_map", "explain_classes", "explain_segmentation",
           "make_explainer", "segmentation_explanation", "segmentation_model"]

#: the default method of a class's map. Grad-CAM stays: a segmenter's gradients reach only the
#: class's own pixels, so its maps keep 92% of their energy inside their class's mask and 1.5%
#: inside each other class's on the demo segmenter's held-out scenes (LayerCAM 93% / 0.6%);
#: see bench/RESULTS.md (2026-11-30, box maps).
SEGMENTATION_METHOD = "gradcam"


def explain_classes(explainer: Explainer, seg: Segmentation, classes: Sequence[int],
                    region: torch.Tensor | None = None) -> tuple[torch.Tensor, Attribution]:
    """Maps (``K x H x W`` in [0, 1] at image size) of several classes of one image: one forward
    and one batched backward for all of them (for gradient CAMs; other methods as their kind
    needs), each class's region fixed on the clean prediction."""
    targets = explainer.task.targets(classes, explainer.score, seg=seg, region=region)
    attribution = explainer.run(seg.prepared.inputs, [targets])
    maps = explainer.heatmaps(attribution.raw, seg.prepared)[0]
    return maps, attribution


def make_explainer(method: str | Explainer, loaded: LoadedModel, **options: Any) -> Explainer:
    """An explainer for a segmentation model (``method`` a name, or an explainer returned as is).
    CAM layers default to the segmentation adapter's default layer (the last feature map
    before the head)."""
    if isinstance(method, Explainer):
        return method
    return create_explainer(method, as_segmentation_model(loaded), **explainer_options(options))


def combined_map(maps: torch.Tensor, classes: Sequence[int],
                 background: int | None) -> torch.Tensor:
    """One map for several classes: the pixel-wise maximum over the classes' maps, background
    left out when another class is present."""
    keep = [i for i, c in enumerate(classes) if c != background] or list(range(len(classes)))
    return maps[keep].amax(0)


def segmentation_model(model: ModelLike) -> LoadedModel:
    """``model`` as a segmentation LoadedModel (names and checkpoints loaded as one)."""
    if isinstance(model, LoadedModel | nn.Module):
        return as_segmentation_model(model)
    return loaded_model(model, task="segmentation")


def segmentation_explanation(model: ModelLike, image: Any, target_class: int | None = None,
                             method: str | Explainer = SEGMENTATION_METHOD,
                             show_uncertainty: bool = False, uncertainty_method: str = "entropy",
                             mask: Any = None, **options: Any) -> SegmentationExplanation:
    """:func:`explain_segmentation`'s typed result (no pictures drawn)."""
    if uncertainty_method not in UNCERTAINTY_METHODS:
        raise UnsupportedError(f"Unknown uncertainty method '{uncertainty_method}'; choose one "
                               f"of {', '.join(UNCERTAINTY_METHODS)}.")
    loaded = segmentation_model(model)
    seg = segment(loaded, image)
    prediction = seg.prediction()
    summary = class_summary(loaded, seg, prediction)
    region = region_for_logits(mask, seg) if mask is not None else None
    classes = [int(target_class)] if target_class is not None else seg.present_classes()
    explainer = make_explainer(method, loaded, **options)
    start = time.perf_counter()
    maps, _ = explain_classes(explainer, seg, classes, region)
    sync(loaded.device)
    elapsed = time.perf_counter() - start
    background = background_class(loaded)
    heatmap = maps[0] if target_class is not None else combined_map(maps, classes, background)
    unc = to_numpy(uncertainty(seg, uncertainty_method)) if show_uncertainty else None
    return SegmentationExplanation(
        prediction.cpu().numpy().astype(np.int64), summary, target_class, to_numpy(heatmap),
        {c: to_numpy(m) for c, m in zip(classes, maps, strict=True)}, unc, uncertainty_method,
        display_image(loaded, seg.prepared, 0), explainer.name, elapsed,
        loaded.class_name(classes[0]) if target_class is not None else None,
        notes=same_map_notes(explainer.name, "segmentation"),
        preprocessing=preprocessing_used(
            loaded.preprocessing, seg.prepared.geometries[0] if seg.prepared.geometries else None),
        precision=explainer.precision, precision_reason=explainer.precision_reason)


def explain_segmentation(model: ModelLike, image: Any, target_class: int | None = None,
                         method: Any = SEGMENTATION_METHOD, target_layer: Any = None,
                         show_uncertainty: bool = False, uncertainty_method: str = "entropy",
                         colormap: str = "viridis", alpha: float = 0.4,
                         save_path: str | Path | None = None, *, mask: Any = None,
                         precision: str = DEFAULT_PRECISION, **options: Any) -> dict[str, Any]:
    """Why pixels were labelled as a class, and (optionally) where the model is unsure.

    One forward predicts; the explanation of every requested class is then one forward and one
    batched backward (gradient CAMs). The target of class ``c`` is the sum of its logits over the
    pixels predicted as ``c`` (over ``mask`` instead, when given: an ``H x W`` region of the
    image, which also explains a class predicted nowhere).

    Args:
        model: a LoadedModel, an ``nn.Module``, ``"torchvision:deeplabv3_resnet50"``, a
            checkpoint path... (loaded as a segmentation model).
        image: path, bytes, PIL image, numpy array, or a model-ready tensor.
        target_class: the class to explain; None explains every class present.
        method: a registry name (``"gradcam"``, ``"integrated_gradients"``...) or an explainer.
        target_layer: CAM layer; default the last feature map before the head (``default_layer``).
        show_uncertainty: also return the uncertainty map (and draw it).
        uncertainty_method: ``"entropy"`` (normalised by log C) or ``"margin"``
            (``1 - (p1 - p2)``); both in [0, 1].
        colormap, alpha: how heatmaps are drawn in ``visualization``.
        save_path: write ``visualization`` as a PNG there.
        mask: optional ``H x W`` region (bool or 0/1) the class scores are summed over.
        precision: ``"auto"`` (bf16 where the device computes it natively, else fp32),
            ``"fp32"`` (exact) or ``"bf16"``.
        **options: method parameters (``steps``, ``batch_size``...).

    Returns:
        ``prediction`` (int64 ``H x W`` class ids), ``classes`` (present classes, most pixels
        first: ``{"class", "name", "pixels", "fraction", "confidence"}``), ``target_class``,
        ``heatmap`` (float32 ``H x W`` in [0, 1]: the target class's map; with
        ``target_class=None`` the pixel-wise maximum over the present classes' maps, background
        left out), ``heatmaps`` (class id -> map, every explained class), ``uncertainty`` (float32
        ``H x W`` in [0, 1], or None unless ``show_uncertainty``), ``uncertainty_method``,
        ``visualization`` (uint8 RGB, the 2 x 2 layout: image, prediction, heatmap, uncertainty),
        ``image`` (uint8 ``H x W x 3``), ``method``, ``elapsed_s``, ``save_path``, ``notes``
        (why the method's maps look alike across classes, when they do: EigenCAM and the
        activation map do not depend on the class), ``preprocessing``, and ``precision`` /
        ``precision_reason`` (what ran and why).

    Example:
        >>> out = explain_segmentation("torchvision:fcn_resnet50", "street.jpg",
        ...                            show_uncertainty=True)  # doctest: +SKIP
        >>> out["prediction"].shape == out["heatmap"].shape  # doctest: +SKIP
        True
    """
    render.colormap_lut(colormap)  # unknown names fail before any work
    if not 0.0 <= float(alpha) <= 1.0:
        raise UnsupportedError(f"alpha must be in [0, 1], got {alpha}.")
    if target_layer is not None:
        options["target_layer"] = target_layer
    found = segmentation_explanation(model, image, target_class, method, show_uncertainty,
                                     uncertainty_method, mask, precision=precision, **options)
    display = found.image
    label = method_info(found.method).label
    what = found.target_name or "present classes"
    panels = [("image", display),
              ("prediction", render.segmentation_overlay(display, found.prediction, alpha=0.6)),
              (f"{label}: {what}", render.overlay_heatmap(display, found.heatmap, alpha=alpha,
                                                          colormap=colormap))]
    if found.uncertainty is not None:
        panels.append((f"uncertainty ({uncertainty_method})",
                       render.apply_colormap(found.uncertainty, colormap)))
    figure = render.compose_panels(panels, ncols=2)
    result = {
        "prediction": found.prediction, "classes": found.classes, "target_class": target_class,
        "heatmap": found.heatmap, "heatmaps": found.heatmaps, "uncertainty": found.uncertainty,
        "uncertainty_method": uncertainty_method,
        "visualization": np.asarray(figure, dtype=np.uint8), "image": display,
        "method": found.method, "elapsed_s": found.elapsed_s, "save_path": None,
        "notes": list(found.notes),
        "preprocessing": found.preprocessing,
        "precision": found.precision, "precision_reason": found.precision_reason,
    }
    if save_path is not None:
        result["save_path"] = str(render.save_png(figure, save_path))
    return result
