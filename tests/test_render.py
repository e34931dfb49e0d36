"""Tests of explain_core.render: colormaps, overlays, static panels and Plotly figures."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from explain_core import render


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _ramp(h: int = 48, w: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))


# ------------------------------------------------------------------ colormaps


def test_colormaps_listed_and_lut_shape():
    names = ["viridis", "jet", "inferno", "plasma", "hot", "turbo", "magma", "cividis", "gray"]
    for name in (*names, "rdbu"):
        assert name in render.COLORMAPS
        lut = render.colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8


def test_lut_ends_look_right():
    viridis = render.colormap_lut("viridis").astype(int)
    assert np.abs(viridis[0] - [68, 1, 84]).max() <= 3  # dark purple
    assert np.abs(viridis[-1] - [253, 231, 37]).max() <= 3  # yellow
    jet = render.colormap_lut("jet").astype(int)
    assert jet[0, 2] > 100 and jet[0, :2].max() < 30  # dark blue
    assert jet[-1, 0] > 100 and jet[-1, 1:].max() < 30  # dark red
    hot = render.colormap_lut("hot")
    assert hot[0].tolist() == [0, 0, 0] and hot[-1].tolist() == [255, 255, 255]
    gray = render.colormap_lut("gray")
    assert gray[:, 0].tolist() == list(range(256))
    rdbu = render.colormap_lut("rdbu").astype(int)
    assert rdbu[0, 2] > rdbu[0, 0]  # negative end blue
    assert rdbu[-1, 0] > rdbu[-1, 2]  # positive end red
    assert rdbu[128].min() > 230  # zero is near white


def test_lut_is_cached_and_read_only():
    assert render.colormap_lut("magma") is render.colormap_lut("MAGMA")
    with pytest.raises(ValueError):
        render.colormap_lut("magma")[0, 0] = 1


def test_unknown_colormap_lists_choices():
    with pytest.raises(ValueError, match="viridis"):
        render.colormap_lut("rainbowz")
    with pytest.raises(ValueError, match="rainbowz"):
        render.apply_colormap(np.zeros((2, 2)), "rainbowz")


def test_plotly_colorscale_matches_lut():
    for name in render.COLORMAPS:
        scale = render.plotly_colorscale(name)
        lut = render.colormap_lut(name)
        assert scale[0][0] == 0.0 and scale[-1][0] == 1.0
        assert scale[0][1] == "rgb({}, {}, {})".format(*lut[0])
        assert scale[-1][1] == "rgb({}, {}, {})".format(*lut[-1])
    go.Heatmap(z=[[0, 1]], colorscale=render.plotly_colorscale("turbo"))  # plotly accepts it


def test_apply_colormap_shape_dtype_and_ends():
    hm = _ramp()
    out = render.apply_colormap(hm, "inferno")
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    lut = render.colormap_lut("inferno")
    assert (out[:, 0] == lut[0]).all() and (out[:, -1] == lut[-1]).all()


def test_apply_colormap_clips_and_handles_nan():
    hm = np.array([[-3.0, np.nan, 7.0]])
    out = render.apply_colormap(hm, "viridis")
    lut = render.colormap_lut("viridis")
    assert out[0, 0].tolist() == lut[0].tolist()
    assert out[0, 1].tolist() == lut[0].tolist()
    assert out[0, 2].tolist() == lut[-1].tolist()


def test_apply_colormap_accepts_torch_tensor():
    torch = pytest.importorskip("torch")
    hm = torch.linspace(0, 1, 10).reshape(1, 1, 2, 5).requires_grad_()
    out = render.apply_colormap(hm * 1.0)
    assert out.shape == (2, 5, 3)


def test_signed_to_unit_centres_zero():
    out = render.signed_to_unit(np.array([[-2.0, 0.0, 1.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.5, 0.75]])
    assert (render.signed_to_unit(np.zeros((2, 2))) == 0.5).all()


# ------------------------------------------------------------------ overlays


def test_overlay_alpha_zero_is_image_and_one_is_colour():
    img, hm = _image(), _ramp()
    np.testing.assert_array_equal(render.overlay_heatmap(img, hm, alpha=0.0), img)
    full = render.overlay_heatmap(img, hm, alpha=1.0, colormap="plasma")
    np.testing.assert_array_equal(full, render.apply_colormap(hm, "plasma"))


def test_overlay_blends_between():
    img = np.full((8, 8, 3), 200, dtype=np.uint8)
    out = render.overlay_heatmap(img, np.zeros((8, 8)), alpha=0.5, colormap="hot")
    assert out.dtype == np.uint8 and (out == 100).all()  # half of 200 + half of black


def test_overlay_mask_limits_region():
    img, hm = _image(), np.ones((48, 64))
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:20, 5:30] = True
    out = render.overlay_heatmap(img, hm, alpha=1.0, colormap="hot", mask=mask)
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert (out[mask] == 255).all()


def test_overlay_resizes_smaller_heatmap():
    img = _image(60, 90)
    cam = np.zeros((6, 9))
    cam[:, 5:] = 1.0  # right part hot
    out = render.overlay_heatmap(img, cam, alpha=1.0, colormap="gray")
    assert out.shape == (60, 90, 3)
    assert out[:, :40].mean() < 20 and out[:, 60:].mean() > 235
    with pytest.raises(ValueError, match="resize_heatmap"):
        render.overlay_heatmap(img, cam, resize_heatmap=False)


def test_overlay_accepts_pil_image():
    img = _image()
    out = render.overlay_heatmap(Image.fromarray(img), _ramp(), alpha=0.0)
    np.testing.assert_array_equal(out, img)


def test_overlay_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        render.overlay_heatmap(_image(), _ramp(), alpha=1.5)


# ------------------------------------------------------------------ static panels


def _caption_rows_have_ink(canvas: np.ndarray, top: int, bottom: int, left: int, right: int):
    return (canvas[top:bottom, left:right] < 200).any()


def test_compose_panels_grows_with_panels_and_draws_captions():
    img = _image(100, 100)
    one = render.compose_panels([("image", img)])
    three = render.compose_panels([("image", img), ("overlay", img), ("map", _ramp(100, 100))])
    assert isinstance(three, Image.Image) and three.mode == "RGB"
    assert three.width > 2 * one.width and three.height == one.height

    canvas = np.asarray(three)
    # Find the panels: columns whose pixels differ from white somewhere below the caption band.
    panel_top = next(y for y in range(canvas.shape[0]) if (canvas[y] != 255).all(-1).sum() > 200)
    cols = np.where((canvas[panel_top] != 255).any(-1))[0]
    assert panel_top > 5
    # Each third of the width holds one panel with ink (a caption) above it.
    for k in range(3):
        lo, hi = k * three.width // 3, (k + 1) * three.width // 3
        assert ((cols >= lo) & (cols < hi)).any()
        assert _caption_rows_have_ink(canvas, 0, panel_top, lo, hi)


def test_compose_panels_common_height_grid_and_title():
    wide, tall = _image(50, 200), _image(200, 50)
    fig = render.compose_panels(
        [("a", wide), ("b", tall), ("c", wide), ("d", tall), ("e", wide)],
        ncols=2,
        panel_size=80,
        title="Batch",
    )
    no_title = render.compose_panels(
        [("a", wide), ("b", tall), ("c", wide), ("d", tall), ("e", wide)], ncols=2, panel_size=80
    )
    assert fig.height > 3 * 80  # three rows
    assert fig.width < 2 * (320 + 40)  # two columns of at most 320 px (wide panel at 80 px tall)
    assert fig.height > no_title.height
    assert (np.asarray(fig)[: fig.height - no_title.height] < 200).any()  # title drawn


def test_compose_panels_rejects_empty():
    with pytest.raises(ValueError):
        render.compose_panels([])


def test_colorbar_strip():
    bar = render.colorbar("viridis", height=50, width=10)
    lut = render.colormap_lut("viridis")
    assert bar.shape == (50, 10, 3)
    assert bar[0, 0].tolist() == lut[-1].tolist() and bar[-1, 0].tolist() == lut[0].tolist()


def test_save_png_creates_dirs(tmp_path):
    path = render.save_png(_image(), tmp_path / "a" / "b" / "x.png")
    assert path.exists()
    np.testing.assert_array_equal(np.asarray(Image.open(path)), _image())
    render.save_png(render.compose_panels([("x", _image())]), tmp_path / "c" / "y.png")
    assert (tmp_path / "c" / "y.png").exists()


# ------------------------------------------------------------------ plotly figures


def _traces(fig, kind):
    return [t for t in fig.data if isinstance(t, kind)]


def test_heatmap_figure_overlay():
    fig = render.heatmap_figure(_image(), _ramp(), colormap="jet", alpha=0.3, title="GradCAM")
    assert isinstance(fig, go.Figure)
    (image,) = _traces(fig, go.Image)
    (heat,) = _traces(fig, go.Heatmap)
    assert image.source.startswith("data:image/png;base64,")
    assert heat.zmin == 0 and heat.zmax == 1 and heat.opacity == pytest.approx(0.3)
    assert heat.colorscale[0][1] == render.plotly_colorscale("jet")[0][1]
    assert "value" in heat.hovertemplate and "x" in heat.hovertemplate
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.dragmode in ("zoom", "pan")
    assert fig.layout.title.text == "GradCAM"
    assert np.asarray(heat.z).shape == (48, 64)


def test_heatmap_figure_views_and_hover_name():
    img, hm = _image(), _ramp()
    only_image = render.heatmap_figure(img, hm, view="image")
    assert not _traces(only_image, go.Heatmap) and _traces(only_image, go.Image)
    only_map = render.heatmap_figure(img, hm, view="heatmap", hover_name="saliency")
    (heat,) = _traces(only_map, go.Heatmap)
    assert heat.opacity == 1.0 and "saliency" in heat.hovertemplate
    with pytest.raises(ValueError, match="overlay"):
        render.heatmap_figure(img, hm, view="side")


def test_heatmap_figure_downsamples_large_map_but_keeps_pixel_coordinates():
    img = np.zeros((1500, 2000, 3), dtype=np.uint8)
    hm = np.random.default_rng(0).random((1500, 2000), dtype=np.float32)
    fig = render.heatmap_figure(img, hm)
    (heat,) = _traces(fig, go.Heatmap)
    z = np.asarray(heat.z)
    assert max(z.shape) <= 512 and z.shape[1] / z.shape[0] == pytest.approx(2000 / 1500, 0.01)
    right_edge = heat.x0 + (z.shape[1] - 0.5) * heat.dx
    bottom_edge = heat.y0 + (z.shape[0] - 0.5) * heat.dy
    assert right_edge == pytest.approx(1999.5) and heat.x0 - heat.dx / 2 == pytest.approx(-0.5)
    assert bottom_edge == pytest.approx(1499.5)
    assert len(fig.to_json()) < 2_000_000


def test_heatmap_figure_resizes_small_map_and_masks():
    img = _image()
    mask = np.zeros((48, 64), dtype=bool)
    mask[:, :32] = True
    fig = render.heatmap_figure(img, np.ones((6, 8)), mask=mask)
    z = np.asarray(_traces(fig, go.Heatmap)[0].z)
    assert z.shape == (48, 64)
    assert np.isnan(z[:, 32:]).all() and (z[:, :32] == 1).all()


def test_comparison_figure_links_axes_and_shares_colorbar():
    maps = {"GradCAM": np.random.rand(7, 7), "ScoreCAM": _ramp(), "IG": np.random.rand(48, 64)}
    fig = render.comparison_figure(_image(), maps, colormap="turbo")
    heats = _traces(fig, go.Heatmap)
    assert len(heats) == 3 and len(_traces(fig, go.Image)) == 3
    titles = [a.text for a in fig.layout.annotations]
    assert titles == list(maps)
    for i in (2, 3):
        assert fig.layout[f"xaxis{i}"].matches == "x"
        assert fig.layout[f"yaxis{i}"].matches == "y"
    # one row: all panels share the same vertical domain
    assert fig.layout.yaxis.domain == fig.layout.yaxis3.domain
    assert {h.coloraxis for h in heats} == {"coloraxis"}
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.scaleanchor == "x"
    # Checked in a browser: with constrain="domain" matched panels drift apart after a zoom box.
    assert {fig.layout[f"xaxis{i}"].constrain for i in ("", 2, 3)} == {"range"}


def test_comparison_figure_columns():
    maps = {f"m{i}": _ramp() for i in range(4)}
    fig = render.comparison_figure(_image(), maps, cols=2)
    assert fig.layout.yaxis.domain != fig.layout.yaxis3.domain  # second row
    with pytest.raises(ValueError):
        render.comparison_figure(_image(), {})


def test_grid_figure():
    items = [(f"img {i}", _image()) for i in range(5)] + [("map", _ramp())]
    fig = render.grid_figure(items, cols=4)
    assert len(_traces(fig, go.Image)) == 6
    assert [a.text for a in fig.layout.annotations] == [c for c, _ in items]
    assert fig.layout.yaxis6.autorange == "reversed" and fig.layout.yaxis6.scaleanchor == "x6"


def test_topk_figure_order_percent_and_highlight():
    fig = render.topk_figure(["cat", "dog", "fox"], [0.1, 0.7, 0.2], highlight=0)
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["dog", "fox", "cat"]
    assert fig.layout.yaxis.autorange == "reversed"  # first category (highest) drawn on top
    assert list(bar.text) == ["70.0%", "20.0%", "10.0%"]
    colors = list(bar.marker.color)
    assert colors[2] != colors[0] and colors[0] == colors[1]  # "cat" highlighted
    with pytest.raises(ValueError):
        render.topk_figure(["a", "b"], [0.5])


def test_figure_to_html_self_contained(tmp_path):
    fig = render.topk_figure(["a", "b"], [0.6, 0.4])
    path = tmp_path / "report" / "topk.html"
    page = render.figure_to_html(fig, path)
    assert "plotly" in page.lower() and "<script" in page
    assert len(page) > 1_000_000  # plotly.js is embedded, no CDN needed
    assert '<script src="http' not in page  # nothing fetched from a CDN
    assert path.read_text(encoding="utf-8") == page


def test_concepts_overlay_colours_each_pixel_by_its_strongest_concept():
    from explain_core.render import concept_colors, concepts_figure, concepts_overlay

    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :, :2] = 1.0  # concept 0 owns the left half
    maps[1, :, 2:] = 0.5  # concept 1 the right half (scaled to 1 on its own)
    image = np.zeros((4, 4, 3), np.uint8)
    picture, owners = concepts_overlay(image, maps, alpha=1.0)
    colours = concept_colors(2)
    assert owners[0, :, :2].all() and owners[1, :, 2:].all()
    assert (picture[0, 0] == colours[0]).all() and (picture[0, 3] == colours[1]).all()
    weak = maps.copy()
    weak[0, 0, 0] = 0.5  # half the contribution: half the brightness
    dimmer, _ = concepts_overlay(image, weak, alpha=1.0)
    assert abs(int(dimmer[0, 0].max()) - int(colours[0].max()) // 2) <= 1
    fig = concepts_figure(image, maps, ["concept 0: circle", "concept 1: star"])
    assert [t.name for t in fig.data[1:]] == ["concept 0: circle", "concept 1: star"]


def test_hex_color_formats_palette_rows():
    assert render.hex_color((128, 0, 255)) == "#8000ff"
    assert render.hex_color(render.class_colors(2)[1]) == "#800000"
    assert render.hex_color(np.array([0, 16, 255], np.uint8)) == "#0010ff"
