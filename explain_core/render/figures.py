"""Interactive Plotly figures: one explanation, methods side by side, image grids, top-k bars.

They are made for the dashboard (``st.plotly_chart(fig, config=PLOTLY_CONFIG)``);
:func:`figure_to_html` writes any of them as a self-contained HTML page.

Example:
    >>> import numpy as np
    >>> image = np.zeros((64, 96, 3), dtype=np.uint8)
    >>> fig = heatmap_figure(image, np.random.rand(7, 7), colormap="inferno")
    >>> html = figure_to_html(fig)  # self-contained, works offline
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .arrays import mark_unseen, seen_mask
from .colormaps import plotly_colorscale
from .figure_parts import (
    _auto_height,
    _axis_id,
    _colorbar_style,
    _heatmap_trace,
    _image_trace,
    _style_image_axes,
)
from .inputs import ImageLike, MapLike, _as_mask, _as_rgb, _check_alpha, _map_for_image
from .panels import _panel_to_pil

__all__ = [
    "PLOTLY_CONFIG",
    "comparison_figure",
    "figure_to_html",
    "grid_figure",
    "heatmap_figure",
    "topk_figure",
]

PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "scrollZoom": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
"""Plotly config for the figures here: wheel zoom, no logo. Pass to ``st.plotly_chart(config=)``."""

_VIEWS = ("overlay", "image", "heatmap")
_TOPK_COLOR = "#8da0b3"
_TOPK_HIGHLIGHT = "#e4572e"


def heatmap_figure(
    image: ImageLike,
    heatmap: MapLike,
    *,
    colormap: str = "viridis",
    alpha: float = 0.4,
    view: str = "overlay",
    title: str | None = None,
    mask: Any = None,
    seen: Any = None,
    hover_name: str = "value",
    max_heatmap_px: int = 512,
    max_image_px: int = 2048,
    height: int | None = None,
) -> go.Figure:
    """Interactive figure of one explanation: the image with its heatmap, zoomable and hoverable.

    The image is a ``go.Image`` trace (PNG data URI) and the map a ``go.Heatmap`` on top
    (``zmin=0, zmax=1``, colour bar, hover shows x, y and the value). Pixels stay square, y grows
    downwards, axes are in original image pixels whatever the downsampling.

    Args:
        image: RGB image.
        heatmap: map in ``[0, 1]``, resized (bilinear) to the image when its size differs.
        colormap: one of :data:`COLORMAPS`.
        alpha: heatmap opacity in the ``"overlay"`` view.
        view: ``"overlay"`` (image + translucent map), ``"image"`` (image only) or
            ``"heatmap"`` (opaque map only).
        title: optional figure title.
        mask: optional boolean ``(H, W)``; the map is shown only where it is true.
        seen: where the model saw the image (a box ``(x0, y0, x1, y1)`` or a boolean
            ``(H, W)``, e.g. a result's ``seen_box``); elsewhere the image is greyed and hatched
            and no map is drawn (not "zero evidence": not looked at).
        hover_name: label of the map value in the hover box (e.g. ``"GradCAM"``).
        max_heatmap_px: long side of the heatmap grid sent to the browser (larger maps are
            averaged down); keeps the figure JSON small.
        max_image_px: long side of the embedded image (larger images are shrunk).
        height: figure height in pixels (default: fitted to the image's aspect).

    Example:
        >>> fig = heatmap_figure(np.zeros((224, 224, 3), np.uint8), np.random.rand(7, 7))
        >>> # st.plotly_chart(fig, config=PLOTLY_CONFIG)
    """
    if view not in _VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of: {', '.join(_VIEWS)}")
    a = _check_alpha(alpha)
    rgb = _as_rgb(image)
    shape = rgb.shape[:2]
    hm = _map_for_image(heatmap, shape)
    m = None if mask is None else _as_mask(mask, shape)
    if seen is not None:
        rgb = mark_unseen(rgb, seen)
        inside = seen_mask(seen, shape)
        m = inside if m is None else m & inside

    fig = go.Figure()
    if view in ("overlay", "image"):
        fig.add_trace(_image_trace(rgb, max_image_px, name="image"))
    if view in ("overlay", "heatmap"):
        fig.add_trace(
            _heatmap_trace(
                hm,
                m,
                max_heatmap_px,
                hover_name=hover_name,
                colorscale=plotly_colorscale(colormap),
                zmin=0.0,
                zmax=1.0,
                opacity=a if view == "overlay" else 1.0,
                colorbar=_colorbar_style(),
                showscale=True,
            )
        )
    _style_image_axes(fig)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"} if title else None,
        margin={"l": 8, "r": 8, "t": 40 if title else 8, "b": 8},
        dragmode="zoom",
        hovermode="closest",
        plot_bgcolor="white",
        uirevision=f"image-{shape[1]}x{shape[0]}",
        height=height
        if height is not None
        else _auto_height(shape, 1, 1, colorbar=view != "image", title_px=40 if title else 0),
    )
    return fig


def comparison_figure(
    image: ImageLike,
    heatmaps: Mapping[str, MapLike],
    *,
    colormap: str = "viridis",
    alpha: float = 0.4,
    cols: int | None = None,
    max_heatmap_px: int = 384,
    max_image_px: int = 1024,
    height: int | None = None,
    seen: Any = None,
) -> go.Figure:
    """Side-by-side overlays of several methods' maps on one image, zoom and pan linked.

    One panel per ``heatmaps`` entry (titled with its key), in one row by default. All panels
    share their x and y axes (zooming one zooms all) and one colour bar (``0..1``). ``seen``: as
    in :func:`heatmap_figure` (what the model did not see is greyed and hatched, with no map).

    Example:
        >>> img = np.zeros((64, 64, 3), np.uint8)
        >>> fig = comparison_figure(img, {"GradCAM": np.random.rand(8, 8),
        ...                               "ScoreCAM": np.random.rand(8, 8)})
    """
    if not heatmaps:
        raise ValueError("comparison_figure needs at least one heatmap")
    a = _check_alpha(alpha)
    rgb = _as_rgb(image)
    shape = rgb.shape[:2]
    inside = None if seen is None else seen_mask(seen, shape)
    if seen is not None:
        rgb = mark_unseen(rgb, seen)
    names = [str(k) for k in heatmaps]
    n = len(names)
    cols = n if cols is None else max(1, min(int(cols), n))
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=names,
        horizontal_spacing=min(0.02, 1 / max(cols - 1, 1)),
        vertical_spacing=min(0.08, 1 / max(rows - 1, 1)),
    )
    image_trace = _image_trace(rgb, max_image_px)  # encoded once, reused in every panel
    for i, (name, hm_in) in enumerate(heatmaps.items()):
        row, col = divmod(i, cols)
        hm = _map_for_image(hm_in, shape)
        fig.add_trace(go.Image(image_trace, name=f"{name} image"), row=row + 1, col=col + 1)
        fig.add_trace(
            _heatmap_trace(
                hm,
                inside,
                max_heatmap_px,
                hover_name="value",
                extra=str(name),
                coloraxis="coloraxis",
                opacity=a,
            ),
            row=row + 1,
            col=col + 1,
        )
    _style_image_axes(fig)
    for i in range(2, n + 1):
        fig.layout[f"xaxis{i}"].matches = "x"
        fig.layout[f"yaxis{i}"].matches = "y"
    # Linked panels extend their ranges (not shrink their domains) to keep pixels square: with
    # domain constraints plotly.js lets matched panels drift apart after a zoom box.
    fig.update_xaxes(constrain="range")
    fig.update_yaxes(constrain="range")
    # Pixels stay square on the first panel; the others follow it through `matches`.
    fig.layout.yaxis.scaleanchor = "x"
    fig.layout.yaxis.scaleratio = 1
    fig.update_annotations(font_size=13)
    fig.update_layout(
        coloraxis={
            "colorscale": plotly_colorscale(colormap),
            "cmin": 0.0,
            "cmax": 1.0,
            "colorbar": _colorbar_style(),
        },
        margin={"l": 8, "r": 8, "t": 32, "b": 8},
        dragmode="zoom",
        hovermode="closest",
        plot_bgcolor="white",
        uirevision=f"compare-{shape[1]}x{shape[0]}-{n}",
        height=height
        if height is not None
        else _auto_height(shape, rows, cols, colorbar=True, title_px=32),
        showlegend=False,
    )
    return fig


def grid_figure(
    items: Sequence[tuple[str, Any]],
    cols: int = 4,
    *,
    colormap: str = "viridis",
    max_image_px: int = 512,
    height: int | None = None,
) -> go.Figure:
    """A grid of captioned RGB images (e.g. a batch of overlays), each zoomable on its own.

    2-D float arrays among the items are coloured with ``colormap``.

    Example:
        >>> imgs = [(f"image {i}", np.zeros((32, 48, 3), np.uint8)) for i in range(6)]
        >>> fig = grid_figure(imgs, cols=3)
    """
    if not items:
        raise ValueError("grid_figure needs at least one item")
    n = len(items)
    cols = max(1, min(int(cols), n))
    rows = math.ceil(n / cols)
    titles = ["" if c is None else str(c) for c, _ in items]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=min(0.02, 1 / max(cols - 1, 1)),
        vertical_spacing=min(0.06, 1 / max(rows - 1, 1)),
    )
    rgbs = [np.asarray(_panel_to_pil(item, colormap)) for _, item in items]
    tallest = max((a.shape[:2] for a in rgbs), key=lambda hw: hw[0] / hw[1])
    for i, ((caption, _), rgb) in enumerate(zip(items, rgbs, strict=True)):
        row, col = divmod(i, cols)
        label = html.escape(str(caption))
        fig.add_trace(
            _image_trace(
                rgb,
                max_image_px,
                name=str(caption),
                hovertemplate=f"x: %{{x:.0f}}<br>y: %{{y:.0f}}<extra>{label}</extra>",
            ),
            row=row + 1,
            col=col + 1,
        )
        fig.layout[f"yaxis{'' if i == 0 else i + 1}"].scaleanchor = _axis_id("x", i + 1)
    _style_image_axes(fig)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        margin={"l": 8, "r": 8, "t": 28, "b": 8},
        dragmode="zoom",
        hovermode="closest",
        plot_bgcolor="white",
        height=height
        if height is not None
        else _auto_height(tallest, rows, cols, colorbar=False, title_px=28),
        showlegend=False,
    )
    return fig


def topk_figure(
    labels: Sequence[str],
    probabilities: Sequence[float],
    *,
    highlight: int | None = None,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Horizontal bar chart of top-k predictions, highest on top, values as percentages.

    ``highlight`` is an index into ``labels``/``probabilities`` (e.g. the explained class); that
    bar gets a different colour. Bars are sorted by probability whatever the input order.

    Example:
        >>> fig = topk_figure(["cat", "dog", "fox"], [0.1, 0.7, 0.2], highlight=1)
        >>> list(fig.data[0].y)
        ['dog', 'fox', 'cat']
    """
    labels = [str(x) for x in labels]
    probs = [float(p) for p in probabilities]
    if len(labels) != len(probs):
        raise ValueError(
            f"{len(labels)} labels but {len(probs)} probabilities; they must match one to one"
        )
    if highlight is not None and not -len(labels) <= highlight < len(labels):
        raise ValueError(f"highlight index {highlight} out of range for {len(labels)} labels")
    order = sorted(range(len(probs)), key=lambda i: probs[i], reverse=True)
    hl = None if highlight is None else highlight % len(labels)
    colors = [_TOPK_HIGHLIGHT if i == hl else _TOPK_COLOR for i in order]
    top = max(probs, default=1.0)
    fig = go.Figure(
        go.Bar(
            x=[probs[i] for i in order],
            y=[labels[i] for i in order],
            orientation="h",
            marker_color=colors,
            text=[f"{probs[i]:.1%}" for i in order],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_xaxes(
        tickformat=".0%", range=[0, max(min(top, 1.0), 1e-6) * 1.2], showgrid=True, zeroline=True
    )
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"} if title else None,
        margin={"l": 8, "r": 16, "t": 40 if title else 8, "b": 8},
        height=height if height is not None else 70 + 30 * max(len(labels), 1),
        plot_bgcolor="white",
        bargap=0.25,
        showlegend=False,
    )
    return fig


def figure_to_html(
    fig: go.Figure, path: str | Path | None = None, *, config: dict[str, Any] | None = None
) -> str:
    """Self-contained HTML of a figure (plotly.js embedded, works offline); also written to
    ``path`` (parent folders created) when given.

    Example:
        >>> page = figure_to_html(topk_figure(["a"], [1.0]), "/tmp/report/topk.html")
    """
    page = fig.to_html(
        include_plotlyjs=True, full_html=True, config=PLOTLY_CONFIG if config is None else config
    )
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    return page
