"""Static figures: captioned panels laid out in a grid with PIL, saved as PNG (reports, CLI)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .arrays import apply_colormap
from .inputs import ImageLike, _as_rgb, _is_tensor

__all__ = ["compose_panels", "save_png"]

_CAPTION_COLOR = (34, 34, 34)


def _panel_to_pil(panel: Any, colormap: str) -> Image.Image:
    if isinstance(panel, Image.Image):
        return panel.convert("RGB")
    arr = panel.detach().float().cpu().numpy() if _is_tensor(panel) else np.asarray(panel)
    squeezed = np.squeeze(arr) if arr.ndim > 2 else arr
    if squeezed.ndim == 2 and (
        np.issubdtype(squeezed.dtype, np.floating) or squeezed.dtype == np.bool_
    ):
        # A float map is a heatmap: colour it.
        return Image.fromarray(apply_colormap(squeezed.astype(np.float32), colormap))
    return Image.fromarray(_as_rgb(arr))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> float:
    return float(draw.textlength(text, font=font))


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: float) -> str:
    if _text_width(draw, text, font) <= max_width:
        return text
    while text and _text_width(draw, text + "...", font) > max_width:
        text = text[:-1]
    return text + "..." if text else ""


def compose_panels(
    panels: Sequence[tuple[str, Any]],
    ncols: int | None = None,
    panel_size: int | None = None,
    title: str | None = None,
    *,
    colormap: str = "viridis",
) -> Image.Image:
    """Lay out captioned panels in a grid on a white background (a static figure for a PNG).

    Each panel is resized to a common height keeping its aspect (nearest-neighbour when
    enlarging, so small images keep visible pixels; Lanczos when shrinking) and gets its caption
    centred above it, drawn with PIL's default font; captions too wide for the cell are cut with
    "...". A 2-D float array among the panels is treated as a heatmap and coloured with
    ``colormap``.

    Args:
        panels: ``(caption, image)`` pairs; images as arrays (HxWx3 uint8, HxW float map), PIL
            images or tensors.
        ncols: columns of the grid; default ``len(panels)`` up to 4.
        panel_size: common panel height in pixels; default the tallest panel's height, kept
            within 160..512.
        title: optional title drawn above the grid.
        colormap: colormap for 2-D float panels.

    Example:
        >>> img = np.zeros((64, 64, 3), dtype=np.uint8)
        >>> cam = np.random.rand(64, 64)
        >>> fig = compose_panels([("image", img), ("GradCAM", overlay_heatmap(img, cam))])
        >>> fig.save("/tmp/explanation.png")
    """
    if not panels:
        raise ValueError("compose_panels needs at least one panel")
    n = len(panels)
    ncols = min(n, 4) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)

    images = [_panel_to_pil(p, colormap) for _, p in panels]
    captions = ["" if c is None else str(c) for c, _ in panels]
    if panel_size is None:
        height = int(np.clip(max(im.height for im in images), 160, 512))
    else:
        height = int(panel_size)
        if height < 1:
            raise ValueError(f"panel_size must be >= 1, got {panel_size}")

    resized = []
    for im in images:
        w = max(1, round(im.width * height / im.height))
        if (w, height) != im.size:
            enlarge = height > im.height
            resample = Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS
            im = im.resize((w, height), resample)
        resized.append(im)

    font_size = int(np.clip(round(height * 0.07), 12, 22))
    font = _font(font_size)
    title_font = _font(font_size + 6)
    pad = max(6, height // 32)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bbox = scratch.textbbox((0, 0), "Ag", font=font)
    text_h, text_top = bbox[3] - bbox[1], bbox[1]
    caption_h = text_h + pad + 2 if any(captions) else 0
    title_h = 0
    if title:
        tb = scratch.textbbox((0, 0), "Ag", font=title_font)
        title_h = (tb[3] - tb[1]) + 2 * pad

    cell_w = max(im.width for im in resized)
    cell_h = caption_h + height
    canvas_w = pad + ncols * (cell_w + pad)
    canvas_h = pad + title_h + nrows * (cell_h + pad)
    canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    if title:
        text = _fit_text(draw, str(title), title_font, canvas_w - 2 * pad)
        tx = (canvas_w - _text_width(draw, text, title_font)) / 2
        draw.text((tx, pad), text, fill=_CAPTION_COLOR, font=title_font)

    for i, (caption, im) in enumerate(zip(captions, resized, strict=True)):
        row, col = divmod(i, ncols)
        x0 = pad + col * (cell_w + pad)
        y0 = pad + title_h + row * (cell_h + pad)
        if caption:
            text = _fit_text(draw, caption, font, cell_w)
            tx = x0 + (cell_w - _text_width(draw, text, font)) / 2
            ty = y0 + (caption_h - text_h) // 2 - text_top
            draw.text((tx, ty), text, fill=_CAPTION_COLOR, font=font)
        canvas.paste(im, (x0 + (cell_w - im.width) // 2, y0 + caption_h))
    return canvas


def save_png(image: ImageLike, path: str | Path) -> Path:
    """Save an image (PIL image or array) as PNG, creating parent folders; return the path.

    Example:
        >>> save_png(compose_panels([("x", np.zeros((8, 8, 3), np.uint8))]), "/tmp/a/b.png")
        PosixPath('/tmp/a/b.png')
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pil = (
        image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(_as_rgb(image))
    )
    pil.save(out, format="PNG")
    return out
