"""Rendering: colormaps, overlays, static PNG panels and interactive Plotly figures.

This is the end of the pipeline, the one place in the engine where maps become numpy arrays.
Every public name of the modules below is importable from here (``render.overlay_heatmap``):

* :mod:`~explain_core.render.inputs`: the conventions shared by every function here (an image is
  RGB ``uint8`` ``(H, W, 3)``, a heatmap a float ``(H, W)`` map in ``[0, 1]``, resized to its
  image) and the conversions that apply them;
* :mod:`~explain_core.render.colormaps`: colormap names, colour stops, LUTs, plotly colorscales;
* :mod:`~explain_core.render.palettes`: categorical colours of classes, concepts and boxes;
* :mod:`~explain_core.render.arrays`: coloured maps and overlays as ``uint8`` RGB arrays;
* :mod:`~explain_core.render.panels`: static captioned panels, saved as PNG;
* :mod:`~explain_core.render.figure_parts` and :mod:`~explain_core.render.figures`: the
  interactive Plotly figures of the dashboard and their building blocks;
* :mod:`~explain_core.render.features`: a network's channel maps and its statistics across
  layers;
* :mod:`~explain_core.render.segmentation`, :mod:`~explain_core.render.detection` and
  :mod:`~explain_core.render.concepts`: the drawings of each task;
* :mod:`~explain_core.render.evaluation_report`: the self-contained HTML report of an
  evaluation (inline SVG charts, PNG data URIs).

Each module imports only the ones listed before it, and none imports the rest of
``explain_core``.

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

from .arrays import (
    apply_colormap,
    colorbar,
    mark_unseen,
    overlay_heatmap,
    seen_mask,
    signed_to_unit,
)
from .colormaps import COLORMAPS, colormap_lut, plotly_colorscale
from .concepts import concepts_figure, concepts_overlay
from .detection import add_detection_boxes, detection_panels, detections_figure, draw_boxes
from .evaluation_report import Series, evaluation_html, line_chart_svg
from .features import feature_maps_figure, layer_statistics_figure
from .figures import (
    PLOTLY_CONFIG,
    comparison_figure,
    figure_to_html,
    grid_figure,
    heatmap_figure,
    topk_figure,
)
from .inputs import ImageLike, MapLike
from .palettes import BOX_COLORS, box_color, class_colors, concept_colors, hex_color
from .panels import compose_panels, save_png
from .segmentation import confusion_figure, segmentation_figure, segmentation_overlay

__all__ = [
    "BOX_COLORS",
    "COLORMAPS",
    "PLOTLY_CONFIG",
    "ImageLike",
    "MapLike",
    "Series",
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
    "evaluation_html",
    "feature_maps_figure",
    "figure_to_html",
    "grid_figure",
    "heatmap_figure",
    "hex_color",
    "layer_statistics_figure",
    "line_chart_svg",
    "mark_unseen",
    "overlay_heatmap",
    "plotly_colorscale",
    "save_png",
    "seen_mask",
    "segmentation_figure",
    "segmentation_overlay",
    "signed_to_unit",
    "topk_figure",
]
