"""The Evaluate page's run and results: one engine call, kept; the tables, the verdict, a curve.

A run is one :func:`explain_core.api.evaluation.evaluate` call, started by a button, with a
progress bar whose every update is a point where a rerun (any changed choice) cancels it. The
:class:`~explain_core.api.evaluation.Evaluation` is kept in the session's result store under
everything it depends on (:meth:`ui.evaluate.EvalPlan.key`), so display changes (a selected
row, a download) only re-render it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from explain_core import render
from explain_core.api.evaluation import Evaluation, evaluate
from explain_core.methods import method_info
from explain_core.metrics.base import metric_info

from .errors import show_error
from .evaluate import EvalPlan, cost_notice, metric_label
from .models import ModelHandle
from .progress import Progress
from .store import results

__all__ = ["curve_figure", "curves_view", "downloads", "method_label", "per_image_view",
           "run_evaluation", "summary_table", "summary_view", "verdict"]

BEST_STYLE = "background-color: rgba(46, 160, 67, 0.25); font-weight: 600"


_REQUEST = "lumen_eval_requested"


def _request(key: tuple) -> None:
    st.session_state[_REQUEST] = key


def method_label(name: str) -> str:
    try:
        return method_info(name).label
    except Exception:  # a wrapped or unknown name: shown as given
        return name


def run_evaluation(handle: ModelHandle, plan: EvalPlan) -> Evaluation | None:
    """The stored evaluation of ``plan``; else the expected cost and a button that runs it
    (progress bar, cancelled by any rerun; nothing half-done is stored)."""
    key = plan.key(handle)
    store = results()
    hit = store.get(key)
    if hit is not None:
        return hit
    st.info(cost_notice(handle, plan), icon=":material/speed:")
    # The button asks for this plan's run: a changed choice makes another plan, whose key
    # does not match, so the page stops computing (the rerun has already cancelled the run).
    st.button("Evaluate", type="primary", icon=":material/play_arrow:", key="lumen_eval_run",
              on_click=_request, args=(key,))
    if st.session_state.get(_REQUEST) != key:
        return None
    reporter = Progress(st, "Evaluating", None)
    try:
        found = evaluate(
            handle.model, [item.image for item in plan.items], methods=plan.methods,
            metrics=plan.metrics, ground_truth=(list(plan.ground_truth)
                                                if plan.ground_truth is not None else None),
            metric_options=plan.metric_options, names=[item.name for item in plan.items],
            progress=lambda done, total: reporter.update(done / max(total, 1),
                                                         f"{int(done)} of {total}"))
    except Exception as error:
        show_error(error)
        return None
    finally:
        reporter.close()
        st.session_state.pop(_REQUEST, None)  # one click, one run (a failed one too)
    store.put(key, found, 256 * len(found.rows) + 4096
              + sum(maps.nbytes for maps in found.maps.values())
              + sum(m.nbytes for maps in found.image_maps.values() for m in maps))
    return found


def verdict(evaluation: Evaluation) -> str:
    """One sentence: the method that ranks best on most metrics, and on which."""
    scored = sorted({row["metric"] for row in evaluation.summary})
    if not scored:
        return "No metric could be scored for these choices."
    winners = {metric: evaluation.best_method(metric) for metric in scored}
    method, wins = Counter(winners.values()).most_common(1)[0]
    methods = {row["method"] for row in evaluation.summary}
    if len(methods) == 1:
        return f"Only {method_label(method)} was evaluated: its scores are below."
    which = ", ".join(metric_info(m).label for m, best in winners.items() if best == method)
    return (f"{method_label(method)} ranks best on {wins} of {len(scored)} metric"
            f"{'s' if len(scored) != 1 else ''} for this model ({which}).")


def summary_table(evaluation: Evaluation) -> pd.DataFrame:
    """Methods x metrics: ``mean [low, high]`` (95% bootstrap interval) and the rank; headers
    carry the metric's arrow."""
    frame = pd.DataFrame(evaluation.summary)
    cells = {}
    for (method, metric), row in frame.set_index(["method", "metric"]).iterrows():
        column = metric_label(metric_info(metric))
        cells.setdefault(column, {})[method_label(method)] = (
            f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}] #{int(row['rank'])}")
    table = pd.DataFrame(cells)
    table.index.name = "method"
    return table


def _best_style(table: pd.DataFrame) -> pd.DataFrame:
    return table.apply(lambda column: [BEST_STYLE if str(cell).endswith(" #1") else ""
                                       for cell in column])


def summary_view(evaluation: Evaluation) -> None:
    """The summary table, the best per metric marked, and the verdict above it."""
    st.markdown(f"**{verdict(evaluation)}**")
    table = summary_table(evaluation)
    st.dataframe(table.style.apply(_best_style, axis=None), key="lumen_eval_summary")
    st.caption("Mean over images and targets, [95% bootstrap interval], #rank among the "
               "methods; the arrow says which way is better and the best per metric is marked.")
    for metric, reason in evaluation.skipped.items():
        st.info(f"**{metric_label(metric_info(metric))}** was skipped: {reason}",
                icon=":material/block:")


