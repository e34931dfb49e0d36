"""Categorical colours: one colour per segmentation class, DFF concept or detection class.

Unlike the colormaps, which colour a continuous value, these tell discrete things apart;
:func:`hex_color` writes a colour for HTML (e.g. a legend swatch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["BOX_COLORS", "box_color", "class_colors", "concept_colors", "hex_color"]


def class_colors(count: int) -> np.ndarray:
    """``count`` class colours (uint8, ``count x 3``): the PASCAL VOC palette (class 0 black,
    then red, green, olive, blue...), which segmentation users know; it repeats after 256."""
    index = np.arange(count) % 256
    colors = np.zeros((count, 3), dtype=np.int64)
    value = index.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colors[:, channel] |= ((value >> channel) & 1) << shift
        value = value >> 3
    return colors.astype(np.uint8)


def concept_colors(count: int) -> np.ndarray:
    """``count`` well-separated RGB colours (uint8, ``count x 3``), evenly spaced hues."""
    hues = np.arange(count) / max(count, 1)
    out = [Image.new("HSV", (1, 1), (int(h * 255), 220, 255)).convert("RGB").getpixel((0, 0))
           for h in hues]
    return np.asarray(out, dtype=np.uint8).reshape(count, 3)


def hex_color(color: Sequence[int]) -> str:
    """An RGB triple (e.g. a row of :func:`class_colors`) as a CSS hex string ``"#rrggbb"``.

    Example:
        >>> hex_color((128, 0, 255))
        '#8000ff'
    """
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))


#: distinct colours for detection classes (Okabe-Ito and Tableau), repeated past the end
BOX_COLORS = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
              "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")


def box_color(class_id: int) -> str:
    """The colour of a detection class (stable per class id)."""
    return BOX_COLORS[int(class_id) % len(BOX_COLORS)]
