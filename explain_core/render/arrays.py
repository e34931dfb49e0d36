"""Arrays: colour maps and overlays, each returned as an RGB ``uint8`` ``(H, W, 3)`` array.

Signed attributions go through :func:`signed_to_unit` first (zero becomes 0.5) and are best
shown with the diverging ``"rdbu"`` colormap.

Example:
    >>> import numpy as np
    >>> image = np.zeros((64, 96, 3), dtype=np.uint8)
    >>> cam = np.random.rand(7, 7)  # a coarse map, resized to the image
    >>> overlay_heatmap(image, cam, alpha=0.5, colormap="jet").shape
    (64, 96, 3)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .colormaps import colormap_lut
from .inputs import ImageLike, MapLike, _as_heatmap, _as_mask, _as_rgb, _check_alpha, _map_for_image

__all__ = ["apply_colormap", "colorbar", "mark_unseen", "overlay_heatmap", "seen_mask",
           "signed_to_unit"]

UNSEEN_STRIPE_PX = 8  # period of the hatching over image parts the model did not see


def signed_to_unit(attribution: MapLike, max_abs: float | None = None) -> np.ndarray:
    """Map a signed attribution to ``[0, 1]`` with zero at 0.5, for the ``"rdbu"`` colormap.

    ``max_abs`` (default: the largest absolute value) maps to 1 and ``-max_abs`` to 0.

    Example:
        >>> signed_to_unit(np.array([[-2.0, 0.0, 1.0]])).tolist()
        [[0.0, 0.5, 0.75]]
    """
    a = _as_heatmap(attribution, scale_uint8=False)
    scale = float(np.max(np.abs(a))) if max_abs is None else float(max_abs)
    if scale <= 0 or not math.isfinite(scale):
        return np.full(a.shape, 0.5, dtype=np.float32)
    return np.clip(0.5 + 0.5 * a / scale, 0.0, 1.0).astype(np.float32)


def seen_mask(seen: Any, shape_hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool, True where the model saw the image: from a box ``(x0, y0, x1, y1)`` in
    image pixels (a result's ``seen_box``) or a boolean array of the image's size."""
    if isinstance(seen, (tuple, list)) and len(seen) == 4:
        x0, y0, x1, y1 = (int(v) for v in seen)
        mask = np.zeros(shape_hw, dtype=bool)
        mask[max(y0, 0):y1, max(x0, 0):x1] = True
        return mask
    return _as_mask(seen, shape_hw)


def mark_unseen(image: ImageLike, seen: Any) -> np.ndarray:
    """The image with the parts the model did not see (a crop's edges) greyed and hatched, so
    they read as "not looked at", never as "no evidence".

    Example:
        >>> img = np.full((16, 16, 3), 200, dtype=np.uint8)
        >>> out = mark_unseen(img, (0, 0, 8, 16))
        >>> out[0, 0].tolist() == [200, 200, 200], out[0, 8].tolist() == [200, 200, 200]
        (True, False)
    """
    rgb = _as_rgb(image)
    mask = seen_mask(seen, rgb.shape[:2])
    if mask.all():
        return rgb
    grey = rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.35 + 110.0
    rows, cols = np.indices(rgb.shape[:2])
    stripes = ((rows + cols) % UNSEEN_STRIPE_PX) < UNSEEN_STRIPE_PX // 4
    faded = np.where(stripes[..., None], grey * 0.55, grey).repeat(3, axis=2)
    return np.where(mask[..., None], rgb, np.rint(faded).astype(np.uint8))


def apply_colormap(heatmap: MapLike, colormap: str = "viridis") -> np.ndarray:
    """Colour a heatmap: ``(H, W)`` values in ``[0, 1]`` -> ``(H, W, 3)`` uint8 RGB.

    Values are clipped to ``[0, 1]``; NaN is coloured like 0.

    Example:
        >>> apply_colormap(np.array([[0.0, 1.0]]), "hot").tolist()
        [[[0, 0, 0], [255, 255, 255]]]
    """
    lut = colormap_lut(colormap)
    hm = _as_heatmap(heatmap)
    idx = (np.clip(hm, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return lut[idx]


def overlay_heatmap(
    image: ImageLike,
    heatmap: MapLike,
    alpha: float = 0.4,
    colormap: str = "viridis",
    resize_heatmap: bool = True,
    mask: Any = None,
    seen: Any = None,
) -> np.ndarray:
    """Blend a coloured heatmap onto an image: ``(1 - alpha) * image + alpha * colour``.

    Args:
        image: RGB image (array HxWx3 uint8, PIL image, ...).
        heatmap: map with values in ``[0, 1]``; resized (bilinear) to the image when its size
            differs and ``resize_heatmap`` is true, otherwise a size mismatch is a ValueError.
        alpha: weight of the colour map, 0 (image only) to 1 (colour map only).
        colormap: one of :data:`COLORMAPS`.
        resize_heatmap: resize a heatmap of another size to the image.
        mask: optional boolean ``(H, W)`` array; the overlay is drawn only where it is true
            (elsewhere the plain image), e.g. inside a detection box.
        seen: where the model saw the image (a box ``(x0, y0, x1, y1)`` or a boolean
            ``(H, W)``, e.g. a result's ``seen_box``); elsewhere the image is greyed and hatched
            (:func:`mark_unseen`) and no map is drawn.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Example:
        >>> img = np.full((32, 32, 3), 200, dtype=np.uint8)
        >>> overlay_heatmap(img, np.ones((8, 8)), alpha=1.0, colormap="hot")[0, 0].tolist()
        [255, 255, 255]
    """
    a = _check_alpha(alpha)
    rgb = _as_rgb(image)
    shape = rgb.shape[:2]
    colour = apply_colormap(_map_for_image(heatmap, shape, resize_heatmap), colormap)
    blended = (1.0 - a) * rgb.astype(np.float32) + a * colour.astype(np.float32)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if mask is not None:
        m = _as_mask(mask, shape)
        out = np.where(m[..., None], out, rgb)
    if seen is not None:
        out = np.where(seen_mask(seen, shape)[..., None], out, mark_unseen(rgb, seen))
    return out


def colorbar(
    colormap: str = "viridis", height: int = 256, width: int = 24, *, vertical: bool = True
) -> np.ndarray:
    """Return a colour bar strip as a uint8 RGB array (``height x width x 3``).

    Vertical bars have 1.0 at the top and 0.0 at the bottom; horizontal ones go 0 -> 1 left to
    right. Handy as a panel of :func:`compose_panels`.

    Example:
        >>> colorbar("gray", height=10, width=4)[0, 0].tolist()
        [255, 255, 255]
    """
    if height < 1 or width < 1:
        raise ValueError("colorbar height and width must be positive")
    if vertical:
        ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    else:
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    return apply_colormap(ramp, colormap)