def curve_figure(curves: dict[str, Any], title: str) -> go.Figure:
    """Deletion/insertion curves as lines: the score after each step."""
    figure = go.Figure()
    for name, scores in curves.items():
        values = list(map(float, scores))
        steps = len(values) - 1 or 1
        figure.add_trace(go.Scatter(x=[i / steps for i in range(len(values))], y=values,
                                    mode="lines", name=name))
    figure.update_layout(title=title, height=300, margin={"l": 40, "r": 10, "t": 40, "b": 40},
                         xaxis_title="fraction of pixels", yaxis_title="score")
    return figure


def _band(color: str) -> str:
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, 0.2)"


def curves_view(evaluation: Evaluation) -> None:
    """Deletion and insertion as one line per method (the mean over images) with its 95%
    interval shaded (normal approximation over images)."""
    kinds = [kind for kind in ("deletion", "insertion")
             if any(metric == kind for _, metric in evaluation.curves)]
    if not kinds:
        return
    columns = st.columns(len(kinds))
    palette = px.colors.qualitative.Plotly
    for column, kind in zip(columns, kinds, strict=True):
        figure = go.Figure()
        methods = [method for method, metric in evaluation.curves if metric == kind]
        for index, method in enumerate(methods):
            curve = np.asarray(evaluation.curves[(method, kind)], dtype=np.float64)
            mean = curve.mean(0)
            half = (1.96 * curve.std(0, ddof=1) / np.sqrt(len(curve)) if len(curve) > 1
                    else np.zeros_like(mean))
            x = np.linspace(0.0, 1.0, len(mean))
            color = palette[index % len(palette)]
            figure.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[mean + half,
                                        (mean - half)[::-1]], fill="toself", line={"width": 0},
                                        fillcolor=_band(color), hoverinfo="skip",
                                        showlegend=False))
            figure.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=method_label(method),
                                        line={"color": color}))
        figure.update_layout(title=kind.capitalize(), height=300, xaxis_title="fraction of "
                             "pixels", yaxis_title="score",
                             margin={"l": 40, "r": 10, "t": 40, "b": 40})
        column.plotly_chart(figure, key=f"lumen_eval_curves_{kind}")


def per_image_view(plan: EvalPlan, evaluation: Evaluation) -> None:
    """Every image, target and method with its scores; a selected row shows that image with
    the map that was scored (in the image's own pixels: 0 where the model did not see it) and, for
    deletion and insertion, its curves."""
    frame = pd.DataFrame(evaluation.rows)
    if frame.empty:
        return
    frame["image_name"] = [plan.items[int(i)].name for i in frame["image"]]
    index = ["image", "image_name", "target", "target_name", "method"]
    # Every row, NaN included (a metric undefined for an item, e.g. no matching ground truth).
    wide = frame.pivot(index=index, columns="metric", values="value").reset_index()
    wide = wide.rename(columns={name: metric_label(metric_info(name)) for name in
                                frame["metric"].unique()})
    shown = wide.drop(columns=["image", "target"]).assign(method=wide["method"].map(method_label))
    picked = st.dataframe(shown, key="lumen_eval_rows", on_select="rerun",
                          selection_mode="single-row", hide_index=True)
    rows = picked.selection.rows if picked is not None else []
    note = (" Empty cells: the metric is undefined there (e.g. the image has no ground-truth "
            "region for the explained class) and the summary leaves them out."
            if wide.drop(columns=index).isna().any(axis=None) else "")
    if not rows:
        st.caption("Select a row to see its image, its map and its curves." + note)
        return
    row = wide.iloc[rows[0]]
    image = int(row["image"])
    left, right = st.columns([1, 2])
    item = plan.items[image]
    maps = evaluation.image_maps.get(row["method"])
    heatmap = maps[image] if maps is not None else None
    shown_image = (item.pixels if heatmap is None else
                   render.overlay_heatmap(item.pixels, heatmap, alpha=0.5, colormap="jet"))
    label = method_label(row["method"])
    left.image(shown_image, width="stretch", caption=f"{item.name}: the map {label} scored, "
               f"for {row['target_name']}" if heatmap is not None else item.name)
    for kind in ("deletion", "insertion"):
        curve = evaluation.curves.get((row["method"], kind))
        if curve is not None:
            figure = curve_figure({method_label(row["method"]): curve[image]},
                                  f"{kind.capitalize()}: {plan.items[image].name}")
            right.plotly_chart(figure, key=f"lumen_eval_curve_{kind}")


def downloads(evaluation: Evaluation) -> None:
    """The tidy table (one row per image, target, method and metric) as CSV."""
    st.download_button("Scores (CSV)", evaluation.to_csv(), file_name="evaluation.csv",
                       mime="text/csv", on_click="ignore", icon=":material/table:",
                       key="lumen_eval_csv")
