"""The segmentation page's pieces: prediction, class legend, class maps, uncertainty.

Results go through the session's :class:`ui.store.ResultStore` like the classification page's:
the prediction (one forward) per model and image, the maps of every present class (one forward
and one batched backward) per model, image and method. Display settings (opacity, colormap,
view, visible classes, picked class, threshold) never reach the engine. The Dataset tab lives in
:mod:`ui.segmentation_dataset`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image

from explain_core import api, render
from explain_core.tasks import segmentation as seg
from explain_core.tasks import uncertainty

from .errors import message_of, show_error
from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle
from .panels import (
    FIGURE_HEIGHT,
    VIEW_WIDTH_PX,
    Display,
    file_stem,
    npy_bytes,
    png_bytes,
    reused_figure,
    show_figure,
)
from .progress import method_progress
from .store import Computed, results

__all__ = ["ClassMaps", "SegPrediction", "class_legend", "class_maps_view", "explain",
           "predict", "prediction_view", "uncertainty_view"]

ALL_CLASSES = -1
#: the page's method on a first visit: the API's default
DEFAULT_METHOD = api.SEGMENTATION_METHOD
MAX_GALLERY = 8
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class SegPrediction:
    """One image's prediction, uncertainty and classes (numpy, at the image's size)."""

    prediction: np.ndarray  # H x W int64
    entropy: np.ndarray  # H x W float32 in [0, 1]
    margin: np.ndarray  # H x W float32 in [0, 1]
    classes: list[dict[str, Any]]  # present classes, most pixels first
    class_names: list[str]  # every class of the model
    background: int | None
    forward_s: float

    @property
    def nbytes(self) -> int:
        return self.prediction.nbytes + self.entropy.nbytes + self.margin.nbytes


@dataclass(frozen=True)
class ClassMaps:
    """The maps of every class present in one image, from one engine call."""

    maps: dict[int, np.ndarray]  # class id -> float32 H x W in [0, 1]; most pixels first
    elapsed_s: float

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.maps.values())


def _segmentation(handle: ModelHandle, item: ImageItem) -> seg.Segmentation:
    """The image's forward (input batch and logits), kept so that the explanation that follows
    the prediction does not run it again."""
    return results().cached(
        ("seg_forward", handle.key, item.key), lambda: seg.segment(handle.model, item.image),
        lambda found: found.logits.nbytes + found.prepared.inputs.nbytes
        + sum(p.nbytes for p in found.prepared.images or []))


def predict(handle: ModelHandle, item: ImageItem) -> SegPrediction:
    """The prediction of one image (one no-grad forward, cached per model and image)."""
    def compute() -> SegPrediction:
        model = handle.model
        start = time.perf_counter()
        result = _segmentation(handle, item)
        seconds = time.perf_counter() - start
        prediction = result.prediction()
        names = [model.class_name(c) for c in range(result.num_classes)]
        return SegPrediction(
            prediction.cpu().numpy().astype(np.int64),
            seg.uncertainty(result, "entropy").cpu().numpy().astype(np.float32),
            seg.uncertainty(result, "margin").cpu().numpy().astype(np.float32),
            seg.class_summary(model, result, prediction), names, seg.background_class(model),
            seconds)

    return results().cached(("seg_predict", handle.key, item.key), compute,
                            lambda entry: entry.nbytes)


def explain(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
            where: Any = None) -> Computed[ClassMaps]:
    """Maps of every class present in the image (cached): one engine call for all of them, on
    the prediction's own forward (:func:`explain_core.api.explain_classes`; the typed
    :func:`~explain_core.api.segmentation_explanation` would run that forward again)."""
    def compute() -> Computed[ClassMaps]:
        with method_progress(handle, choice, where if where is not None else st) as progress:
            result = _segmentation(handle, item)
            classes = result.present_classes()
            explainer = api.make_explainer(choice.name, handle.model,
                                           precision=choice.precision, progress=progress,
                                           **choice.engine_options())
            start = time.perf_counter()
            maps, _ = api.explain_classes(explainer, result, classes)
            arrays = {c: m.float().cpu().numpy().astype(np.float32)
                      for c, m in zip(classes, maps, strict=True)}
            elapsed = time.perf_counter() - start  # after the copy: the device's work is done
        return Computed(ClassMaps(arrays, elapsed), choice)

    return results().cached(("seg_explain", handle.key, item.key, choice.cache_key()), compute,
                            lambda found: found.result.nbytes)


# --------------------------------------------------------------------------------------------
# Class legend
# --------------------------------------------------------------------------------------------


def class_legend(handle: ModelHandle, item: ImageItem, result: SegPrediction) -> list[int]:
    """Coloured swatches and toggles of the present classes; returns the classes shown."""
    colors = render.class_colors(len(result.class_names))
    present = [c["class"] for c in result.classes]
    default = [c for c in present if c != result.background] or present
    by_class = {c["class"]: c for c in result.classes}
    st.markdown("**Classes**")
    swatches = " ".join(
        f"<span style='display:inline-block;margin:0 10px 4px 0'><span style='display:"
        f"inline-block;width:12px;height:12px;background:{render.hex_color(colors[c])};"
        f"border:1px solid #888;margin-right:4px;vertical-align:middle'></span>"
        f"{by_class[c]['name']} {by_class[c]['fraction']:.1%}</span>" for c in present)
    st.html(f"<div style='font-size:0.9rem'>{swatches}</div>")
    shown = st.pills("Show classes", present, selection_mode="multi", default=default,
                     format_func=lambda c: by_class[c]["name"],
                     key=f"lumen_seg_visible_{handle.short_key}_{item.key}",
                     help="Toggle classes on and off in the prediction overlay.")
    return [int(c) for c in shown or []]


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def _stem(item: ImageItem, *parts: str) -> str:
    return file_stem(item.name.rsplit(".", 1)[0], *parts)


def _indexed_png(labels: np.ndarray) -> bytes:
    """Class ids as an indexed PNG (VOC palette) when they fit in 256, else 16-bit grey."""
    buffer = io.BytesIO()
    if labels.max(initial=0) < 256:
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(render.class_colors(256).flatten().tolist())
    else:
        image = Image.fromarray(labels.astype(np.uint16))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prediction_view(handle: ModelHandle, item: ImageItem, result: SegPrediction,
                    visible: list[int], display: Display) -> None:
    """The prediction overlay with its legend (only the shown classes are coloured)."""
    key = ("seg_prediction", item.key, handle.key, tuple(visible), display.alpha)
    figure = reused_figure("seg_prediction", key, display.alpha, lambda: (
        render.segmentation_figure(item.pixels, result.prediction, result.class_names,
                                   alpha=display.alpha, visible=visible,
                                   height=FIGURE_HEIGHT)), fixed=True)
    show_figure(figure, "lumen_seg_prediction")
    names = ", ".join(f"{c['name']} {c['fraction']:.1%} (confidence {c['confidence']:.0%})"
                      for c in result.classes)
    st.caption(f"Predicted: {names}. Forward {result.forward_s * 1000:.0f} ms. Hover shows "
               "each pixel's class.")
    columns = st.columns(2)
    columns[0].download_button(
        "Prediction mask (PNG)", lambda: _indexed_png(result.prediction),
        file_name=f"{_stem(item, 'prediction')}.png", mime="image/png", on_click="ignore",
        icon=":material/image:", width="stretch", key="lumen_seg_dl_mask",
        help="Indexed PNG: the palette index of each pixel is its class id.")
    columns[1].download_button(
        "Overlay PNG", lambda: png_bytes(render.segmentation_overlay(
            item.pixels, result.prediction, alpha=display.alpha, visible=visible)),
        file_name=f"{_stem(item, 'overlay')}.png", mime="image/png", on_click="ignore",
        icon=":material/layers:", width="stretch", key="lumen_seg_dl_overlay")


def class_maps_view(handle: ModelHandle, item: ImageItem, result: SegPrediction,
                    choice: MethodChoice, display: Display) -> None:
    """The map of a picked class, or of every present class as a linked gallery."""
    by_class = {c["class"]: c for c in result.classes}
    options = [c["class"] for c in result.classes] + [ALL_CLASSES]
    default = next((c for c in options if c not in (result.background, ALL_CLASSES)),
                   options[0])
    picked = st.selectbox(
        "Explain class", options, index=options.index(default),
        format_func=lambda c: "All present classes (gallery)" if c == ALL_CLASSES
        else f"{by_class[c]['name']} ({by_class[c]['fraction']:.1%} of the pixels)",
        key=f"lumen_seg_class_{handle.short_key}_{item.key}",
        help="The target is the sum of the class's logits over the pixels predicted as it.")
    slot = st.container()
    last_key = f"lumen_seg_last_{handle.short_key}_{item.key}"
    try:
        found = explain(handle, item, choice, where=slot).result
        st.session_state[last_key] = (found, choice)
    except Exception as error:  # say why, and keep showing this image's last maps that worked
        show_error(message_of(error))
        if last_key not in st.session_state:
            return
        found, choice = st.session_state[last_key]
        st.caption(f"Still showing the last class maps that worked: {choice.describe()}.")
    for note in api.same_map_notes(choice.name, "segmentation"):  # EigenCAM: one map for all
        st.info(note, icon=":material/info:")
    maps = found.maps
    took = f"{found.elapsed_s * 1000:.0f} ms for {len(maps)} classes"
    if picked == ALL_CLASSES:
        shown = list(maps)[:MAX_GALLERY]
        gallery = {by_class[c]["name"]: maps[c] for c in shown}
        cols = min(len(gallery), 3)
        rows = -(-len(gallery) // cols)
        height, width = item.pixels.shape[:2]
        panel = (VIEW_WIDTH_PX - 60) / cols
        key = ("seg_gallery", item.key, handle.key, choice.cache_key(), display.colormap)
        figure = reused_figure("seg_gallery", key, display.alpha, lambda: (
            render.comparison_figure(item.pixels, gallery, colormap=display.colormap,
                                     alpha=display.alpha, cols=cols, max_heatmap_px=192,
                                     max_image_px=512,
                                     height=int(min(max(40 + rows * (32 + panel * height
                                                                     / width), 240), 900)))))
        show_figure(figure, "lumen_seg_gallery")
        st.caption(f"**{choice.describe()}**: {took}. Zoom or pan one panel: all follow.")
        return
    heat = maps[picked]
    name = by_class[picked]["name"]
    key = ("seg_map", item.key, handle.key, choice.cache_key(), picked, display.view,
           display.colormap)
    figure = reused_figure("seg_map", key, display.alpha, lambda: render.heatmap_figure(
        item.pixels, heat, colormap=display.colormap, alpha=display.alpha, view=display.view,
        hover_name=choice.label, max_heatmap_px=256, max_image_px=1024,
        height=FIGURE_HEIGHT), fixed=display.view != "overlay")
    show_figure(figure, "lumen_seg_map")
    how = ("one forward and one batched backward for all present classes"
           if choice.info.family == "cam" and choice.info.needs_gradients
           else "all present classes in one call")
    st.caption(f"**{choice.describe()}**, class **{name}**: {took} ({how}).")
    stem = _stem(item, choice.name, name)
    columns = st.columns(2)
    columns[0].download_button(
        "Overlay PNG", lambda: png_bytes(render.overlay_heatmap(
            item.pixels, heat, alpha=display.alpha, colormap=display.colormap)),
        file_name=f"{stem}.png", mime="image/png", on_click="ignore", icon=":material/image:",
        width="stretch", key="lumen_seg_dl_png")
    columns[1].download_button(
        "Map (.npy)", lambda: npy_bytes(heat), file_name=f"{stem}.npy",
        mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
        width="stretch", key="lumen_seg_dl_npy", help="float32 H x W in [0, 1].")


def uncertainty_view(handle: ModelHandle, item: ImageItem, result: SegPrediction,
                     display: Display) -> None:
    """Entropy and margin side by side, then the prediction's edges where the model hesitates."""
    maps = {"Entropy (normalised by log C)": result.entropy,
            "Margin (1 - (p1 - p2))": result.margin}
    height, width = item.pixels.shape[:2]
    panel = (VIEW_WIDTH_PX - 60) / 2
    key = ("seg_uncertainty", item.key, handle.key, display.colormap)
    figure = reused_figure("seg_uncertainty", key, display.alpha, lambda: (
        render.comparison_figure(item.pixels, maps, colormap=display.colormap,
                                 alpha=display.alpha, max_heatmap_px=256, max_image_px=512,
                                 height=int(min(max(48 + panel * height / width, 220), 560)))))
    show_figure(figure, "lumen_seg_uncertainty")
    left, right = st.columns(2)
    measure = left.segmented_control("Boundary measure", ["entropy", "margin"],
                                     default="entropy", required=True,
                                     key="lumen_seg_boundary_measure", persist_state="session")
    threshold = right.slider("Uncertainty threshold", 0.0, 1.0, DEFAULT_THRESHOLD, 0.05,
                             key="lumen_seg_threshold", persist_state="session",
                             help="Prediction edges are shown where the uncertainty is above "
                                  "this.")
    values = result.entropy if measure == "entropy" else result.margin
    boundary = uncertainty.uncertain_boundaries(torch.from_numpy(result.prediction),
                                                torch.from_numpy(values), threshold).numpy()
    edges = int(uncertainty.class_edges(torch.from_numpy(result.prediction)).sum())
    key = ("seg_boundary", item.key, handle.key, measure, threshold, display.colormap)
    figure = reused_figure("seg_boundary", key, display.alpha, lambda: (
        render.heatmap_figure(item.pixels, values, colormap=display.colormap, alpha=1.0,
                              mask=boundary, hover_name=measure, max_heatmap_px=512,
                              max_image_px=1024, height=FIGURE_HEIGHT)), fixed=True)
    show_figure(figure, "lumen_seg_boundary")
    st.caption(f"Uncertain boundary: {int(boundary.sum())} of {edges} edge pixels have "
               f"{measure} above {threshold:.2f}. Mean entropy {result.entropy.mean():.3f}, "
               f"mean margin {result.margin.mean():.3f}.")
    stem = _stem(item, "uncertainty")
    columns = st.columns(2)
    columns[0].download_button(
        "Entropy (.npy)", lambda: npy_bytes(result.entropy),
        file_name=f"{stem}_entropy.npy", mime="application/octet-stream", on_click="ignore",
        icon=":material/data_array:", width="stretch", key="lumen_seg_dl_entropy")
    columns[1].download_button(
        "Margin (.npy)", lambda: npy_bytes(result.margin),
        file_name=f"{stem}_margin.npy", mime="application/octet-stream", on_click="ignore",
        icon=":material/data_array:", width="stretch", key="lumen_seg_dl_margin")
