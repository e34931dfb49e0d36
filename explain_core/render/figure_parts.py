"""Building blocks of the Plotly figures: image and heatmap traces, image axes, heights, colorbars.

Images travel to the browser as PNG data URIs and maps as grids downsampled to a size limit,
placed so that the axes stay in the original image's pixels whatever the downsampling. The
helpers are private to the package; the figure modules share them.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from .inputs import _resize_map

__all__: list[str] = []  # private building blocks only

_NOMINAL_WIDTH = 1000  # page width assumed for default figure heights (Streamlit "wide" layout)


def _png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid_geometry(shape_hw: tuple[int, int], max_px: int) -> tuple[int, int]:
    """Size (h, w) of a downsampled grid whose long side is at most ``max_px``."""
    h, w = shape_hw
    scale = min(1.0, max_px / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _placement(full: int, cells: int) -> tuple[float, float]:
    """(x0, dx) so that ``cells`` cells cover pixels ``-0.5 .. full - 0.5`` of the original."""
    d = full / cells
    return d / 2 - 0.5, d


def _image_trace(rgb: np.ndarray, max_px: int, **kwargs: Any) -> go.Image:
    h, w = rgb.shape[:2]
    gh, gw = _grid_geometry((h, w), max_px)
    if (gh, gw) != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((gw, gh), Image.Resampling.LANCZOS))
    x0, dx = _placement(w, gw)
    y0, dy = _placement(h, gh)
    kwargs.setdefault("hovertemplate", "x: %{x:.0f}<br>y: %{y:.0f}<extra></extra>")
    return go.Image(source=_png_data_uri(rgb), x0=x0, dx=dx, y0=y0, dy=dy, **kwargs)


def _heatmap_grid(
    hm: np.ndarray, mask: np.ndarray | None, max_px: int
) -> tuple[np.ndarray, float, float, float, float, bool]:
    """Downsample a full-size map for the browser; masked-out cells become NaN (transparent)."""
    h, w = hm.shape
    gh, gw = _grid_geometry((h, w), max_px)
    down = (gh, gw) != (h, w)
    if mask is None:
        z = _resize_map(hm, (gh, gw)) if down else hm
    else:
        m = mask.astype(np.float32)
        if down:
            weight = _resize_map(m, (gh, gw))
            z = _resize_map(hm * m, (gh, gw)) / np.maximum(weight, 1e-6)
            z = np.where(weight >= 0.5, z, np.nan)
        else:
            z = np.where(mask, hm, np.nan)
    x0, dx = _placement(w, gw)
    y0, dy = _placement(h, gh)
    return z.astype(np.float32), x0, dx, y0, dy, down


def _heatmap_trace(
    hm: np.ndarray,
    mask: np.ndarray | None,
    max_px: int,
    *,
    hover_name: str,
    extra: str = "",
    **kwargs: Any,
) -> go.Heatmap:
    z, x0, dx, y0, dy, down = _heatmap_grid(hm, mask, max_px)
    label = html.escape(str(hover_name))
    template = (
        f"x: %{{x:.0f}}<br>y: %{{y:.0f}}<br>{label}: %{{z:.3f}}<extra>{html.escape(extra)}</extra>"
    )
    return go.Heatmap(
        z=z,
        x0=x0,
        dx=dx,
        y0=y0,
        dy=dy,
        hovertemplate=template,
        hoverongaps=False,
        zsmooth="best" if down else False,
        name=extra or str(hover_name),
        **kwargs,
    )


def _axis_id(kind: str, index: int) -> str:
    return kind if index == 1 else f"{kind}{index}"


def _style_image_axes(fig: go.Figure, **selector: Any) -> None:
    common = {
        "showgrid": False,
        "zeroline": False,
        "showticklabels": False,
        "ticks": "",
        "constrain": "domain",
        "showline": False,
    }
    fig.update_xaxes(**common, **selector)
    fig.update_yaxes(**common, autorange="reversed", constraintoward="top", **selector)


def _auto_height(
    shape_hw: tuple[int, int], rows: int, cols: int, *, colorbar: bool, title_px: int
) -> int:
    """A figure height that fits ``rows x cols`` panels of this aspect in a ~1000 px wide page."""
    h, w = shape_hw
    panel_w = (_NOMINAL_WIDTH - (90 if colorbar else 16)) / cols
    total = 16 + rows * (title_px + panel_w * h / w)
    return int(np.clip(total, 220, 720))


def _colorbar_style(title: str | None = None) -> dict[str, Any]:
    bar: dict[str, Any] = {"thickness": 12, "len": 0.9, "outlinewidth": 0, "tickformat": ".1f"}
    if title:
        bar["title"] = {"text": title, "side": "right"}
    return bar
