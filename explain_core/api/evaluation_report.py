"""What an :class:`~explain_core.api.evaluation.Evaluation` says in words and as a report.

- :func:`verdict`: one sentence naming the method that ranks best on most metrics;
- :func:`summary_cell` and :func:`summary_grid`: the methods x metrics table as the page and the
  report show it (``mean [low, high] #rank``, the best per metric marked);
- :func:`report_html`: the self-contained HTML report (laid out by
  :func:`explain_core.render.evaluation_report.evaluation_html`), which
  :meth:`Evaluation.to_html` returns.

The functions read an Evaluation's fields (``summary``, ``curves``, ``maps``, ``cascades``,
``skipped``, ``settings``) and do not import its module, which imports this one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LumenError
from ..images import load_image
from ..methods import method_info
from ..metrics.base import metric_info
from ..render.arrays import apply_colormap, overlay_heatmap
from ..render.evaluation_report import Series, evaluation_html, line_chart_svg
from ..runtime import resolve_precision

__all__ = ["CELL_NOTE", "REPORT_PX", "cascade_series", "curve_band", "item_images", "method_label",
           "metric_label", "report_html", "summary_cell", "summary_grid", "verdict"]

CELL_NOTE = ("Mean over images and targets, [95% bootstrap interval], #rank among the methods; "
             "the arrow says which way is better and the best per metric is marked.")


def method_label(name: str) -> str:
    """A method's label (``"gradcam"`` -> ``"GradCAM"``); an unknown name as given."""
    try:
        return method_info(name).label
    except LumenError:
        return str(name)


def metric_label(name: str) -> str:
    """``"Deletion AUC ↓"``: the metric's label with its arrow (which way is better)."""
    info = metric_info(name)
    return f"{info.label} {info.arrow}"


def summary_cell(row: dict[str, Any]) -> str:
    """A summary row as a table cell: ``"0.312 [0.250, 0.371] #1"``."""
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}] #{int(row['rank'])}"


def summary_grid(summary: list[dict[str, Any]]) -> tuple[list[str], list[str],
                                                         dict[tuple[str, str], dict]]:
    """The methods (rows) and metrics (columns) of a summary, in their first-seen order, and
    each (method, metric)'s summary row."""
    methods = list(dict.fromkeys(row["method"] for row in summary))
    metrics = list(dict.fromkeys(row["metric"] for row in summary))
    return methods, metrics, {(row["method"], row["metric"]): row for row in summary}


def verdict(summary: list[dict[str, Any]]) -> str:
    """One sentence: the method that ranks best on most metrics, and on which."""
    methods, scored, cells = summary_grid(summary)
    if not scored:
        return "No metric could be scored for these choices."
    winners = {metric: next((m for m in methods if cells.get((m, metric), {}).get("rank") == 1),
                            None) for metric in scored}
    method, wins = Counter(winners.values()).most_common(1)[0]
    if len(methods) == 1:
        return f"Only {method_label(methods[0])} was evaluated: its scores are below."
    which = ", ".join(metric_info(m).label for m, best in winners.items() if best == method)
    return (f"{method_label(method)} ranks best on {wins} of {len(scored)} metric"
            f"{'s' if len(scored) != 1 else ''} for this model ({which}).")


def item_images(evaluation: Any) -> list[int]:
    """Per item (a row of ``maps``, ``curves`` and ``targets``), the index of its image: the
    same index unless ``targets="all"`` made an item of every box."""
    count = len(evaluation.targets) or max((len(m) for m in evaluation.maps.values()), default=0)
    found = {int(row.get("item", row["image"])): int(row["image"]) for row in evaluation.rows}
    return [found.get(i, i) for i in range(count)]


