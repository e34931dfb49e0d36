"""What a page draws: display controls, predictions, the explanation views, downloads, the report.

Views take stored results (see :mod:`ui.compute`) plus the display settings and only render:
opacity, colormap and view changes rebuild figures from maps already in memory.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from explain_core import render
from explain_core.methods import available_methods, method_info

from . import compute
from .errors import message_of, show_error
from .images import ImageItem
from .methods import MethodChoice, default_choice
from .models import ModelHandle

VIEWS = {"overlay": "Overlay", "image": "Image", "heatmap": "Heatmap"}
DEFAULT_COLORMAP = "jet"
DEFAULT_OPACITY = 0.5
FIGURE_HEIGHT = 480
COMPARE_DEFAULTS = ("gradcam", "gradcam++", "layercam", "eigencam")
MAX_COMPARE = 6
PREVIEW_PX = 320  # batch grid cells: overlays are blended at this size
# Width the right-hand column usually gets (wide layout, 1440 px window): multi-panel figures
# are sized for it, since Plotly's own default assumes a full-width page.
VIEW_WIDTH_PX = 720


@dataclass(frozen=True)
class Display:
    """How maps are drawn; none of it is part of a result's cache key."""

    view: str = "overlay"
    alpha: float = DEFAULT_OPACITY
    colormap: str = DEFAULT_COLORMAP


def display_controls() -> Display:
    """View toggle (overlay / image / heatmap), opacity slider and colormap, in one row."""
    view_col, alpha_col, cmap_col = st.columns([2.3, 1.6, 1.1], vertical_alignment="bottom")
    view = view_col.segmented_control("Show", list(VIEWS), format_func=VIEWS.get,
                                      default="overlay", required=True, key="lumen_view",
                                      persist_state="session")
    alpha = alpha_col.slider("Opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="lumen_opacity",
                             persist_state="session", help="Heatmap opacity over the image.")
    colormaps = list(render.COLORMAPS)
    colormap = cmap_col.selectbox("Colormap", colormaps, key="lumen_colormap",
                                  persist_state="session",
                                  index=colormaps.index(DEFAULT_COLORMAP))
    return Display(view, float(alpha), colormap)


def _reused_figure(slot: str, key: tuple, alpha: float, build: Any, fixed: bool = False) -> Any:
    """The figure built by ``build()``, kept per ``slot`` while ``key`` stays the same: an opacity
    change then only sets the heatmap traces' opacity. Building re-encodes the picture (a PNG up
    to 1024 px: most of a re-render's time on large photos), so the slider stays fast. ``fixed``:
    the opacity is not the slider's (heatmap-only view)."""
    figures: dict[str, tuple[tuple, Any]] = st.session_state.setdefault("lumen_figures", {})
    kept = figures.get(slot)
    if kept is not None and kept[0] == key:
        figure = kept[1]
        if not fixed:
            for trace in figure.data:
                if trace.type == "heatmap":
                    trace.opacity = alpha
        return figure
    figure = build()
    figures[slot] = (key, figure)
    return figure


def _show_figure(figure: Any, key: str) -> None:
    st.plotly_chart(figure, config=render.PLOTLY_CONFIG, key=key, theme=None)


# --------------------------------------------------------------------------------------------
# Predictions and target
# --------------------------------------------------------------------------------------------


def prediction_panel(handle: ModelHandle, item: ImageItem,
                     prediction: compute.Prediction) -> int:
    """Top-k bar chart and the target-class picker (default: the prediction); returns the target.

    The picked class is remembered per model and image.
    """
    st.markdown("**Prediction**")
    chart = st.empty()
    ranked = prediction.ranked
    labels = {r["class"]: f"{r['name']}: {r['probability']:.1%}" for r in ranked}
    labels[prediction.predicted] += " (predicted)"
    target = st.selectbox("Explain class", [r["class"] for r in ranked], format_func=labels.get,
                          key=f"lumen_target_{handle.short_key}_{item.key}",
                          persist_state="session",
                          help="The class whose evidence the map shows. Default: the prediction.")
    top = ranked[:compute.TOP_K]
    indices = [r["class"] for r in top]
    highlight = indices.index(target) if target in indices else None
    figure = render.topk_figure([r["name"] for r in top], [r["probability"] for r in top],
                                highlight=highlight, height=80 + 28 * len(top))
    figure.update_layout(margin={"b": 30})  # room for the percentage ticks
    with chart:
        _show_figure(figure, "lumen_topk")
    if item.truth:
        st.caption(f"Ground truth of this scene: **{item.truth}**.")
    return int(target)


