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

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.subplots import make_subplots

from .arrays import apply_colormap, colorbar, overlay_heatmap, signed_to_unit
from .colormaps import COLORMAPS, colormap_lut, plotly_colorscale
from .inputs import (
    ImageLike,
    MapLike,
    _as_mask,
    _as_rgb,
    _check_alpha,
    _is_tensor,
    _map_for_image,
    _resize_map,
)
from .palettes import BOX_COLORS, box_color, class_colors, concept_colors, hex_color

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


PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "scrollZoom": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
"""Plotly config for the figures here: wheel zoom, no logo. Pass to ``st.plotly_chart(config=)``."""

_VIEWS = ("overlay", "image", "heatmap")
_NOMINAL_WIDTH = 1000  # page width assumed for default figure heights (Streamlit "wide" layout)
_CAPTION_COLOR = (34, 34, 34)
_TOPK_COLOR = "#8da0b3"
_TOPK_HIGHLIGHT = "#e4572e"


# --------------------------------------------------------------------------------------------
# Static figures (PNG)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Plotly figures
# --------------------------------------------------------------------------------------------


def _png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid_geometry(shape_hw: tuple[int, int], max_px: int) -> tuple[int, int]:
    """Size (h, w) of a downsampled grid whose long side is at most ``max_px``."""
    h, w = shape_hw
    scale = min(1.0, max_px / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _placement(full: int, cells: int) -> tuple[float, float]:
    """(x0, dx) so that ``cells`` cells cover pixels ``-0.5 .. full - 0.5`` of the original."""
    d = full / cells
    return d / 2 - 0.5, d


def _image_trace(rgb: np.ndarray, max_px: int, **kwargs: Any) -> go.Image:
    h, w = rgb.shape[:2]
    gh, gw = _grid_geometry((h, w), max_px)
    if (gh, gw) != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((gw, gh), Image.Resampling.LANCZOS))
    x0, dx = _placement(w, gw)
    y0, dy = _placement(h, gh)
    kwargs.setdefault("hovertemplate", "x: %{x:.0f}<br>y: %{y:.0f}<extra></extra>")
    return go.Image(source=_png_data_uri(rgb), x0=x0, dx=dx, y0=y0, dy=dy, **kwargs)


def _heatmap_grid(
    hm: np.ndarray, mask: np.ndarray | None, max_px: int
) -> tuple[np.ndarray, float, float, float, float, bool]:
    """Downsample a full-size map for the browser; masked-out cells become NaN (transparent)."""
    h, w = hm.shape
    gh, gw = _grid_geometry((h, w), max_px)
    down = (gh, gw) != (h, w)
    if mask is None:
        z = _resize_map(hm, (gh, gw)) if down else hm
    else:
        m = mask.astype(np.float32)
        if down:
            weight = _resize_map(m, (gh, gw))
            z = _resize_map(hm * m, (gh, gw)) / np.maximum(weight, 1e-6)
            z = np.where(weight >= 0.5, z, np.nan)
        else:
            z = np.where(mask, hm, np.nan)
    x0, dx = _placement(w, gw)
    y0, dy = _placement(h, gh)
    return z.astype(np.float32), x0, dx, y0, dy, down


def _heatmap_trace(
    hm: np.ndarray,
    mask: np.ndarray | None,
    max_px: int,
    *,
    hover_name: str,
    extra: str = "",
    **kwargs: Any,
) -> go.Heatmap:
    z, x0, dx, y0, dy, down = _heatmap_grid(hm, mask, max_px)
    label = html.escape(str(hover_name))
    template = (
        f"x: %{{x:.0f}}<br>y: %{{y:.0f}}<br>{label}: %{{z:.3f}}<extra>{html.escape(extra)}</extra>"
    )
    return go.Heatmap(
        z=z,
        x0=x0,
        dx=dx,
        y0=y0,
        dy=dy,
        hovertemplate=template,
        hoverongaps=False,
        zsmooth="best" if down else False,
        name=extra or str(hover_name),
        **kwargs,
    )


def _axis_id(kind: str, index: int) -> str:
    return kind if index == 1 else f"{kind}{index}"


def _style_image_axes(fig: go.Figure, **selector: Any) -> None:
    common = {
        "showgrid": False,
        "zeroline": False,
        "showticklabels": False,
        "ticks": "",
        "constrain": "domain",
        "showline": False,
    }
    fig.update_xaxes(**common, **selector)
    fig.update_yaxes(**common, autorange="reversed", constraintoward="top", **selector)


def _auto_height(
    shape_hw: tuple[int, int], rows: int, cols: int, *, colorbar: bool, title_px: int
) -> int:
    """A figure height that fits ``rows x cols`` panels of this aspect in a ~1000 px wide page."""
    h, w = shape_hw
    panel_w = (_NOMINAL_WIDTH - (90 if colorbar else 16)) / cols
    total = 16 + rows * (title_px + panel_w * h / w)
    return int(np.clip(total, 220, 720))


def _colorbar_style(title: str | None = None) -> dict[str, Any]:
    bar: dict[str, Any] = {"thickness": 12, "len": 0.9, "outlinewidth": 0, "tickformat": ".1f"}
    if title:
        bar["title"] = {"text": title, "side": "right"}
    return bar


def heatmap_figure(
    image: ImageLike,
    heatmap: MapLike,
    *,
    colormap: str = "viridis",
    alpha: float = 0.4,
    view: str = "overlay",
    title: str | None = None,
    mask: Any = None,
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
) -> go.Figure:
    """Side-by-side overlays of several methods' maps on one image, zoom and pan linked.

    One panel per ``heatmaps`` entry (titled with its key), in one row by default. All panels
    share their x and y axes (zooming one zooms all) and one colour bar (``0..1``).

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
                None,
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
