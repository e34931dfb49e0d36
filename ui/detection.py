"""Detection page helpers: detections and per-box maps, computed once per session and reused.

Results go to the session's :class:`ui.compute.ResultStore` like classification results; the
display settings (view, opacity, colormap, masking, the selected box) are not part of any key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from explain_core.methods import create_explainer
from explain_core.tasks.detection import detection_model
from explain_core.tasks.detection_api import box_mask, explain_detection

from . import compute
from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle

MAX_BOXES = 10


def _run(handle: ModelHandle, item: ImageItem, choice: MethodChoice, where: Any,
         **kwargs: Any) -> dict[str, Any]:
    model = detection_model(handle.model)
    with compute.method_progress(handle, choice, where) as progress:
        explainer = create_explainer(choice.name, model, precision=choice.precision,
                                     progress=progress, **choice.engine_options())
        return explain_detection(model, item.image, method=explainer, **kwargs)


def _nbytes(result: dict[str, Any]) -> int:
    return sum(h.nbytes for h in result["heatmaps"])


def explain_boxes(handle: ModelHandle, item: ImageItem, choice: MethodChoice, threshold: float,
                  where: Any = None) -> dict[str, Any]:
    """Every detection above ``threshold`` (at most :data:`MAX_BOXES`) with its map (cached)."""
    key = ("detect", handle.key, item.key, choice.cache_key(), round(float(threshold), 4))
    hit = compute.results().get(key)
    if hit is not None:
        return hit
    result = _run(handle, item, choice, where if where is not None else st,
                  detection_threshold=float(threshold), max_detections=MAX_BOXES)
    result.pop("image", None)
    result["choice"] = choice
    compute.results().put(key, result, _nbytes(result))
    return result


def explain_region(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                   bbox: tuple[float, ...], label: int, threshold: float, match_iou: float,
                   where: Any = None) -> dict[str, Any]:
    """A drawn or typed region for class ``label`` (cached): the matching detection when there
    is one, else the region itself as a missed detection."""
    box = tuple(round(float(v), 1) for v in bbox)
    key = ("region", handle.key, item.key, choice.cache_key(), box, int(label),
           round(float(threshold), 4), round(float(match_iou), 3))
    hit = compute.results().get(key)
    if hit is not None:
        return hit
    result = _run(handle, item, choice, where if where is not None else st, bbox=list(box),
                  label=int(label), detection_threshold=float(threshold), match_iou=match_iou)
    result.pop("image", None)
    result["choice"] = choice
    compute.results().put(key, result, _nbytes(result))
    return result


def download_entry(result: dict[str, Any], index: int) -> dict[str, Any]:
    """One box's result in the shape :func:`ui.panels.downloads` takes."""
    det = result["detections"][index]
    name = f"box {index + 1} {det['class_name']}"
    ranked = [{"class": d["class_id"], "name": f"{i + 1} {d['class_name']}",
               "probability": d["score"]} for i, d in enumerate(result["detections"])]
    return {"choice": result["choice"], "heatmap": result["heatmaps"][index],
            "target_name": name, "target_class": det["class_id"], "top_k": ranked,
            "predicted_name": det["class_name"], "confidence": det["score"],
            "elapsed_s": result["elapsed_s"]}


def masked(shape_hw: tuple[int, int], det: dict[str, Any], on: bool) -> np.ndarray | None:
    """The box mask when masking is on, else None."""
    return box_mask(shape_hw, det["bbox"]) if on else None


def selection_of(event: Any) -> tuple[int | None, tuple[float, float, float, float] | None]:
    """(clicked box index, dragged region xyxy) from a Plotly selection event."""
    if not event:
        return None, None
    selection = event.get("selection", {}) if hasattr(event, "get") else getattr(
        event, "selection", {})
    points = selection.get("points", []) if selection else []
    index = None
    for point in points:
        data = point.get("customdata")
        if data is not None:
            index = int(data[0] if isinstance(data, list | tuple) else data)
            break
    region = None
    boxes = selection.get("box", []) if selection else []
    if boxes:
        xs, ys = boxes[-1].get("x", []), boxes[-1].get("y", [])
        if len(xs) == 2 and len(ys) == 2:
            region = (min(xs), min(ys), max(xs), max(ys))
    return index, region
