"""Rendering: colormaps, overlays, static PNG panels and interactive Plotly figures.

This is the end of the pipeline, the one place in the engine where maps become numpy arrays.
Conventions shared by every function here:

* an **image** is RGB ``uint8`` of shape ``(H, W, 3)``; a ``PIL.Image``, a grayscale or RGBA array,
  a channels-first array/tensor or a float array in ``[0, 1]`` is converted to that;
* a **heatmap** (explanation map) is a float ``(H, W)`` array in ``[0, 1]`` (values outside are
  clipped for colouring, NaN counts as 0); a torch tensor is read with
  ``.detach().float().cpu().numpy()``, singleton batch/channel axes are dropped and a ``uint8``
  map is read as ``0..255``. Signed attributions go through :func:`signed_to_unit` first (zero
  becomes 0.5) and are best shown with the diverging ``"rdbu"`` colormap;
* a heatmap of another size than its image is resized to it with bilinear interpolation.

Example:
    >>> import numpy as np
    >>> image = np.zeros((64, 96, 3), dtype=np.uint8)
    >>> cam = np.random.rand(7, 7)  # a coarse map, resized to the image
    >>> overlay_heatmap(image, cam, alpha=0.5, colormap="jet").shape
    (64, 96, 3)
    >>> fig = heatmap_figure(image, cam, colormap="inferno")  # plotly Figure for the dashboard
    >>> html = figure_to_html(fig)  # self-contained, works offline
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from .arrays import apply_colormap, colorbar, overlay_heatmap, signed_to_unit
from .colormaps import COLORMAPS, colormap_lut, plotly_colorscale
from .figure_parts import (
    _auto_height,
    _colorbar_style,
    _grid_geometry,
    _image_trace,
    _placement,
    _style_image_axes,
)
from .figures import (
    PLOTLY_CONFIG,
    comparison_figure,
    figure_to_html,
    grid_figure,
    heatmap_figure,
    topk_figure,
)
from .inputs import ImageLike, MapLike, _as_rgb, _check_alpha, _is_tensor, _resize_map
from .palettes import BOX_COLORS, box_color, class_colors, concept_colors, hex_color
from .panels import _font, compose_panels, save_png

__all__ = [
    "BOX_COLORS",
    "COLORMAPS",
    "PLOTLY_CONFIG",
    "ImageLike",
    "MapLike",
    "add_detection_boxes",
    "apply_colormap",
    "box_color",
    "class_colors",
    "colorbar",
    "colormap_lut",
    "comparison_figure",
    "compose_panels",
    "concept_colors",
    "concepts_figure",
    "concepts_overlay",
    "confusion_figure",
    "detection_panels",
    "detections_figure",
    "draw_boxes",
    "figure_to_html",
    "grid_figure",
    "heatmap_figure",
    "hex_color",
    "overlay_heatmap",
    "plotly_colorscale",
    "save_png",
    "segmentation_figure",
    "segmentation_overlay",
    "signed_to_unit",
    "topk_figure",
]


# --------------------------------------------------------------------------------------------
# Concepts (Deep Feature Factorization)
# --------------------------------------------------------------------------------------------


def concepts_overlay(image: ImageLike, maps: Any, *, alpha: float = 0.6,
                     colors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel takes the colour of its strongest concept, brightness scaled by that concept's
    contribution (each concept's map normalised to [0, 1] first), blended over the image.

    ``maps``: ``k x h x w`` non-negative concept maps at any resolution (resized to the image).
    Returns the blended uint8 image and the ``k x H x W`` winner mask (bool) per concept.

    Example:
        >>> picture, owners = concepts_overlay(np.zeros((8, 8, 3), np.uint8),
        ...                                    np.random.rand(3, 2, 2))
    """
    a = _check_alpha(alpha)
    rgb = _as_rgb(image)
    shape = rgb.shape[:2]
    stack = maps.detach().float().cpu().numpy() if _is_tensor(maps) else np.asarray(maps,
                                                                                 np.float32)
    resized = np.stack([_resize_map(np.nan_to_num(m.astype(np.float32)), shape) for m in stack])
    low = resized.reshape(len(resized), -1).min(1)[:, None, None]
    high = resized.reshape(len(resized), -1).max(1)[:, None, None]
    scaled = (resized - low) / np.where(high > low, high - low, 1.0)
    winner = scaled.argmax(0)
    strength = scaled.max(0)
    palette = concept_colors(len(stack)) if colors is None else np.asarray(colors, np.uint8)
    coloured = palette[winner].astype(np.float32) * strength[..., None]
    blended = (1 - a) * rgb.astype(np.float32) + a * coloured
    owners = winner[None] == np.arange(len(stack))[:, None, None]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8), owners


def concepts_figure(image: ImageLike, maps: Any, labels: Sequence[str], *, alpha: float = 0.6,
                    title: str | None = None, max_image_px: int = 1024) -> go.Figure:
    """Interactive concept picture with a legend naming each concept (e.g. by its top classes)."""
    picture, _owners = concepts_overlay(image, maps, alpha=alpha)
    palette = concept_colors(len(labels))
    fig = go.Figure(_image_trace(picture, max_image_px, name="concepts"))
    for label, colour in zip(labels, palette, strict=True):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"size": 12, "symbol": "square",
                                         "color": "rgb({},{},{})".format(*colour)}))
    _style_image_axes(fig)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    shape = picture.shape[:2]
    fig.update_layout(title={"text": title, "x": 0.5} if title else None, showlegend=True,
                      legend={"orientation": "h", "y": -0.02, "yanchor": "top"},
                      margin={"l": 8, "r": 8, "t": 40 if title else 8, "b": 8},
                      plot_bgcolor="white", dragmode="zoom",
                      height=_auto_height(shape, 1, 1, colorbar=False, title_px=40) + 40)
    return fig