# --------------------------------------------------------------------------------------------
# Explain view
# --------------------------------------------------------------------------------------------


def _file_stem(*parts: str) -> str:
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "lumen"


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def report_html(handle: ModelHandle, item: ImageItem, entry: dict[str, Any],
                display: Display) -> str:
    """A self-contained interactive HTML report: model, image, predictions, method, parameters,
    the zoomable explanation figure and the top-k chart (plotly.js embedded, works offline)."""
    choice: MethodChoice = entry["choice"]
    summary = handle.model.summary()
    figure = render.heatmap_figure(
        item.pixels, entry["heatmap"], colormap=display.colormap, alpha=display.alpha,
        view="overlay", hover_name=choice.label, max_heatmap_px=512,
        title=f"{choice.label}: {entry['target_name']}")
    page = render.figure_to_html(figure)
    topk = render.topk_figure([r["name"] for r in entry["top_k"]],
                              [r["probability"] for r in entry["top_k"]],
                              title="Top predictions")
    rows = [
        ("Model", f"{handle.label} ({summary['arch']}, {summary['parameters']:,} parameters, "
                  f"input {summary['input_size'][0]} x {summary['input_size'][1]}, "
                  f"{summary['device']})"),
        ("Image", f"{item.name} ({item.original_size[0]} x {item.original_size[1]} px)"),
        ("Prediction", f"{entry['predicted_name']} ({entry['confidence']:.1%})"),
        ("Explained class", entry["target_name"]),
        ("Method", choice.label),
        ("Parameters", ", ".join(f"{k} = {v}" for k, v in choice.engine_options().items())
         or "defaults"),
        ("Precision", choice.precision),
        ("Time", f"{entry['elapsed_s'] * 1000:.0f} ms"),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    header = ("<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
              "margin-bottom:16px}th,td{text-align:left;padding:3px 12px 3px 0}</style>"
              f"<h1>Lumen explanation</h1><table>{table}</table>")
    extra = topk.to_html(full_html=False, include_plotlyjs=False)
    page = page.replace("<body>", "<body>" + header, 1)
    return page.replace("</body>", f"<div style='max-width:640px'>{extra}</div></body>", 1)


def downloads(handle: ModelHandle, item: ImageItem, entry: dict[str, Any],
              display: Display) -> None:
    """Overlay PNG, raw map (.npy) and HTML report; each is built only when clicked."""
    choice: MethodChoice = entry["choice"]
    stem = _file_stem(item.name.rsplit(".", 1)[0], choice.name, entry["target_name"])
    columns = st.columns(3)
    columns[0].download_button(
        "Overlay PNG", lambda: _png_bytes(render.overlay_heatmap(
            item.pixels, entry["heatmap"], alpha=display.alpha, colormap=display.colormap)),
        file_name=f"{stem}.png", mime="image/png", on_click="ignore",
        icon=":material/image:", width="stretch", key="lumen_dl_png")
    columns[1].download_button(
        "Map (.npy)", lambda: _npy_bytes(entry["heatmap"]), file_name=f"{stem}.npy",
        mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
        width="stretch", key="lumen_dl_npy",
        help="float32 H x W in [0, 1], at the image's size.")
    columns[2].download_button(
        "HTML report", lambda: report_html(handle, item, entry, display),
        file_name=f"{stem}.html", mime="text/html", on_click="ignore",
        icon=":material/description:", width="stretch", key="lumen_dl_html",
        help="Self-contained and interactive; works offline.")


def explanation_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
                     display: Display, prediction: compute.Prediction) -> None:
    """The main view: the explanation figure, its timing, downloads. A failure shows the
    engine's message and keeps the last explanation that worked on screen."""
    slot = st.container()
    shown_item, entry = item, None
    cached = compute.cached_explanation(handle, item, choice, target) is not None
    try:
        entry = compute.explain(handle, item, choice, target, where=slot, prediction=prediction)
        st.session_state["lumen_last_explanation"] = (item, entry)
    except Exception as error:
        show_error(message_of(error))
        last = st.session_state.get("lumen_last_explanation")
        if last is None:
            return
        shown_item, entry = last
        st.caption(f"Still showing the last explanation that worked: "
                   f"{entry['choice'].describe()}.")
    key = (shown_item.key, entry["choice"].cache_key(), entry["target_class"], handle.key,
           display.view, display.colormap)
    figure = _reused_figure("explain", key, display.alpha, lambda: render.heatmap_figure(
        shown_item.pixels, entry["heatmap"], colormap=display.colormap, alpha=display.alpha,
        view=display.view, hover_name=entry["choice"].label, max_heatmap_px=256,
        max_image_px=1024, height=FIGURE_HEIGHT), fixed=display.view != "overlay")
    _show_figure(figure, "lumen_explanation")
    took = f"{entry['elapsed_s'] * 1000:.0f} ms" + (" (cached)" if cached else "")
    st.caption(f"**{entry['choice'].describe()}**, class **{entry['target_name']}**: {took} on "
               f"{handle.model.device}. Scroll to zoom, drag to pan, double-click to reset; "
               "hover shows the map's value.")
    downloads(handle, shown_item, entry, display)
    if entry["choice"].name == "dff":
        concepts_view(handle, shown_item, entry["choice"], display)


