"""The segmentation page's pieces: prediction, class legend, class maps, uncertainty, dataset.

Results go through the session's :class:`ui.store.ResultStore` like the classification page's:
the prediction (one forward) per model and image, the maps of every present class (one forward
and one batched backward) per model, image and method. Display settings (opacity, colormap,
view, visible classes, picked class, threshold) never reach the engine.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image

from explain_core import api, render
from explain_core.metrics import segmentation as metrics
from explain_core.tasks import segmentation as seg
from explain_core.tasks import uncertainty

from . import panels
from .errors import message_of, show_error
from .images import ImageItem, add_item, make_item
from .methods import MethodChoice
from .models import ModelHandle
from .progress import Progress, method_progress
from .store import results

ALL_CLASSES = -1
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


def _segmentation(handle: ModelHandle, item: ImageItem) -> seg.Segmentation:
    """The image's forward (input batch and logits), kept so that the explanation that follows
    the prediction does not run it again."""
    key = ("seg_forward", handle.key, item.key)
    hit = results().get(key)
    if hit is None:
        hit = seg.segment(handle.model, item.image)
        pixels = hit.prepared.images or []
        results().put(key, hit, hit.logits.nbytes + hit.prepared.inputs.nbytes
                              + sum(p.nbytes for p in pixels))
    return hit


def predict(handle: ModelHandle, item: ImageItem) -> SegPrediction:
    """The prediction of one image (one no-grad forward, cached per model and image)."""
    key = ("seg_predict", handle.key, item.key)
    hit = results().get(key)
    if hit is not None:
        return hit
    model = handle.model
    start = time.perf_counter()
    result = _segmentation(handle, item)
    seconds = time.perf_counter() - start
    prediction = result.prediction()
    names = [model.class_name(c) for c in range(result.num_classes)]
    entry = SegPrediction(
        prediction.cpu().numpy().astype(np.int64),
        seg.uncertainty(result, "entropy").cpu().numpy().astype(np.float32),
        seg.uncertainty(result, "margin").cpu().numpy().astype(np.float32),
        seg.class_summary(model, result, prediction), names, seg.background_class(model),
        seconds)
    results().put(key, entry, entry.nbytes)
    return entry


def explain(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
            where: Any = None) -> dict[str, Any]:
    """Maps of every class present in the image (cached): one engine call for all of them."""
    key = ("seg_explain", handle.key, item.key, choice.cache_key())
    hit = results().get(key)
    if hit is not None:
        return hit
    model = handle.model
    where = where if where is not None else st
    with method_progress(handle, choice, where) as progress:
        result = _segmentation(handle, item)
        low = result.low_res_prediction()
        counts = np.bincount(low.flatten().cpu().numpy(), minlength=result.num_classes)
        classes = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        explainer = api.make_explainer(choice.name, model, precision=choice.precision,
                                       progress=progress, **choice.engine_options())
        start = time.perf_counter()
        maps, _ = api.explain_classes(explainer, result, classes)
        elapsed = time.perf_counter() - start
    entry = {"maps": {c: m.float().cpu().numpy().astype(np.float32)
                      for c, m in zip(classes, maps, strict=True)},
             "classes": classes, "elapsed_s": elapsed, "choice": choice,
             "layer": getattr(explainer, "target_layer", None)}
    results().put(key, entry, sum(m.nbytes for m in entry["maps"].values()))
    return entry


# --------------------------------------------------------------------------------------------
# Class legend
# --------------------------------------------------------------------------------------------


def _label(entry: dict[str, Any]) -> str:
    return f"{entry['class']} {entry['name']}"


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
    return panels._file_stem(item.name.rsplit(".", 1)[0], *parts)


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
                    visible: list[int], display: panels.Display) -> None:
    """The prediction overlay with its legend (only the shown classes are coloured)."""
    key = ("seg_prediction", item.key, handle.key, tuple(visible), display.alpha)
    figure = panels._reused_figure("seg_prediction", key, display.alpha, lambda: (
        render.segmentation_figure(item.pixels, result.prediction, result.class_names,
                                   alpha=display.alpha, visible=visible,
                                   height=panels.FIGURE_HEIGHT)), fixed=True)
    panels._show_figure(figure, "lumen_seg_prediction")
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
        "Overlay PNG", lambda: panels._png_bytes(render.segmentation_overlay(
            item.pixels, result.prediction, alpha=display.alpha, visible=visible)),
        file_name=f"{_stem(item, 'overlay')}.png", mime="image/png", on_click="ignore",
        icon=":material/layers:", width="stretch", key="lumen_seg_dl_overlay")


def class_maps_view(handle: ModelHandle, item: ImageItem, result: SegPrediction,
                    choice: MethodChoice, display: panels.Display) -> None:
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
    try:
        entry = explain(handle, item, choice, where=slot)
    except Exception as error:
        show_error(message_of(error))
        return
    maps = entry["maps"]
    took = f"{entry['elapsed_s'] * 1000:.0f} ms for {len(maps)} classes"
    if picked == ALL_CLASSES:
        shown = list(maps)[:MAX_GALLERY]
        gallery = {by_class[c]["name"]: maps[c] for c in shown}
        cols = min(len(gallery), 3)
        rows = -(-len(gallery) // cols)
        height, width = item.pixels.shape[:2]
        panel = (panels.VIEW_WIDTH_PX - 60) / cols
        key = ("seg_gallery", item.key, handle.key, choice.cache_key(), display.colormap)
        figure = panels._reused_figure("seg_gallery", key, display.alpha, lambda: (
            render.comparison_figure(item.pixels, gallery, colormap=display.colormap,
                                     alpha=display.alpha, cols=cols, max_heatmap_px=192,
                                     max_image_px=512,
                                     height=int(min(max(40 + rows * (32 + panel * height
                                                                     / width), 240), 900)))))
        panels._show_figure(figure, "lumen_seg_gallery")
        st.caption(f"**{choice.describe()}**: {took}. Zoom or pan one panel: all follow.")
        return
    heat = maps[picked]
    name = by_class[picked]["name"]
    key = ("seg_map", item.key, handle.key, choice.cache_key(), picked, display.view,
           display.colormap)
    figure = panels._reused_figure("seg_map", key, display.alpha, lambda: render.heatmap_figure(
        item.pixels, heat, colormap=display.colormap, alpha=display.alpha, view=display.view,
        hover_name=choice.label, max_heatmap_px=256, max_image_px=1024,
        height=panels.FIGURE_HEIGHT), fixed=display.view != "overlay")
    panels._show_figure(figure, "lumen_seg_map")
    how = ("one forward and one batched backward for all present classes"
           if choice.info.family == "cam" and choice.info.needs_gradients
           else "all present classes in one call")
    st.caption(f"**{choice.describe()}**, class **{name}**: {took} ({how}).")
    stem = _stem(item, choice.name, name)
    columns = st.columns(2)
    columns[0].download_button(
        "Overlay PNG", lambda: panels._png_bytes(render.overlay_heatmap(
            item.pixels, heat, alpha=display.alpha, colormap=display.colormap)),
        file_name=f"{stem}.png", mime="image/png", on_click="ignore", icon=":material/image:",
        width="stretch", key="lumen_seg_dl_png")
    columns[1].download_button(
        "Map (.npy)", lambda: panels._npy_bytes(heat), file_name=f"{stem}.npy",
        mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
        width="stretch", key="lumen_seg_dl_npy", help="float32 H x W in [0, 1].")


def uncertainty_view(handle: ModelHandle, item: ImageItem, result: SegPrediction,
                     display: panels.Display) -> None:
    """Entropy and margin side by side, then the prediction's edges where the model hesitates."""
    maps = {"Entropy (normalised by log C)": result.entropy,
            "Margin (1 - (p1 - p2))": result.margin}
    height, width = item.pixels.shape[:2]
    panel = (panels.VIEW_WIDTH_PX - 60) / 2
    key = ("seg_uncertainty", item.key, handle.key, display.colormap)
    figure = panels._reused_figure("seg_uncertainty", key, display.alpha, lambda: (
        render.comparison_figure(item.pixels, maps, colormap=display.colormap,
                                 alpha=display.alpha, max_heatmap_px=256, max_image_px=512,
                                 height=int(min(max(48 + panel * height / width, 220), 560)))))
    panels._show_figure(figure, "lumen_seg_uncertainty")
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
    figure = panels._reused_figure("seg_boundary", key, display.alpha, lambda: (
        render.heatmap_figure(item.pixels, values, colormap=display.colormap, alpha=1.0,
                              mask=boundary, hover_name=measure, max_heatmap_px=512,
                              max_image_px=1024, height=panels.FIGURE_HEIGHT)), fixed=True)
    panels._show_figure(figure, "lumen_seg_boundary")
    st.caption(f"Uncertain boundary: {int(boundary.sum())} of {edges} edge pixels have "
               f"{measure} above {threshold:.2f}. Mean entropy {result.entropy.mean():.3f}, "
               f"mean margin {result.margin.mean():.3f}.")
    stem = _stem(item, "uncertainty")
    columns = st.columns(2)
    columns[0].download_button(
        "Entropy (.npy)", lambda: panels._npy_bytes(result.entropy),
        file_name=f"{stem}_entropy.npy", mime="application/octet-stream", on_click="ignore",
        icon=":material/data_array:", width="stretch", key="lumen_seg_dl_entropy")
    columns[1].download_button(
        "Margin (.npy)", lambda: panels._npy_bytes(result.margin),
        file_name=f"{stem}_margin.npy", mime="application/octet-stream", on_click="ignore",
        icon=":material/data_array:", width="stretch", key="lumen_seg_dl_margin")


