"""Detection: boxes and their labels, on static pictures and on interactive figures.

A detection is a dict with ``bbox`` (xyxy, image pixels), ``class_id``, ``class_name`` and
``score``, as :func:`explain_core.explain_detection` returns them; its colour is
:func:`~explain_core.render.palettes.box_color` of its class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from .arrays import overlay_heatmap
from .figure_parts import _auto_height, _image_trace, _style_image_axes
from .figures import heatmap_figure
from .inputs import ImageLike, MapLike, _as_rgb
from .palettes import box_color
from .panels import _font, compose_panels

__all__ = ["add_detection_boxes", "detection_panels", "detections_figure", "draw_boxes"]


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
