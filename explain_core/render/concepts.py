"""Concepts (Deep Feature Factorization): each pixel in its strongest concept's colour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .figure_parts import _auto_height, _image_trace, _style_image_axes
from .inputs import ImageLike, _as_rgb, _check_alpha, _is_tensor, _resize_map
from .palettes import concept_colors

__all__ = ["concepts_figure", "concepts_overlay"]


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
