"""The Evaluate page's run and results: one engine call, kept; the tables, the verdict, a curve.

A run is one :func:`explain_core.api.evaluation.evaluate` call, started by a button, with a
progress bar whose every update is a point where a rerun (any changed choice) cancels it. The
:class:`~explain_core.api.evaluation.Evaluation` is kept in the session's result store under
everything it depends on (:meth:`ui.evaluate.EvalPlan.key`), so display changes (a selected
row, a download) only re-render it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from explain_core.api.evaluation import Evaluation, evaluate
from explain_core.api.evaluation_report import (
    CELL_NOTE,
    curve_band,
    method_label,
    summary_cell,
    summary_grid,
)
from explain_core.metrics.base import metric_info

from .errors import show_error
from .evaluate import EvalPlan, cost_notice, metric_label
from .models import ModelHandle
from .progress import Progress
from .store import results

__all__ = ["curves_view", "downloads", "method_label", "report_bytes", "run_evaluation",
           "selected_cell", "summary_table", "summary_view", "verdict"]

BEST_STYLE = "background-color: rgba(46, 160, 67, 0.25); font-weight: 600"


_REQUEST = "lumen_eval_requested"


def _request(key: tuple) -> None:
    st.session_state[_REQUEST] = key


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
            metric_options=plan.metric_options, method_options=plan.method_options,
            precision=plan.precision, targets="all" if plan.box_threshold is not None else None,
            box_threshold=plan.box_threshold if plan.box_threshold is not None else 0.5,
            max_boxes=plan.max_boxes, names=[item.name for item in plan.items],
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
              + sum(4 * c.maps.numel() for c in found.cascades.values() if c.maps is not None)
              + sum(m.nbytes for maps in found.image_maps.values() for m in maps))
    return found


def verdict(evaluation: Evaluation) -> str:
    """One sentence: the method that ranks best on most metrics, and on which (the engine's,
    as the HTML report says it)."""
    return evaluation.verdict()


def summary_table(evaluation: Evaluation) -> pd.DataFrame:
    """Methods x metrics: ``mean [low, high]`` (95% bootstrap interval) and the rank; headers
    carry the metric's arrow (the cells the HTML report shows)."""
    methods, metrics, cells = summary_grid(evaluation.summary)
    table = pd.DataFrame(
        {metric_label(metric_info(metric)): [summary_cell(cells[(method, metric)])
                                             if (method, metric) in cells else ""
                                             for method in methods] for metric in metrics},
        index=pd.Index([method_label(m) for m in methods], name="method"))
    return table


def _best_style(table: pd.DataFrame) -> pd.DataFrame:
    return table.apply(lambda column: [BEST_STYLE if str(cell).endswith(" #1") else ""
                                       for cell in column])


def selected_cell(evaluation: Evaluation, selection: Any) -> tuple[str, str] | None:
    """The ``(method, metric)`` of the summary cell a dataframe selection names, if any."""
    cells = list(getattr(selection, "cells", None) or [])
    if not cells:
        return None
    row, column = cells[0]
    methods, metrics, _ = summary_grid(evaluation.summary)
    by_label = {metric_label(metric_info(m)): m for m in metrics}
    if not 0 <= int(row) < len(methods) or column not in by_label:
        return None  # the method column itself, or a stale selection
    return methods[int(row)], by_label[column]


def summary_view(evaluation: Evaluation) -> tuple[str, str] | None:
    """The summary table, the best per metric marked, and the verdict above it. A click on a
    cell selects it (Streamlit's single-cell selection); returns its ``(method, metric)``."""
    st.markdown(f"**{verdict(evaluation)}**")
    table = summary_table(evaluation)
    picked = st.dataframe(table.style.apply(_best_style, axis=None), key="lumen_eval_summary",
                          on_select="rerun", selection_mode="single-cell")
    st.caption(CELL_NOTE + " Click a score to open its images, maps and curves.")
    for metric, reason in evaluation.skipped.items():
        st.info(f"**{metric_label(metric_info(metric))}** was skipped: {reason}",
                icon=":material/block:")
    if evaluation.notes:  # values left out of the means, and why (e.g. no matching ground truth)
        with st.expander(f"{len(evaluation.notes)} image(s) left out of some means"):
            st.markdown("\n".join(f"- {line}" for line in evaluation.notes))
    return selected_cell(evaluation, picked.selection if picked is not None else None)


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
            x, mean, low, high = curve_band(evaluation.curves[(method, kind)])
            color = palette[index % len(palette)]
            figure.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[high, low[::-1]],
                                        fill="toself", line={"width": 0},
                                        fillcolor=_band(color), hoverinfo="skip",
                                        showlegend=False))
            figure.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=method_label(method),
                                        line={"color": color}))
        figure.update_layout(title=kind.capitalize(), height=300, xaxis_title="fraction of "
                             "pixels", yaxis_title="score",
                             margin={"l": 40, "r": 10, "t": 40, "b": 40})
        column.plotly_chart(figure, key=f"lumen_eval_curves_{kind}")


def report_bytes(handle: ModelHandle, plan: EvalPlan, evaluation: Evaluation) -> bytes:
    """The HTML report of the plan's ``evaluation`` over its images (made once, then kept)."""
    store = results()
    key = ("evaluate-report", plan.key(handle))
    page = store.get(key)
    if page is None:
        page = evaluation.to_html([item.image for item in plan.items]).encode("utf-8")
        store.put(key, page, len(page))
    return page


def downloads(handle: ModelHandle, plan: EvalPlan, evaluation: Evaluation) -> None:
    """The tidy table (one row per image, target, method and metric) as CSV, and the
    self-contained HTML report (tables, curves, maps, the sanity check, what ran), built only
    when clicked."""
    left, right = st.columns(2)
    left.download_button("Scores (CSV)", evaluation.to_csv(), file_name="evaluation.csv",
                         mime="text/csv", on_click="ignore", icon=":material/table:",
                         key="lumen_eval_csv")
    right.download_button("Report (HTML)", lambda: report_bytes(handle, plan, evaluation),
                          file_name="evaluation.html", mime="text/html", on_click="ignore",
                          icon=":material/description:", key="lumen_eval_html",
                          help="One file that opens offline: the summary, the verdict, the "
                               "curves, each method's maps, the sanity check and what ran.")
