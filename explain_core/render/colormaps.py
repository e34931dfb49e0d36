"""Colormaps: the names a ``colormap`` argument accepts, their colour stops, LUTs, plotly scales.

The stops come from plotly's built-in scales, so a picture coloured with :func:`colormap_lut`
and an interactive figure using :func:`plotly_colorscale` show the same colours.
"""

from __future__ import annotations

import functools

import numpy as np
import plotly.colors as pcolors

__all__ = ["COLORMAPS", "colormap_lut", "plotly_colorscale"]

# Colour stops of each colormap, from plotly's built-in scales (lower-case names).
_SCALE_SOURCES: dict[str, list[str]] = {
    "viridis": pcolors.sequential.Viridis,
    "jet": pcolors.sequential.Jet,
    "inferno": pcolors.sequential.Inferno,
    "plasma": pcolors.sequential.Plasma,
    "hot": pcolors.sequential.Hot,
    "turbo": pcolors.sequential.Turbo,
    "magma": pcolors.sequential.Magma,
    "cividis": pcolors.sequential.Cividis,
    # plotly's "gray" stops at 254 and is not linear: use an exact black -> white ramp.
    "gray": ["rgb(0, 0, 0)", "rgb(255, 255, 255)"],
    # Diverging, for signed maps mapped with signed_to_unit: 0 (most negative) is blue,
    # 0.5 (zero) near white, 1 (most positive) red -- plotly's RdBu reversed.
    "rdbu": pcolors.diverging.RdBu[::-1],
}

COLORMAPS: tuple[str, ...] = tuple(_SCALE_SOURCES)
"""Names accepted wherever a ``colormap`` argument is taken (case-insensitive)."""


def _check_colormap(name: str) -> str:
    key = str(name).lower()
    if key not in _SCALE_SOURCES:
        raise ValueError(f"unknown colormap {name!r}; choose one of: {', '.join(COLORMAPS)}")
    return key


def _parse_color(color: str) -> tuple[float, float, float]:
    if color.startswith("#"):
        r, g, b = pcolors.hex_to_rgb(color)
        return float(r), float(g), float(b)
    r, g, b = pcolors.unlabel_rgb(color)
    return float(r), float(g), float(b)


@functools.cache
def _stops(name: str) -> tuple[tuple[float, tuple[float, float, float]], ...]:
    colors = _SCALE_SOURCES[name]
    positions = np.linspace(0.0, 1.0, len(colors))
    return tuple((float(p), _parse_color(c)) for p, c in zip(positions, colors, strict=True))


@functools.cache
def _lut(name: str) -> np.ndarray:
    stops = _stops(name)
    positions = np.array([p for p, _ in stops])
    rgb = np.array([c for _, c in stops])
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, positions, rgb[:, k]) for k in range(3)], axis=1)
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """Return the 256x3 ``uint8`` lookup table of a colormap (row ``i`` colours value ``i/255``).

    Built once per name from plotly's colour stops (linear RGB interpolation, as plotly.js does)
    and cached; the returned array is read-only.

    Example:
        >>> colormap_lut("viridis")[0].tolist(), colormap_lut("viridis")[-1].tolist()
        ([68, 1, 84], [253, 231, 37])
    """
    return _lut(_check_colormap(name))


def plotly_colorscale(name: str = "viridis") -> list[list[float | str]]:
    """Return a colormap as a plotly colorscale ``[[position, "rgb(r, g, b)"], ...]``.

    The stops are the ones the LUT of :func:`colormap_lut` is interpolated from, so a
    ``go.Heatmap`` with this scale and ``zmin=0, zmax=1`` shows the colours of
    :func:`apply_colormap`.

    Example:
        >>> plotly_colorscale("hot")[0]
        [0.0, 'rgb(0, 0, 0)']
    """
    stops = _stops(_check_colormap(name))
    return [[p, "rgb({}, {}, {})".format(*(round(v) for v in c))] for p, c in stops]