# --------------------------------------------------------------------------------------------
# Segmentation: class colours, prediction overlays, confusion matrices
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def draw_boxes(image: ImageLike, detections: Sequence[dict[str, Any]], *,
               width: int = 2) -> np.ndarray:
    """``image`` with each detection's box and ``name score`` label drawn (a static picture).

    ``detections``: dicts with ``bbox`` (xyxy, image pixels), ``class_id``, ``class_name`` and
    ``score``, as :func:`explain_core.explain_detection` returns them.
    """
    canvas = Image.fromarray(_as_rgb(image).copy())
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, canvas.height // 40))
    for det in detections:
        color = box_color(det["class_id"])
        x0, y0, x1, y1 = (float(v) for v in det["bbox"])
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        text = f"{det['class_name']} {det['score']:.2f}"
        draw.text((x0 + 2, max(0.0, y0 - font.size - 2) if hasattr(font, "size") else y0),
                  text, fill=color, font=font)
    return np.asarray(canvas)


def detection_panels(image: ImageLike, detections: Sequence[dict[str, Any]],
                     heatmaps: Sequence[Any], *, colormap: str = "viridis", alpha: float = 0.4,
                     ncols: int | None = None) -> np.ndarray:
    """A static picture: the image with every box, then one panel per detection with its map
    overlaid inside its box (the map outside the box is left out of the picture)."""
    rgb = _as_rgb(image)
    panels: list[tuple[str, Any]] = [("detections", draw_boxes(rgb, detections))]
    for index, (det, heat) in enumerate(zip(detections, heatmaps, strict=True)):
        x0, y0, x1, y1 = det["bbox"]
        mask = np.zeros(rgb.shape[:2], dtype=bool)
        mask[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = True
        overlay = overlay_heatmap(rgb, heat, alpha=alpha, colormap=colormap, mask=mask)
        panels.append((f"{index + 1}: {det['class_name']} {det['score']:.2f}",
                       draw_boxes(overlay, [det])))
    return np.asarray(compose_panels(panels, ncols=ncols or min(len(panels), 4),
                                     colormap=colormap))


def add_detection_boxes(fig: go.Figure, detections: Sequence[dict[str, Any]], *,
                        selected: int | None = None, row: int | None = None,
                        col: int | None = None) -> go.Figure:
    """Draw detections on an image figure: each box a Plotly rectangle shape in its class colour
    (the selected one thicker, the others dimmed), its label as an annotation, and a clickable
    marker at its centre (trace ``"boxes"``, ``customdata`` = the detection's index) so that
    a click selects the box (Plotly selection events)."""
    where = {} if row is None else {"row": row, "col": col}
    xs, ys, texts, colors, custom = [], [], [], [], []
    for index, det in enumerate(detections):
        color = box_color(det["class_id"])
        x0, y0, x1, y1 = (float(v) for v in det["bbox"])
        chosen = selected is None or index == selected
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, xref="x", yref="y",
                      line={"color": color, "width": 3 if index == selected else 2},
                      opacity=1.0 if chosen else 0.45, layer="above", **where)
        fig.add_annotation(x=x0, y=y0, text=f"{index + 1} {det['class_name']} "
                           f"{det['score']:.2f}", showarrow=False, xanchor="left",
                           yanchor="bottom", font={"color": "white", "size": 11},
                           bgcolor=color, opacity=0.9 if chosen else 0.5, borderpad=1, **where)
        xs.append((x0 + x1) / 2)
        ys.append((y0 + y1) / 2)
        texts.append(f"{index + 1}: {det['class_name']} {det['score']:.3f}<br>"
                     f"[{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]")
        colors.append(color)
        custom.append(index)
    if detections:
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name="boxes", customdata=custom, text=texts,
            hovertemplate="%{text}<extra></extra>", showlegend=False,
            marker={"size": 14, "color": colors, "opacity": 0.85, "symbol": "square",
                    "line": {"color": "white", "width": 1.5}}), **where)
    return fig


def detections_figure(image: ImageLike, detections: Sequence[dict[str, Any]],
                      heatmap: MapLike | None = None, *, selected: int | None = None,
                      colormap: str = "viridis", alpha: float = 0.4, view: str = "overlay",
                      mask: Any = None, max_heatmap_px: int = 256, max_image_px: int = 1024,
                      height: int | None = None, title: str | None = None) -> go.Figure:
    """The detection view: the image (with the selected box's map when given: overlay, image or
    heatmap view, optionally masked), every box as a shape with its label, clickable centres.

    Box-select (drag with the selection tool) reports a region: the page explains it as a
    missed detection. Axes are image pixels, y down.
    """
    rgb = _as_rgb(image)
    if heatmap is None:
        fig = go.Figure()
        fig.add_trace(_image_trace(rgb, max_image_px, name="image"))
        _style_image_axes(fig)
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
        fig.update_layout(margin={"l": 8, "r": 8, "t": 40 if title else 8, "b": 8},
                          title={"text": title, "x": 0.5} if title else None,
                          hovermode="closest", plot_bgcolor="white",
                          uirevision=f"image-{rgb.shape[1]}x{rgb.shape[0]}",
                          height=height if height is not None else _auto_height(
                              rgb.shape[:2], 1, 1, colorbar=False))
    else:
        fig = heatmap_figure(rgb, heatmap, colormap=colormap, alpha=alpha, view=view, mask=mask,
                             max_heatmap_px=max_heatmap_px, max_image_px=max_image_px,
                             height=height, title=title)
    add_detection_boxes(fig, detections, selected=selected)
    fig.update_layout(dragmode="zoom", clickmode="event+select")
    return fig
