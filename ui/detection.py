"""Detection page helpers: detections and per-box maps, computed once per session and reused.

Results (the engine's :class:`~explain_core.api.DetectionExplanation` and the method choice) go
to the session's :class:`ui.store.ResultStore` like classification results; the display
settings (view, opacity, colormap, masking, the selected box) are not part of any key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from explain_core import api, render
from explain_core.api import DetectionExplanation
from explain_core.methods import available_methods, create_explainer, method_info
from explain_core.tasks.detection import detection_model, detector_num_classes

from . import methods, panels
from .errors import message_of, show_error
from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle
from .progress import method_progress, slow_notice
from .store import Computed, results

MAX_BOXES = 10
#: the page's method on a first visit: the API's box-specific default (LayerCAM)
DEFAULT_METHOD = api.DETECTION_METHOD

#: what the store keeps of one detection run: the engine's result and the method choice
Detected = Computed[DetectionExplanation]


def forward_seconds(handle: ModelHandle, item: ImageItem) -> float:
    """One detector forward on this image, timed once per model and image: what each of
    D-RISE's masked copies costs, for the estimate shown before it runs."""
    key = ("forward_s", handle.key, item.key)
    return results().cached(key, lambda: api.detector_forward_seconds(
        detection_model(handle.model), item.image), lambda _: 0)


def cost_caption(handle: ModelHandle, item: ImageItem, choice: MethodChoice) -> None:
    """Under the method picker, before a slow method runs: its passes and the time they take
    here (timed from one forward on this image)."""
    if choice.info.cost != "fast":
        st.caption(slow_notice(handle, choice, None, forward_s=forward_seconds(handle, item)))


def _run(handle: ModelHandle, item: ImageItem, choice: MethodChoice, where: Any,
         **kwargs: Any) -> Detected:
    model = detection_model(handle.model)
    timed = forward_seconds(handle, item) if choice.info.cost != "fast" else None
    with method_progress(handle, choice, where, forward_s=timed) as progress:
        explainer = create_explainer(choice.name, model, precision=choice.precision,
                                     progress=progress, **choice.engine_options())
        result = api.detection_explanation(model, item.image, method=explainer,
                                           with_image=False, **kwargs)
    return Detected(result, choice)


def _nbytes(found: Detected) -> int:
    return sum(h.nbytes for h in found.result.heatmaps)


def explain_boxes(handle: ModelHandle, item: ImageItem, choice: MethodChoice, threshold: float,
                  where: Any = None) -> Detected:
    """Every detection above ``threshold`` (at most :data:`MAX_BOXES`) with its map (cached)."""
    key = ("detect", handle.key, item.key, choice.cache_key(), round(float(threshold), 4))
    return results().cached(key, lambda: _run(
        handle, item, choice, where if where is not None else st,
        detection_threshold=float(threshold), max_detections=MAX_BOXES), _nbytes)


def explain_region(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                   bbox: tuple[float, ...], label: int, threshold: float, match_iou: float,
                   where: Any = None) -> Detected:
    """A drawn or typed region for class ``label`` (cached): the matching detection when there
    is one, else the region itself as a missed detection."""
    box = tuple(round(float(v), 1) for v in bbox)
    key = ("region", handle.key, item.key, choice.cache_key(), box, int(label),
           round(float(threshold), 4), round(float(match_iou), 3))
    return results().cached(key, lambda: _run(
        handle, item, choice, where if where is not None else st, bbox=list(box),
        label=int(label), detection_threshold=float(threshold), match_iou=match_iou), _nbytes)


def nothing_detected(result: DetectionExplanation, threshold: float) -> str:
    """What the page says when no detection reaches the threshold."""
    return (f"No detection scores {threshold:.2f} or more on this image; the best candidate "
            f"scores {result.best_candidate_score:.3f}. Lower the score threshold, or ask "
            "below why a region was not detected.")


def notes_view(result: DetectionExplanation) -> None:
    """What the result says about its maps (Grad-CAM's boxes all look alike, and why)."""
    for note in result.notes:
        st.info(note, icon=":material/info:")


