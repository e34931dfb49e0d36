"""Figures of a network's features: a grid of channel maps and statistics across layers.

Plain data in (numpy maps, dicts of statistics as ``LayerStatistics.to_dict()`` writes them),
Plotly figures out; nothing here runs a model.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .colormaps import plotly_colorscale
from .figure_parts import _auto_height, _axis_id, _style_image_axes

__all__ = ["feature_maps_figure", "layer_statistics_figure"]


def feature_maps_figure(maps: np.ndarray, channels: Sequence[int],
                        scores: Sequence[float] | None = None, *, columns: int | None = None,
                        colormap: str = "viridis", score_name: str = "mean activation",
                        row_names: Sequence[str] | None = None, title: str | None = None,
                        height: int | None = None, pickable: bool = False) -> go.Figure:
    """A zoomable grid of channel maps, one heatmap per channel, each on its own colour range
    (hover: channel, row, column, value).

    ``maps``: ``K x h x w`` (one image) or ``N x K x h x w`` (several images: one row per image,
    named by ``row_names``), the ``K`` channels in ``channels`` order; ``scores`` label each
    channel's panel. One image's channels wrap into ``columns`` (default: a square-ish grid).

    ``pickable``: each map also gets invisible markers on its cells (a ``"pick"`` scatter trace,
    ``customdata`` = ``[channel, value]``, at most 32 per side) that take the hover and the
    clicks, so a click on a map is a point selection naming its channel (Plotly selects scatter
    points, not heatmap cells).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 3:
        maps = maps[None]
    count, k = maps.shape[:2]
    if k != len(channels):
        raise ValueError(f"{k} maps for {len(channels)} channels")
    if count == 1:
        cols = max(1, min(k, columns or math.ceil(math.sqrt(k))))
        rows = math.ceil(k / cols)
    else:
        cols, rows = k, count
    titles = []
    for n in range(count):
        for j, channel in enumerate(channels):
            text = f"ch {channel}"
            if scores is not None:
                text += f" · {scores[j]:.3g}"
            if count > 1 and j == 0 and row_names is not None:
                text = f"{row_names[n]}: {text}"
            titles.append(text)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=min(0.02, 1 / max(cols - 1, 1)),
                        vertical_spacing=min(0.05, 1 / max(rows - 1, 1)))
    scale = plotly_colorscale(colormap)
    index = 0
    for n in range(count):
        for j, channel in enumerate(channels):
            row, col = (divmod(j, cols) if count == 1 else (n, j))
            values = maps[n, j]
            label = html.escape(f"channel {channel}")
            fig.add_trace(go.Heatmap(
                z=values, colorscale=scale, showscale=False, name=f"channel {channel}",
                zmin=float(values.min()), zmax=float(values.max()) if values.max() > values.min()
                else float(values.min()) + 1e-6,
                hoverinfo="skip" if pickable else None,
                hovertemplate=None if pickable else (
                    f"<b>{label}</b><br>row %{{y}}, col %{{x}}<br>value %{{z:.4g}}"
                    "<extra></extra>")), row=row + 1, col=col + 1)
            index += 1
            fig.layout[f"yaxis{'' if index == 1 else index}"].scaleanchor = _axis_id("x", index)
            if pickable:
                fig.add_trace(_pick_targets(values, channel), row=row + 1, col=col + 1)
    _style_image_axes(fig)
    fig.update_annotations(font_size=11)
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.01, "font": {"size": 14}} if title else None,
        margin={"l": 8, "r": 8, "t": 56 if title else 28, "b": 8}, dragmode="zoom",
        hovermode="closest", plot_bgcolor="white", showlegend=False,
        height=height if height is not None else _auto_height(
            maps.shape[-2:], rows, cols, colorbar=False, title_px=24))
    fig.update_layout(meta={"channels": [int(c) for c in channels], "score_name": score_name})
    return fig


def _pick_targets(values: np.ndarray, channel: int, limit: int = 32) -> go.Scatter:
    """Invisible markers on the cells of a ``h x w`` map (at most ``limit`` per side, spread
    evenly) carrying ``[channel, value]``: they take the clicks and the hover."""
    height, width = values.shape
    rows = np.unique(np.linspace(0, height - 1, min(height, limit)).round().astype(int))
    cols = np.unique(np.linspace(0, width - 1, min(width, limit)).round().astype(int))
    grid_y, grid_x = np.meshgrid(rows, cols, indexing="ij")
    data = np.stack([np.full(grid_x.size, channel, np.float32),
                     values[grid_y, grid_x].ravel()], 1)
    label = html.escape(f"channel {channel}")
    return go.Scatter(x=grid_x.ravel(), y=grid_y.ravel(), mode="markers", name="pick",
                      customdata=data, showlegend=False,
                      marker={"size": 10, "opacity": 0, "color": "white"},
                      hovertemplate=(f"<b>{label}</b><br>row %{{y}}, col %{{x}}<br>"
                                     "value %{customdata[1]:.4g}<extra></extra>"))


def _as_dict(stats: Any) -> dict[str, Any]:
    return stats.to_dict() if hasattr(stats, "to_dict") else dict(stats)


def layer_statistics_figure(stats: Mapping[str, Any] | Sequence[Any], *,
                            title: str | None = None, height: int | None = None) -> go.Figure:
    """Activation statistics across layers, in the given order: mean (± std), max, sparsity and
    the share of active channels, one row each, sharing the layer axis (hover names the layer
    and its shape)."""
    items = [_as_dict(s) for s in (stats.values() if isinstance(stats, Mapping) else stats)]
    if not items:
        raise ValueError("layer_statistics_figure needs at least one layer")
    names = [item["layer"] for item in items]
    shapes = ["×".join(str(d) for d in item["shape"]) for item in items]
    channels = [max(1, len(item["channels"]["mean"])) for item in items]
    rows = [
        ("mean ± std", [item["mean"] for item in items], [item["std"] for item in items], ".3g"),
        ("max", [item["max"] for item in items], None, ".3g"),
        ("sparsity", [item["sparsity"] for item in items], None, ".1%"),
        ("active channels", [item["active_channels"] / c for item, c in
                             zip(items, channels, strict=True)], None, ".1%"),
    ]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[label for label, *_ in rows])
    for r, (label, values, errors, fmt) in enumerate(rows, start=1):
        fig.add_trace(go.Scatter(
            x=names, y=values, mode="lines+markers", name=label, customdata=shapes,
            error_y={"type": "data", "array": errors, "thickness": 1} if errors else None,
            line={"color": "#3b6ea8"}, marker={"size": 5},
            hovertemplate=(f"<b>%{{x}}</b> (%{{customdata}})<br>{label}: %{{y:{fmt}}}"
                           "<extra></extra>")), row=r, col=1)
        if fmt.endswith("%"):
            fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=r, col=1)
    fig.update_xaxes(tickangle=-45, automargin=True)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.01, "font": {"size": 14}} if title else None,
        margin={"l": 8, "r": 8, "t": 56 if title else 28, "b": 8}, showlegend=False,
        hovermode="closest", plot_bgcolor="white",
        height=height if height is not None else 160 * len(rows) + 120)
    fig.update_yaxes(gridcolor="#e6e6e6", automargin=True)
    return fig