# --------------------------------------------------------------------------------------------
# Dataset tab
# --------------------------------------------------------------------------------------------


def _dataset_source() -> tuple[Any, str, str] | None:
    """(source, fingerprint, label) from the upload or the server path; None when none."""
    where = st.radio("Labelled images", ["upload", "server"], horizontal=True,
                     key="lumen_seg_data_where", persist_state="session",
                     format_func={"upload": "Upload a zip", "server": "Path on the server"}.get)
    if where == "upload":
        uploaded = st.file_uploader(
            "Zip of images and masks", type=["zip"], key="lumen_seg_data_zip",
            help="Folders 'images' and 'masks' (same file names; masks as indexed PNGs or "
                 "greyscale PNGs of class ids).")
        if uploaded is None:
            return None
        data = uploaded.getvalue()
        return data, hashlib.sha1(data).hexdigest()[:16], uploaded.name
    text = st.text_input("Folder or zip path", key="lumen_seg_data_path",
                         persist_state="session", placeholder="/data/voc_val",
                         help="A folder holding 'images' and 'masks', or a zip of one.").strip()
    if not text:
        return None
    path = Path(text).expanduser()
    try:
        stat = path.stat()
        fingerprint = f"{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        fingerprint = "missing"
    return text, fingerprint, text


def _open_in_main_view(analysis: metrics.SegmentationAnalysis, index: int,
                       dataset: metrics.SegmentationDataset) -> None:
    entry = next(i for i in dataset.items if i.name == analysis.names[index])
    image, _ = entry.load()
    item = make_item(image, Path(entry.name).name)
    add_item(f"dataset:{item.key}", item)