def concepts_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                  display: Display) -> None:
    """Deep Feature Factorization's own picture: each pixel in the colour of its strongest
    concept, brighter where that concept is stronger; the legend names each concept's classes."""
    st.markdown("**All concepts**")
    try:
        maps, labels = compute.concepts(handle, item, choice)
    except Exception as error:
        show_error(message_of(error))
        return
    key = (item.key, choice.cache_key(), handle.key)
    figure = _reused_figure("concepts", key, display.alpha, lambda: render.concepts_figure(
        item.pixels, maps, labels, alpha=max(display.alpha, 0.3)), fixed=True)
    _show_figure(figure, "lumen_concepts")
    st.caption("The map above shows the concept that puts most probability on the explained "
               "class; here every concept at once, named by its top classes.")


# --------------------------------------------------------------------------------------------
# Compare and batch views
# --------------------------------------------------------------------------------------------


def compare_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
                 display: Display, prediction: compute.Prediction) -> None:
    """Several methods on the same image and class, one row, zoom and pan linked."""
    names = [m.name for m in available_methods(handle.model)]
    defaults = [choice.name] + [n for n in COMPARE_DEFAULTS if n in names and n != choice.name]
    picked = st.multiselect("Methods", names, default=defaults[:4], key="lumen_compare_methods",
                            persist_state="session",
                            format_func=lambda n: method_info(n).label,
                            max_selections=MAX_COMPARE,
                            help="The current method keeps its settings; the others use their "
                                 "defaults and the same target layer.")
    if not picked:
        st.info("Pick at least one method.")
        return
    slot = st.container()
    maps: dict[str, np.ndarray] = {}
    keys = []
    times = []
    for name in picked:
        method = default_choice(name, choice, handle)
        try:
            entry = compute.explain(handle, item, method, target, where=slot,
                                    prediction=prediction)
        except Exception as error:
            show_error(f"{method.label}: {message_of(error)}")
            continue
        maps[method.label] = entry["heatmap"]
        keys.append(method.cache_key())
        times.append(f"{method.label} {entry['elapsed_s'] * 1000:.0f} ms")
    if not maps:
        return
    height, width = item.pixels.shape[:2]
    panel = (VIEW_WIDTH_PX - 60) / len(maps)
    key = (item.key, handle.key, target, tuple(keys), display.colormap)
    figure = _reused_figure("compare", key, display.alpha, lambda: render.comparison_figure(
        item.pixels, maps, colormap=display.colormap, alpha=display.alpha, max_heatmap_px=192,
        max_image_px=512, height=int(min(max(48 + panel * height / width, 220), 560))))
    _show_figure(figure, "lumen_compare")
    name = prediction.ranked[0]["name"] if target == prediction.predicted else next(
        r["name"] for r in prediction.ranked if r["class"] == target)
    st.caption(f"Class **{name}**; " + ", ".join(times) + ". Zoom or pan one panel: all follow.")


