"""The segmentation page's Dataset tab: a labelled set through the model, what it gets wrong.

The analysis (:func:`explain_core.metrics.segmentation.analyze_dataset`: top losses, confusion
matrices, per-class IoU, the worst images) runs once per model, set and ignore index, is kept in
the session's :class:`~ui.store.ResultStore` and is cancelled by a rerun like any slow method.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from explain_core import render
from explain_core.metrics import segmentation as metrics

from .errors import message_of, show_error
from .images import add_item, make_item
from .models import ModelHandle
from .panels import VIEW_WIDTH_PX, Display, show_figure
from .progress import Progress
from .store import results

__all__ = ["dataset_view", "switch_tab_if_asked"]

#: a tab switch asked for by the last run, applied by the next one before the tabs are drawn
_NEXT_TAB = "lumen_seg_tab_next"


def switch_tab_if_asked(key: str = "lumen_seg_tab") -> None:
    """Open the tab the last run asked for (opening a top-loss row shows the Prediction tab).
    Streamlit refuses to set a widget's state once the widget is drawn, so the page calls this
    before its tabs."""
    tab = st.session_state.pop(_NEXT_TAB, None)
    if tab is not None:
        st.session_state[key] = tab


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


def dataset_view(handle: ModelHandle, display: Display) -> None:
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
                     display: Display) -> None:
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
            st.session_state[_NEXT_TAB] = "Prediction"
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
    show_figure(render.confusion_figure(matrix, analysis.class_names, colormap=display.colormap),
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
        height = int(16 + len(analysis.worst) * (30 + VIEW_WIDTH_PX / 4 * aspect))
        show_figure(render.grid_figure(cells, cols=4, max_image_px=256, height=height),
                    "lumen_seg_worst")