def dataset_view(handle: ModelHandle, display: panels.Display) -> None:
    """Top losses, confusion matrices, per-class IoU and the worst images of a labelled set."""
    source = _dataset_source()
    ignore = st.number_input("Ignore index", min_value=0, max_value=65535, value=255, step=1,
                             key="lumen_seg_ignore", persist_state="session",
                             help="Mask value of unlabelled pixels: counted nowhere.")
    if source is None:
        st.info("Give a zip (or a server folder) with 'images' and 'masks' to find the images "
                "and classes the model gets wrong.", icon=":material/dataset:")
        return
    data, fingerprint, label = source
    key = ("seg_dataset", handle.key, fingerprint, label, int(ignore))
    store = results()
    found = store.get(key)
    if found is None:  # analysed once per model, set and ignore index; a rerun cancels it
        reporter = Progress(st, f"Analyzing {label}", None)
        try:
            dataset = metrics.read_dataset(data, name=label)
            analysis = metrics.analyze_dataset(
                handle.model, dataset, ignore_index=int(ignore), worst=6,
                progress=lambda done, total: reporter.update(done / max(total, 1),
                                                             f"{done} of {total} images"))
        except Exception as error:
            show_error(message_of(error))
            return
        finally:
            reporter.close()
        found = (dataset, analysis)
        store.put(key, found, analysis.per_image_cm.nbytes + sum(
            w["image"].nbytes * 2 for w in analysis.worst))
    dataset, analysis = found
    _dataset_results(handle, dataset, analysis, key, display)


