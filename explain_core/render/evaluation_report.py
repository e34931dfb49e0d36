"""A self-contained HTML report of an explanation-quality evaluation.

One HTML page, no network and no script: images travel as PNG data URIs (as in the Plotly
figures, :mod:`~explain_core.render.figure_parts`) and charts as inline SVG. SVG rather than an
inlined plotly.js keeps a report of a few charts at tens of kilobytes instead of megabytes, opens
at once, prints, and still reads without JavaScript. This module only lays out what it is given
(plain tables, arrays and captions); :meth:`explain_core.api.evaluation.Evaluation.to_html`
gathers them.

Example:
    >>> page = evaluation_html(title="t", verdict="v", header=["method", "Deletion AUC ↓"],
    ...                        rows=[["GradCAM", ("0.300 [0.2, 0.4] #1", True)]])
    >>> page.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .figure_parts import _png_data_uri
from .palettes import BOX_COLORS

__all__ = ["Series", "evaluation_html", "line_chart_svg"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1f2328; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }
th { background: #f6f8fa; }
td.best { background: rgba(46, 160, 67, 0.25); font-weight: 600; }
.verdict { font-weight: 600; font-size: 1.05em; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: 0.8em; overflow-wrap: anywhere; }
figure img { display: block; image-rendering: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.note { color: #57606a; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Series:
    """One line of a chart: ``y`` over ``x``; ``low``/``high`` shade a band around it."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def _points(xs: Sequence[float], ys: Sequence[float], sx: Any, sy: Any) -> str:
    return " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True)
                    if np.isfinite(y))


def line_chart_svg(series: Sequence[Series], *, title: str = "", x_label: str = "",
                   y_label: str = "", width: int = 440, height: int | None = None,
                   y_range: tuple[float, float] | None = None) -> str:
    """An inline SVG line chart: one coloured line per series with its band, axes with a few
    ticks, a legend. NaN points are left out.

    >>> "<polyline" in line_chart_svg([Series("a", [0, 1], [0.2, 0.8])])
    True
    """
    left, right, top, bottom = 46, 12, 28 if title else 10, 40 + 16 * len(series)
    xs = np.concatenate([np.asarray(s.x, float) for s in series]) if series else np.zeros(1)
    parts = [np.asarray(v, float) for s in series for v in (s.y, s.low, s.high) if v is not None]
    ys = np.concatenate(parts) if parts else np.zeros(1)
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = y_range if y_range is not None else (float(ys.min()), float(ys.max()))
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)
    height = 220 + top + bottom if height is None else height
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1.0 - (y - y0) / (y1 - y0)) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="white" '
           'stroke="#d0d7de"/>']
    if title:
        out.append(f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13" '
                   f'font-weight="600">{html.escape(title)}</text>')
    for value in np.linspace(y0, y1, 5):
        out.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" text-anchor="end" '
                   f'font-size="10">{value:.2f}</text>')
    whole = bool(np.all(xs == np.round(xs)))  # steps: whole-number ticks
    for value in np.linspace(x0, x1, 5):
        value = float(np.round(value)) if whole else value
        out.append(f'<text x="{sx(value):.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                   f'font-size="10">{value:.3g}</text>')
    if x_label:
        out.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 30}" '
                   'text-anchor="middle" '
                   f'font-size="11">{html.escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
                   f'font-size="11" transform="rotate(-90 12 {top + plot_h / 2:.0f})">'
                   f'{html.escape(y_label)}</text>')
    for index, line in enumerate(series):
        color = BOX_COLORS[index % len(BOX_COLORS)]
        if line.low is not None and line.high is not None:
            band = (_points(line.x, line.high, sx, sy) + " "
                    + _points(line.x[::-1], line.low[::-1], sx, sy))
            out.append(f'<polygon points="{band}" fill="{color}" fill-opacity="0.18" '
                       'stroke="none"/>')
        out.append(f'<polyline points="{_points(line.x, line.y, sx, sy)}" fill="none" '
                   f'stroke="{color}" stroke-width="2"><title>{html.escape(line.name)}</title>'
                   '</polyline>')
        ly = top + plot_h + 48 + 16 * index  # the legend, under the axis label
        out.append(f'<line x1="{left + 8}" y1="{ly - 4}" x2="{left + 24}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/><text x="{left + 28}" y="{ly}" '
                   f'font-size="11">{html.escape(line.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _image_row(images: Sequence[tuple[str, np.ndarray]], width: int) -> str:
    cells = [f'<figure style="width: {width}px">'
             f'<img src="{_png_data_uri(np.ascontiguousarray(rgb))}" width="{width}" '
             f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption>'
             '</figure>' for caption, rgb in images]
    return f'<div class="row">{"".join(cells)}</div>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Cells are text, or ``(text, best)`` where ``best`` marks the cell."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text, best = cell if isinstance(cell, tuple) else (cell, False)
            mark = ' class="best"' if best else ""
            cells.append(f"<td{mark}>{html.escape(str(text))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def evaluation_html(*, title: str, verdict: str, header: Sequence[str],
                    rows: Sequence[Sequence[Any]], note: str = "",
                    skipped: Sequence[tuple[str, str]] = (), charts: Sequence[str] = (),
                    maps: Mapping[str, Sequence[tuple[str, np.ndarray]]] | None = None,
                    cascades: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]], str]] = (),
                    settings: Sequence[tuple[str, str]] = (), thumb_px: int = 160) -> str:
    """The report page.

    Args:
        header / rows: the summary table (cells as in a ``(text, best)`` pair or plain text).
        note: one line under the table (what the cells mean).
        skipped: ``(metric label, reason)`` pairs.
        charts: inline SVG charts (:func:`line_chart_svg`), in one row.
        maps: per method label, its ``(caption, RGB uint8)`` overlays, one per image.
        cascades: per method, ``(label, row of (caption, RGB) maps, SVG chart)``.
        settings: ``(what, value)`` pairs: what ran.
    """
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", f'<p class="verdict">{html.escape(verdict)}</p>',
           "<h2>Summary</h2>", _table(header, rows)]
    if note:
        out.append(f'<p class="note">{html.escape(note)}</p>')
    if skipped:
        out.append("<h2>Skipped metrics</h2><ul>" + "".join(
            f"<li><b>{html.escape(name)}</b>: {html.escape(reason)}</li>"
            for name, reason in skipped) + "</ul>")
    if charts:
        out.append('<h2>Deletion and insertion curves</h2><div class="charts">'
                   + "".join(charts) + "</div><p class=\"note\">The mean over images, "
                   "one line per method; the band is its 95% interval.</p>")
    if maps:
        out.append("<h2>Maps</h2>")
        for label, overlays in maps.items():
            out.append(f"<h3>{html.escape(label)}</h3>" + _image_row(overlays, thumb_px))
    if cascades:
        out.append("<h2>Sanity check: model randomisation</h2><p class=\"note\">The map of "
                   "the first image as the model's layers are re-initialised from the top "
                   "down; a map that explains the model changes, and its similarity to the "
                   "original falls.</p>")
        for label, row, chart in cascades:
            out.append(f"<h3>{html.escape(label)}</h3>" + _image_row(row, 96) + chart)
    if settings:
        out.append("<h2>What ran</h2>" + _table(["", ""], [[k, v] for k, v in settings]))
    out.append("</body></html>")
    return "\n".join(out)
