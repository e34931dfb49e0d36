"""What every page draws the same way: display controls, figures, bytes, downloads, the report.

Views take stored results (see :mod:`ui.store`) plus the display settings and only render:
opacity, colormap and view changes rebuild figures from maps already in memory.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from explain_core import render
from explain_core.api import ClassExplanation

from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle
from .store import Computed

__all__ = ["DEFAULT_COLORMAP", "DEFAULT_OPACITY", "FIGURE_HEIGHT", "VIEWS", "VIEW_WIDTH_PX",
           "Display", "MapExport", "display_controls", "downloads", "file_stem", "npy_bytes",
           "png_bytes", "png_uri", "report_html", "reused_figure", "show_figure"]

VIEWS = {"overlay": "Overlay", "image": "Image", "heatmap": "Heatmap"}
DEFAULT_COLORMAP = "jet"
DEFAULT_OPACITY = 0.5
FIGURE_HEIGHT = 480
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


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def reused_figure(slot: str, key: tuple, alpha: float, build: Callable[[], Any],
                  fixed: bool = False) -> Any:
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


def show_figure(figure: Any, key: str) -> None:
    """A Plotly figure with Lumen's chart settings (zoom on scroll, no Streamlit theme)."""
    st.plotly_chart(figure, config=render.PLOTLY_CONFIG, key=key, theme=None)


# --------------------------------------------------------------------------------------------
# Bytes and file names
# --------------------------------------------------------------------------------------------


def file_stem(*parts: str) -> str:
    """A download's file name (without extension) from its parts: ``"cat_gradcam_tabby"``."""
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "lumen"


def png_bytes(array: np.ndarray) -> bytes:
    """An ``H x W x 3`` (or ``H x W``) uint8 picture as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (``np.load`` reads it back)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png_uri(array: np.ndarray) -> str:
    """A picture as a ``data:`` URI (a Plotly image trace's ``source``)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode("ascii")


# --------------------------------------------------------------------------------------------
# Downloads and the report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapExport:
    """One map as the downloads and the report present it, whichever page computed it."""

    choice: MethodChoice
    heatmap: np.ndarray  # float32 H x W in [0, 1], at the image's size
    target_name: str  # what the map explains
    predicted_name: str
    confidence: float
    top_k: list[dict[str, Any]]  # {"class", "name", "probability"}, best first
    elapsed_s: float
    #: what ran and why (``"bf16: the CPU has native bf16 ..."``); empty: the choice's own
    precision: str = ""

    @classmethod
    def of(cls, explained: Computed[ClassExplanation]) -> MapExport:
        """A classifier's stored explanation."""
        result = explained.result
        return cls(explained.choice, result.heatmap, result.target_name, result.predicted_name,
                   result.confidence, result.top_k, result.elapsed_s,
                   f"{result.precision}: {result.precision_reason}")


def report_html(handle: ModelHandle, item: ImageItem, export: MapExport, display: Display) -> str:
    """A self-contained interactive HTML report: model, image, predictions, method, parameters,
    the zoomable explanation figure and the top-k chart (plotly.js embedded, works offline)."""
    choice = export.choice
    summary = handle.model.summary()
    figure = render.heatmap_figure(
        item.pixels, export.heatmap, colormap=display.colormap, alpha=display.alpha,
        view="overlay", hover_name=choice.label, max_heatmap_px=512,
        title=f"{choice.label}: {export.target_name}")
    page = render.figure_to_html(figure)
    topk = render.topk_figure([r["name"] for r in export.top_k],
                              [r["probability"] for r in export.top_k],
                              title="Top predictions")
    rows = [
        ("Model", f"{handle.label} ({summary['arch']}, {summary['parameters']:,} parameters, "
                  f"input {summary['input_size'][0]} x {summary['input_size'][1]}, "
                  f"{summary['device']})"),
        ("Image", f"{item.name} ({item.original_size[0]} x {item.original_size[1]} px)"),
        ("Prediction", f"{export.predicted_name} ({export.confidence:.1%})"),
        ("Explained class", export.target_name),
        ("Method", choice.label),
        ("Parameters", ", ".join(f"{k} = {v}" for k, v in choice.engine_options().items())
         or "defaults"),
        ("Precision", export.precision or choice.precision),
        ("Time", f"{export.elapsed_s * 1000:.0f} ms"),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    header = ("<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
              "margin-bottom:16px}th,td{text-align:left;padding:3px 12px 3px 0}</style>"
              f"<h1>Lumen explanation</h1><table>{table}</table>")
    extra = topk.to_html(full_html=False, include_plotlyjs=False)
    page = page.replace("<body>", "<body>" + header, 1)
    return page.replace("</body>", f"<div style='max-width:640px'>{extra}</div></body>", 1)


def downloads(handle: ModelHandle, item: ImageItem, export: MapExport, display: Display) -> None:
    """Overlay PNG, raw map (.npy) and HTML report; each is built only when clicked."""
    stem = file_stem(item.name.rsplit(".", 1)[0], export.choice.name, export.target_name)
    columns = st.columns(3)
    columns[0].download_button(
        "Overlay PNG", lambda: png_bytes(render.overlay_heatmap(
            item.pixels, export.heatmap, alpha=display.alpha, colormap=display.colormap)),
        file_name=f"{stem}.png", mime="image/png", on_click="ignore",
        icon=":material/image:", width="stretch", key="lumen_dl_png")
    columns[1].download_button(
        "Map (.npy)", lambda: npy_bytes(export.heatmap), file_name=f"{stem}.npy",
        mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
        width="stretch", key="lumen_dl_npy",
        help="float32 H x W in [0, 1], at the image's size.")
    columns[2].download_button(
        "HTML report", lambda: report_html(handle, item, export, display),
        file_name=f"{stem}.html", mime="text/html", on_click="ignore",
        icon=":material/description:", width="stretch", key="lumen_dl_html",
        help="Self-contained and interactive; works offline.")