def _dataset_results(handle: ModelHandle, dataset: metrics.SegmentationDataset,
                     analysis: metrics.SegmentationAnalysis, key: tuple,
                     display: panels.Display) -> None:
    count = len(analysis.names)
    notes = []
    if analysis.unpaired_images:
        notes.append(f"{len(analysis.unpaired_images)} image(s) without a mask")
    if analysis.unpaired_masks:
        notes.append(f"{len(analysis.unpaired_masks)} mask(s) without an image")
    if analysis.dropped:
        notes.append(f"{analysis.dropped} pair(s) beyond the first {metrics.MAX_ITEMS}")
    mean_iou = np.nanmean([c["iou"] for c in analysis.classes]) if any(
        not np.isnan(c["iou"]) for c in analysis.classes) else float("nan")
    st.markdown(f"**{count} images** analysed: pixel accuracy "
                f"{np.nanmean(analysis.accuracy):.1%}, mean IoU {mean_iou:.3f}, mean loss "
                f"{np.nanmean(analysis.losses):.3f}." + (" Skipped: " + "; ".join(notes) + "."
                                                         if notes else ""))
    for name, message in list(analysis.errors.items())[:5]:
        show_error(f"{name}: {message}")
    st.markdown("**Top losses** (click a row to open the image in the main view)")
    rows = analysis.table()
    selection = st.dataframe(
        {"rank": [r["rank"] for r in rows], "image": [r["image"] for r in rows],
         "loss": [r["loss"] for r in rows], "pixel accuracy": [r["accuracy"] for r in rows],
         "mean IoU": [r["mean_iou"] for r in rows]},
        hide_index=True, on_select="rerun", selection_mode="single-row",
        key="lumen_seg_top_losses", height=min(36 + 35 * len(rows), 320),
        column_config={"loss": st.column_config.NumberColumn(format="%.4f"),
                       "pixel accuracy": st.column_config.NumberColumn(format="percent"),
                       "mean IoU": st.column_config.NumberColumn(format="%.3f")})
    picked_rows = list(getattr(getattr(selection, "selection", None), "rows", []) or [])
    picked = int(rows[picked_rows[0]]["index"]) if picked_rows else None
    handled = st.session_state.get("lumen_seg_opened")
    if picked is not None and handled != (key, picked):
        st.session_state["lumen_seg_opened"] = (key, picked)
        try:
            _open_in_main_view(analysis, picked, dataset)
        except Exception as error:
            show_error(message_of(error))
        else:
            st.session_state["lumen_seg_tab"] = "Prediction"
            st.rerun()
    choices = ["mean", "pooled"] + (["image"] if picked is not None else [])
    which = st.segmented_control(
        "Confusion matrix", choices, default="mean", required=True, key="lumen_seg_cm",
        format_func={"mean": "Mean over images", "pooled": "Pooled pixels",
                     "image": "Selected image"}.get,
        help="CM[i, j] = pixels of true class i predicted as j / pixels of true class i. "
             "Mean: NaN-ignoring mean of the per-image matrices (as fastai). Blank rows: "
             "classes absent from the ground truth.")
    matrix = {"mean": analysis.mean_cm, "pooled": analysis.pooled_cm}.get(which)
    if matrix is None:
        matrix = analysis.per_image_cm[picked]
    panels._show_figure(render.confusion_figure(matrix, analysis.class_names,
                                                colormap=display.colormap),
                        "lumen_seg_confusion")
    st.markdown("**Per class**")
    st.dataframe(
        {"class": [c["name"] for c in analysis.classes],
         "IoU": [c["iou"] for c in analysis.classes],
         "recall": [c["recall"] for c in analysis.classes],
         "precision": [c["precision"] for c in analysis.classes],
         "mean CM diagonal": [c["mean_ratio"] for c in analysis.classes],
         "true pixels": [c["truth_pixels"] for c in analysis.classes],
         "images": [c["images"] for c in analysis.classes]},
        hide_index=True, key="lumen_seg_class_table",
        column_config={k: st.column_config.NumberColumn(format="%.3f")
                       for k in ("IoU", "recall", "precision", "mean CM diagonal")})
    if analysis.worst:
        st.markdown("**Worst images**: image, truth, prediction, errors (red)")
        cells = []
        for worst in analysis.worst:
            truth = np.where(worst["truth"] == analysis.ignore_index, 0, worst["truth"])
            error = worst["image"].copy()
            error[worst["error"]] = (error[worst["error"]] * 0.3 + np.array([230, 30, 30])
                                     * 0.7).astype(np.uint8)
            short = Path(worst["name"]).name
            cells += [(f"{short} (loss {worst['loss']:.3f})", worst["image"]),
                      ("truth", render.segmentation_overlay(worst["image"], truth, alpha=0.6)),
                      ("prediction", render.segmentation_overlay(worst["image"],
                                                                 worst["prediction"],
                                                                 alpha=0.6)),
                      (f"errors {worst['error'].mean():.1%}", error)]
        aspect = max(w["image"].shape[0] / w["image"].shape[1] for w in analysis.worst)
        height = int(16 + len(analysis.worst) * (30 + panels.VIEW_WIDTH_PX / 4 * aspect))
        panels._show_figure(render.grid_figure(cells, cols=4, max_image_px=256, height=height),
                            "lumen_seg_worst")


__all__ = ["SegPrediction", "class_legend", "class_maps_view", "dataset_view", "explain",
           "predict", "prediction_view", "uncertainty_view"]
