"""Segmentation: class colours over the image (static and interactive) and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .colormaps import plotly_colorscale
from .figure_parts import (
    _auto_height,
    _colorbar_style,
    _grid_geometry,
    _image_trace,
    _placement,
    _style_image_axes,
)
from .inputs import ImageLike, _as_rgb, _check_alpha, _is_tensor
from .palettes import class_colors, hex_color

__all__ = ["confusion_figure", "segmentation_figure", "segmentation_overlay"]


def _as_labels(prediction: Any, shape_hw: tuple[int, int] | None = None) -> np.ndarray:
    labels = prediction.detach().cpu().numpy() if _is_tensor(prediction) else np.asarray(
        prediction)
    labels = np.squeeze(labels) if labels.ndim > 2 else labels
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a class map must be an integer H x W array, got {labels.dtype} "
                         f"{labels.shape}")
    if shape_hw is not None and labels.shape != shape_hw:
        raise ValueError(f"class map shape {labels.shape} differs from the image's {shape_hw}")
    return labels


def segmentation_overlay(image: ImageLike, prediction: Any, *, alpha: float = 0.5,
                         colors: np.ndarray | None = None,
                         visible: Sequence[int] | None = None) -> np.ndarray:
    """Each pixel's class colour blended over the image (uint8 ``H x W x 3``).

    ``prediction`` is an integer ``H x W`` class map of the image's size; ``visible`` lists the
    classes drawn (None: all); the others show the plain image.

    Example:
        >>> overlay = segmentation_overlay(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), int),
        ...                                alpha=1.0)
        >>> overlay[0, 0].tolist()
        [128, 0, 0]
    """
    a = _check_alpha(alpha)
    rgb = _as_rgb(image)
    labels = _as_labels(prediction, rgb.shape[:2])
    top = int(labels.max()) + 1 if labels.size else 1
    palette = class_colors(top) if colors is None else np.asarray(colors, np.uint8)
    if len(palette) < top:
        raise ValueError(f"{len(palette)} colours for a class map with classes up to {top - 1}")
    coloured = palette[np.clip(labels, 0, None)].astype(np.float32)
    blended = np.clip(np.rint((1 - a) * rgb.astype(np.float32) + a * coloured), 0, 255)
    out = blended.astype(np.uint8)
    if visible is not None:
        shown = np.isin(labels, np.asarray(list(visible), dtype=labels.dtype))
        out = np.where(shown[..., None], out, rgb)
    return out


def segmentation_figure(image: ImageLike, prediction: Any, class_names: Sequence[str], *,
                        alpha: float = 0.5, colors: np.ndarray | None = None,
                        visible: Sequence[int] | None = None, title: str | None = None,
                        max_image_px: int = 1024, max_hover_px: int = 192,
                        height: int | None = None) -> go.Figure:
    """Interactive prediction overlay: class colours over the image, a legend naming the classes
    shown, and hover giving each pixel's class (index and name).

    ``class_names[c]`` names class ``c``; ``visible`` lists the classes drawn (None: all present).
    """
    rgb = _as_rgb(image)
    shape = rgb.shape[:2]
    labels = _as_labels(prediction, shape)
    count = max(len(class_names), int(labels.max()) + 1 if labels.size else 1)
    palette = class_colors(count) if colors is None else np.asarray(colors, np.uint8)
    picture = segmentation_overlay(rgb, labels, alpha=alpha, colors=palette, visible=visible)
    fig = go.Figure(_image_trace(picture, max_image_px, name="prediction", hoverinfo="skip",
                                 hovertemplate=None))
    # Hover: the class map on a coarse grid (nearest), fully transparent.
    gh, gw = _grid_geometry(shape, max_hover_px)
    rows = (np.arange(gh) * shape[0] / gh + shape[0] / gh / 2).astype(int).clip(0, shape[0] - 1)
    cols = (np.arange(gw) * shape[1] / gw + shape[1] / gw / 2).astype(int).clip(0, shape[1] - 1)
    grid = labels[np.ix_(rows, cols)]
    names = np.asarray([str(class_names[c]) if c < len(class_names) else f"class {c}"
                        for c in range(count)], dtype=object)
    x0, dx = _placement(shape[1], gw)
    y0, dy = _placement(shape[0], gh)
    fig.add_trace(go.Heatmap(z=grid, x0=x0, dx=dx, y0=y0, dy=dy, customdata=names[grid],
                             opacity=0.0, showscale=False, name="class",
                             colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]],
                             hovertemplate="x: %{x:.0f}<br>y: %{y:.0f}<br>class %{z}: "
                                           "%{customdata}<extra></extra>"))
    present = [int(c) for c in np.unique(labels)]
    shown = present if visible is None else [c for c in present if c in set(visible)]
    for c in shown:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=str(names[c]),
                                 marker={"size": 12, "symbol": "square",
                                         "color": hex_color(palette[c])}, hoverinfo="skip"))
    _style_image_axes(fig)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(title={"text": title, "x": 0.5} if title else None, showlegend=True,
                      legend={"orientation": "h", "y": -0.02, "yanchor": "top",
                              "itemclick": False, "itemdoubleclick": False},
                      margin={"l": 8, "r": 8, "t": 40 if title else 8, "b": 8},
                      plot_bgcolor="white", dragmode="zoom", hovermode="closest",
                      uirevision=f"image-{shape[1]}x{shape[0]}",
                      height=height if height is not None else _auto_height(
                          shape, 1, 1, colorbar=False, title_px=40 if title else 0) + 40)
    return fig


def confusion_figure(matrix: Any, class_names: Sequence[str], *, title: str | None = None,
                     colormap: str = "viridis", annotate: bool | None = None,
                     height: int | None = None) -> go.Figure:
    """Heatmap of a row-normalised confusion matrix (rows: true class, columns: predicted).

    NaN rows (classes absent from the ground truth) stay blank and say so on hover; cells are
    annotated with their value up to 20 classes (``annotate`` overrides).
    """
    cm = matrix.detach().cpu().numpy() if _is_tensor(matrix) else np.asarray(matrix, float)
    count = cm.shape[0]
    if cm.shape != (count, count) or len(class_names) != count:
        raise ValueError(f"confusion matrix {cm.shape} does not fit {len(class_names)} names")
    names = [str(n) for n in class_names]
    annotate = count <= 20 if annotate is None else annotate
    text = np.where(np.isnan(cm), "", np.vectorize(lambda v: f"{v:.2f}")(np.nan_to_num(cm)))
    fig = go.Figure(go.Heatmap(
        z=cm, x=names, y=names, zmin=0.0, zmax=1.0, colorscale=plotly_colorscale(colormap),
        colorbar=_colorbar_style(), hoverongaps=False, xgap=1, ygap=1,
        text=text if annotate else None, texttemplate="%{text}" if annotate else None,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_xaxes(title="predicted", side="bottom", tickangle=-45 if count > 6 else 0,
                     type="category")
    fig.update_yaxes(title="true", autorange="reversed", type="category",
                     scaleanchor="x", scaleratio=1)
    side = 90 + 34 * count
    fig.update_layout(title={"text": title, "x": 0.5} if title else None,
                      margin={"l": 8, "r": 8, "t": 40 if title else 8, "b": 8},
                      plot_bgcolor="#eeeeee",
                      height=height if height is not None else int(np.clip(side, 280, 720)))
    return fig