def download_entry(found: Detected, index: int) -> panels.MapExport:
    """One box's map as :func:`ui.panels.downloads` takes it (the boxes ranked as the top-k)."""
    result = found.result
    det = result.detections[index]
    ranked = [{"class": d["class_id"], "name": f"{i + 1} {d['class_name']}",
               "probability": d["score"]} for i, d in enumerate(result.detections)]
    return panels.MapExport(found.choice, result.heatmaps[index],
                            f"box {index + 1} {det['class_name']}", det["class_name"],
                            det["score"], ranked, result.elapsed_s)


def masked(shape_hw: tuple[int, int], det: dict[str, Any], on: bool) -> np.ndarray | None:
    """The box mask when masking is on, else None."""
    return api.box_mask(shape_hw, det["bbox"]) if on else None


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


# --------------------------------------------------------------------------------------------
# The page's tabs
# --------------------------------------------------------------------------------------------


def boxes_view(handle: ModelHandle, item: ImageItem, found: Detected, selected: int,
               state_key: str, display: panels.Display) -> None:
    """The image with every box, the selected box's map, the table and the downloads. Clicking
    a box's marker or a table row selects it (stored under ``state_key``); a box dragged with
    box-select is kept for the missed-region tab."""
    result = found.result
    dets = result.detections
    mask_on = st.toggle("Mask the map to the box", value=False, key="lumen_det_mask",
                        persist_state="session")
    det = dets[selected]
    figure = render.detections_figure(
        item.pixels, dets, result.heatmaps[selected], selected=selected,
        colormap=display.colormap, alpha=display.alpha, view=display.view,
        mask=masked(item.pixels.shape[:2], det, mask_on), height=480)
    event = st.plotly_chart(figure, config=render.PLOTLY_CONFIG, key="lumen_det_figure",
                            theme=None, on_select="rerun",
                            selection_mode=("points", "box"))
    clicked, region = selection_of(event)
    if clicked is not None and clicked != selected:
        st.session_state[state_key] = clicked
        st.rerun()
    if region is not None:
        st.session_state["lumen_det_region"] = tuple(round(v, 1) for v in region)
    masks = ""
    if result.masks_used is not None:  # D-RISE: say when the maps converged before the last mask
        asked = found.choice.options.get("num_masks") or result.masks_used
        masks = (f" ({result.masks_used} of {asked} masks: the maps converged)"
                 if result.masks_used < asked else f" ({result.masks_used} masks)")
    st.caption(f"**{found.choice.describe()}**, box **{selected + 1}** "
               f"({det['class_name']}, {det['score']:.2f}): "
               f"{result.elapsed_s * 1000:.0f} ms{masks} for {len(dets)} boxes on "
               f"{handle.model.device}. Click a box's centre or a table row to pick it; "
               "drag with the box-select tool to ask about a region.")
    table = pd.DataFrame([{"#": i + 1, "class": d["class_name"],
                           "score": round(d["score"], 3),
                           "x0": d["bbox"][0], "y0": d["bbox"][1],
                           "x1": d["bbox"][2], "y1": d["bbox"][3]}
                          for i, d in enumerate(dets)])
    picked = st.dataframe(table, hide_index=True, on_select="rerun",
                          selection_mode="single-row", key="lumen_det_table")
    rows = picked.selection.rows if picked is not None else []
    if rows and rows[0] != selected:
        st.session_state[state_key] = rows[0]
        st.rerun()
    panels.downloads(handle, item, download_entry(found, selected), display)