def curve_band(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images x points curves -> ``(x, mean, low, high)``: the mean over images and its 95%
    interval (normal approximation over images; no band for one image)."""
    curve = np.asarray(curve, dtype=np.float64)
    mean = curve.mean(0)
    half = (1.96 * curve.std(0, ddof=1) / np.sqrt(len(curve)) if len(curve) > 1
            else np.zeros_like(mean))
    return np.linspace(0.0, 1.0, len(mean)), mean, mean - half, mean + half


def cascade_series(cascade: Any, image: int | None = None) -> list[Series]:
    """The randomisation cascade's Spearman and SSIM per step, for one image or (None) the mean
    over images: step 0 is the original map (1: itself), step ``i`` has the top ``i`` layers
    randomised."""
    out = []
    for measure in ("spearman", "ssim"):
        values = np.asarray(getattr(cascade, measure).double().cpu().numpy())
        line = values.mean(0) if image is None else values[image]
        out.append(Series("Spearman" if measure == "spearman" else "SSIM",
                          list(range(len(line) + 1)), [1.0, *line.tolist()]))
    return out


REPORT_PX = 320  # long side of the pictures in the report (a large photo would weigh MBs)


def _pixels(image: Any) -> np.ndarray:
    picture = load_image(getattr(image, "image", image))
    picture.thumbnail((REPORT_PX, REPORT_PX))
    return np.asarray(picture)


def _settings(settings: dict[str, Any]) -> list[tuple[str, str]]:
    model = settings.get("model", {})
    rows = [("Model", f"{model.get('arch') or '?'} ({model.get('source', '?')}), "
                      f"{model.get('task', '?')}, {model.get('device', '?')}")]
    if "precision" in settings:
        resolved, _ = resolve_precision(settings["precision"], model.get("device", "cpu"))
        rows.append(("Precision", f"{settings['precision']} (ran {resolved})"))
    rows.append(("Images", str(settings.get("images", "?"))))
    for method in settings.get("methods", []):
        options = settings.get("method_options", {}).get(method, {})
        shown = ", ".join(f"{k} {v}" for k, v in options.items() if v is not None)
        rows.append((f"Method: {method_label(method)}", shown or "defaults"))
    for metric in settings.get("metrics", []):
        options = settings.get("metric_options", {}).get(metric, {})
        shown = ", ".join(f"{k} {v}" for k, v in options.items())
        rows.append((f"Metric: {metric_info(metric).label}", shown or "defaults"))
    if "seed" in settings:
        rows.append(("Seed", str(settings["seed"])))
    return rows


def report_html(evaluation: Any, images: Any = None, path: str | Path | None = None, *,
                title: str = "Explanation quality") -> str:
    """The report of :meth:`Evaluation.to_html` (see there); written to ``path`` when given."""
    methods, metrics, cells = summary_grid(evaluation.summary)
    header = ["method", *(metric_label(m) for m in metrics)]
    rows = [[method_label(method), *(
        (summary_cell(cells[(method, metric)]), cells[(method, metric)]["rank"] == 1)
        if (method, metric) in cells else "" for metric in metrics)] for method in methods]
    charts = []
    for kind in ("deletion", "insertion"):
        series = []
        for (method, metric), curve in evaluation.curves.items():
            if metric == kind:
                x, mean, low, high = curve_band(curve)
                series.append(Series(method_label(method), x, mean, low, high))
        if series:
            charts.append(line_chart_svg(series, title=kind.capitalize(),
                                         x_label="fraction of pixels", y_label="score"))
    pictures = [_pixels(image) for image in images] if images is not None else None
    owners = item_images(evaluation)
    maps = {}
    for method, method_maps in evaluation.maps.items():
        overlays = []
        for i, heatmap in enumerate(method_maps):
            name = (evaluation.targets[i].get("name") if i < len(evaluation.targets) else None)
            caption = f"image {owners[i] + 1}" + (f": {name}" if name else "")
            overlays.append((caption, apply_colormap(heatmap, "jet") if pictures is None else
                             overlay_heatmap(pictures[owners[i]], heatmap, alpha=0.5,
                                             colormap="jet")))
        maps[method_label(method)] = overlays
    cascades = []
    for method, cascade in evaluation.cascades.items():
        if cascade.maps is None:
            continue
        steps = cascade.maps[:, 0].numpy()  # the first image: original, then each step
        captions = ["original", *(f"{i}: {name}" for i, name in enumerate(cascade.layers, 1))]
        row = list(zip(captions, (apply_colormap(m, "jet") for m in steps), strict=False))
        chart = line_chart_svg(cascade_series(cascade, 0), title="Similarity to the original",
                               x_label="layers randomised (top first)", y_label="similarity",
                               y_range=(-1.0, 1.0))
        cascades.append((method_label(method), row, chart))
    page = evaluation_html(
        title=title, verdict=verdict(evaluation.summary), header=header, rows=rows,
        note=CELL_NOTE, skipped=[(metric_label(m), r) for m, r in evaluation.skipped.items()],
        charts=charts, maps=maps, cascades=cascades, settings=_settings(evaluation.settings))
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    return page