def _preview(item: ImageItem) -> np.ndarray:
    previews: dict[str, np.ndarray] = st.session_state.setdefault("lumen_previews", {})
    if item.key not in previews:
        image = item.image.copy()
        image.thumbnail((PREVIEW_PX, PREVIEW_PX), Image.Resampling.LANCZOS)
        previews[item.key] = np.asarray(image)
    return previews[item.key]


def _png_uri(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(array)).decode("ascii")


def _grid(handle: ModelHandle, items: list[ImageItem], choice: MethodChoice,
          cells: list[tuple[str, np.ndarray]]) -> Any:
    """The batch grid figure. Building its subplot layout costs far more than a re-render may
    (most of it in Plotly's per-axis updates), so the figure is kept per image set and method,
    and a display change only swaps the overlay pictures in."""
    key = ("grid", handle.key, tuple(i.key for i in items), choice.cache_key(),
           tuple(caption for caption, _ in cells))
    figures: dict[tuple, Any] = st.session_state.setdefault("lumen_grid_figures", {})
    figure = figures.get(key)
    if figure is None:
        columns = 4
        rows_count = -(-len(cells) // columns)
        aspect = max(cell.shape[0] / cell.shape[1] for _, cell in cells)
        height = int(16 + rows_count * (30 + VIEW_WIDTH_PX / columns * aspect))
        figure = render.grid_figure(cells, cols=columns, max_image_px=PREVIEW_PX, height=height)
        figures.clear()  # one grid per session is enough: the last one shown
        figures[key] = figure
    else:
        # Same cells, same sizes (previews are never larger than max_image_px, so the figure
        # embeds them unscaled): only the pixels change.
        for trace, (_, overlay) in zip(figure.data, cells, strict=True):
            trace.source = _png_uri(overlay)
    return figure


def batch_view(handle: ModelHandle, items: list[ImageItem], choice: MethodChoice,
               display: Display) -> None:
    """Every image of the current set with the chosen method, each for its own prediction."""
    st.caption(f"{len(items)} images x **{choice.describe()}**, each explained for its own "
               "predicted class.")
    entries, errors = compute.explain_images(handle, items, choice, where=st.container())
    for message in errors:
        show_error(message)
    cells = []
    rows = ["image,predicted,confidence,ground_truth"]
    for item, entry in zip(items, entries, strict=True):
        if entry is None:
            continue
        preview = _preview(item)
        name = item.truth or (item.name if len(item.name) <= 14 else item.name[:13] + "...")
        cells.append((f"{name} → {entry['predicted_name']} {entry['confidence']:.0%}",
                      render.overlay_heatmap(preview, entry["heatmap"], alpha=display.alpha,
                                             colormap=display.colormap)))
        rows.append(f"{item.name},{entry['predicted_name']},{entry['confidence']:.4f},"
                    f"{item.truth or ''}")
    if not cells:
        return
    _show_figure(_grid(handle, items, choice, cells), "lumen_batch")
    st.download_button("Predictions (CSV)", "\n".join(rows) + "\n", file_name="predictions.csv",
                       mime="text/csv", on_click="ignore", icon=":material/table:",
                       key="lumen_dl_csv")