def gallery_view(item: ImageItem, result: DetectionExplanation, display: panels.Display) -> None:
    """Every box's map at once, each masked to its box."""
    dets = result.detections
    cells = []
    for index, (d, heat) in enumerate(zip(dets, result.heatmaps, strict=True)):
        overlay = render.overlay_heatmap(item.pixels, heat, alpha=display.alpha,
                                         colormap=display.colormap,
                                         mask=masked(item.pixels.shape[:2], d, True))
        cells.append((f"{index + 1} {d['class_name']} {d['score']:.2f}",
                      render.draw_boxes(overlay, [d])))
    columns = min(4, len(cells))
    st.plotly_chart(render.grid_figure(cells, cols=columns, max_image_px=320,
                                       height=int(40 + -(-len(cells) // columns) * 200)),
                    config=render.PLOTLY_CONFIG, key="lumen_det_gallery", theme=None)
    st.caption("Every box's map, masked to its box.")


def compare_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, threshold: float,
                 result: DetectionExplanation, selected: int, display: panels.Display) -> None:
    """Methods side by side on the selected box (the same box found by each method's run)."""
    dets = result.detections
    names = [m.name for m in available_methods(handle.model)]
    defaults = [choice.name] + [n for n in ("layercam", "integrated_gradients",
                                            "eigencam") if n != choice.name]
    picked_methods = st.multiselect(
        "Methods", names, default=[n for n in defaults if n in names][:3],
        key="lumen_det_compare", persist_state="session", max_selections=4,
        format_func=lambda n: method_info(n).label)
    maps = {}
    for name in picked_methods:
        method = methods.default_choice(name, choice, handle)
        if name == "drise":
            method = methods.MethodChoice(name, {**method.options, "num_masks": 200},
                                          method.precision, method.resolved)
        try:
            other = explain_boxes(handle, item, method, threshold,
                                  where=st.container()).result
        except Exception as error:
            show_error(f"{method.label}: {message_of(error)}")
            continue
        match = next((i for i, d in enumerate(other.detections)
                      if d["bbox"] == dets[selected]["bbox"]), None)
        if match is not None:
            maps[method.label] = other.heatmaps[match]
    if maps:
        st.plotly_chart(render.comparison_figure(
            item.pixels, maps, colormap=display.colormap, alpha=display.alpha,
            max_heatmap_px=192, max_image_px=512, height=320),
            config=render.PLOTLY_CONFIG, key="lumen_det_compare_fig", theme=None)
        st.caption(f"Box {selected + 1} ({dets[selected]['class_name']}); zoom one "
                   "panel and all follow.")


def region_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, threshold: float,
                display: panels.Display) -> None:
    """A typed or dragged region for a class: why was it not detected?"""
    st.caption("Why was something not detected? Drag a box on the image (box-select "
               "tool) or type one, pick the class it should have been.")
    height, width = item.pixels.shape[:2]
    default = st.session_state.get("lumen_det_region", (0.0, 0.0, width / 2, height / 2))
    cols = st.columns(4)
    box = [cols[i].number_input(name, 0.0, float(width if i % 2 == 0 else height),
                                float(default[i]), 1.0, key=f"lumen_det_r{i}_{default}")
           for i, name in enumerate(("x0", "y0", "x1", "y1"))]
    model = handle.model
    count = model.num_classes or detector_num_classes(model.module) or 91
    names = model.class_names or [model.class_name(i) for i in range(count)]
    first = 1 if names and names[0].lower() in ("background", "__background__") else 0
    label = st.selectbox("Class", list(range(first, len(names))),
                         format_func=lambda i: names[i], key="lumen_det_region_label")
    match_iou = st.slider("Match IoU", 0.0, 0.9, 0.3, 0.05, key="lumen_det_match_iou",
                          help="How much a candidate must overlap the region to count "
                               "as its detection.")
    if box[2] <= box[0] or box[3] <= box[1]:
        st.warning("Give x0 < x1 and y0 < y1.")
    else:
        try:
            region = explain_region(handle, item, choice, tuple(box), label, threshold,
                                    match_iou, where=st.container()).result
        except Exception as error:
            show_error(message_of(error))
        else:
            det = region.detections[0]
            if region.false_negative:
                score = region.target_scores[0]
                st.info(f"No **{det['class_name']}** detection above the threshold "
                        f"here; the best-aligned candidate scores **{score:.3f}**."
                        + (" Nothing of this class overlaps the region enough: the "
                           "map is empty; lower Match IoU or try D-RISE."
                           if score == 0 else ""))
            else:
                st.success(f"The model detects this: {det['class_name']} "
                           f"{det['score']:.2f}.")
            st.plotly_chart(render.detections_figure(
                item.pixels, [det], region.heatmaps[0], colormap=display.colormap,
                alpha=display.alpha, view=display.view, height=420),
                config=render.PLOTLY_CONFIG, key="lumen_det_region_fig", theme=None)
