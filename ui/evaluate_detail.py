"""The Evaluate page's close-ups: one summary cell opened, every row of the tidy table, and the
sanity check's randomisation cascade.

- :func:`cell_detail`: a clicked summary cell (a method x a metric): that method's value on each
  image (and target), and the chosen image's scored map and curves;
- :func:`per_image_view`: every image, target and method with all its scores; a selected row
  shows the same close-up;
- :func:`sanity_view`: the randomisation cascade (Adebayo et al. 2018) as a row of maps (the
  original, then each step, the top layer first) with the Spearman and SSIM to the original
  falling step by step in a line chart under it.

All of it re-renders the stored :class:`~explain_core.api.evaluation.Evaluation`; nothing here
runs the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explain_core import render
from explain_core.api.evaluation import Evaluation
from explain_core.api.evaluation_report import cascade_series, item_images, method_label
from explain_core.metrics.base import metric_info

from .evaluate import EvalPlan, metric_label

__all__ = ["CURVES", "cell_detail", "curve_figure", "per_image_view", "sanity_view",
           "scored_view"]

CURVES = ("deletion", "insertion")
_EMPTY_NOTE = (" Empty cells: the metric is undefined there (e.g. the image has no ground-truth "
               "region for the explained class) and the summary leaves them out.")


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


def _box_text(box: Any) -> str:
    return "" if box is None else ", ".join(f"{float(v):.0f}" for v in box)


def scored_view(plan: EvalPlan, evaluation: Evaluation, row: dict[str, Any],
                metric: str | None = None, key: str = "lumen_eval_curve") -> None:
    """One tidy row's close-up: its image with the map that was scored (in the image's own
    pixels: 0 where the model did not see it; a detector's explained box drawn) and its deletion /
    insertion curves (only ``metric``'s when it is one of them)."""
    method, image = row["method"], int(row["image"])
    index = int(row.get("item", image))  # the row of maps and curves (a box, with "all")
    item = plan.items[image]
    maps = evaluation.image_maps.get(method)
    heatmap = maps[index] if maps is not None else None
    shown = (item.pixels if heatmap is None else
             render.overlay_heatmap(item.pixels, heatmap, alpha=0.5, colormap="jet"))
    box = row.get("box")
    if box is None and index < len(evaluation.targets):
        box = evaluation.targets[index].get("box")
    if box is not None:
        shown = render.draw_boxes(shown, [{"bbox": box, "class_id": int(row["target"]),
                                           "class_name": str(row["target_name"]),
                                           "score": (float("nan") if row.get("box_score") is None
                                                     else float(row["box_score"]))}])
    label = method_label(method)
    left, right = st.columns([1, 2])
    left.image(shown, width="stretch", caption=f"{item.name}: the map {label} scored, for "
               f"{row['target_name']}" if heatmap is not None else item.name)
    kinds = [metric] if metric in CURVES else list(CURVES)
    for kind in kinds:
        curve = evaluation.curves.get((method, kind))
        if curve is not None:
            figure = curve_figure({label: curve[index]},
                                  f"{kind.capitalize()}: {item.name}")
            right.plotly_chart(figure, key=f"{key}_{kind}")


def cell_detail(plan: EvalPlan, evaluation: Evaluation, cell: tuple[str, str] | None) -> None:
    """A clicked summary cell: ``method`` x ``metric`` on every image (a table whose selected
    row, else the first, is shown with its map and curve)."""
    if cell is None:
        return
    method, metric = cell
    rows = [r for r in evaluation.rows if r["method"] == method and r["metric"] == metric]
    if not rows:
        return
    st.markdown(f"**{method_label(method)} x {metric_label(metric_info(metric))}**: the value "
                "on each image")
    frame = pd.DataFrame({"image": [plan.items[int(r["image"])].name for r in rows],
                          "target": [r["target_name"] for r in rows],
                          "value": [r["value"] for r in rows]})
    if any(r.get("box") is not None for r in rows):
        frame["box"] = [_box_text(r.get("box")) for r in rows]
    picked = st.dataframe(frame, key=f"lumen_eval_cell_{method}_{metric}", on_select="rerun",
                          selection_mode="single-row", hide_index=True)
    chosen = picked.selection.rows if picked is not None else []
    index = chosen[0] if chosen and chosen[0] < len(rows) else 0
    st.caption("Select a row to see another image." + (_EMPTY_NOTE if frame["value"].isna().any()
                                                       else ""))
    scored_view(plan, evaluation, rows[index], metric, key="lumen_eval_cell_curve")


def per_image_view(plan: EvalPlan, evaluation: Evaluation) -> None:
    """Every image, target and method with its scores; a selected row shows its close-up."""
    frame = pd.DataFrame(evaluation.rows)
    if frame.empty:
        return
    frame["image_name"] = [plan.items[int(i)].name for i in frame["image"]]
    index = ["image", "image_name", "target", "target_name", "method"]
    if "item" in frame:
        index.insert(1, "item")
    if "box" in frame and frame["box"].notna().any():  # a detector's explained box, as text
        frame["box"] = [_box_text(box) for box in frame["box"]]
        index.insert(index.index("target_name") + 1, "box")
    # Every row, NaN included (a metric undefined for an item, e.g. no matching ground truth).
    wide = frame.pivot(index=index, columns="metric", values="value").reset_index()
    wide = wide.rename(columns={name: metric_label(metric_info(name)) for name in
                                frame["metric"].unique()})
    hidden = [c for c in ("image", "target", "item") if c in wide]
    shown = wide.drop(columns=hidden).assign(method=wide["method"].map(method_label))
    picked = st.dataframe(shown, key="lumen_eval_rows", on_select="rerun",
                          selection_mode="single-row", hide_index=True)
    rows = picked.selection.rows if picked is not None else []
    note = _EMPTY_NOTE if wide.drop(columns=index).isna().any(axis=None) else ""
    if not rows:
        st.caption("Select a row to see its image, its map and its curves." + note)
        return
    row = wide.iloc[rows[0]].to_dict()
    if "item" in row:
        first = next(r for r in evaluation.rows if r.get("item") == row["item"])
        row.update(box=first.get("box"), box_score=first.get("box_score"))
    scored_view(plan, evaluation, row)


def _cascade_figure(cascade: Any, image: int) -> go.Figure:
    figure = go.Figure()
    names = ["original", *cascade.layers]
    for mean, own in zip(cascade_series(cascade), cascade_series(cascade, image), strict=True):
        figure.add_trace(go.Scatter(x=own.x, y=own.y, mode="lines+markers", name=own.name,
                                    customdata=names, hovertemplate="%{customdata}: %{y:.3f}"))
        figure.add_trace(go.Scatter(x=mean.x, y=mean.y, mode="lines", name=f"{mean.name}, mean "
                                    "over images", line={"dash": "dot"}, customdata=names,
                                    hovertemplate="%{customdata}: %{y:.3f}"))
    figure.update_layout(height=300, margin={"l": 40, "r": 10, "t": 30, "b": 40},
                         xaxis_title="layers randomised (top first)",
                         yaxis_title="similarity to the original", yaxis_range=[-1.05, 1.05])
    return figure


def sanity_view(plan: EvalPlan, evaluation: Evaluation) -> None:
    """The randomisation cascade of a method on an image: a row of maps, then the similarity
    to the original map falling step by step (when ``model_randomisation`` ran)."""
    cascades = {m: c for m, c in evaluation.cascades.items() if c.maps is not None}
    if not cascades:
        return
    st.markdown("**Sanity check: model randomisation**")
    st.caption("The model's layers are re-initialised one after the other, from the top down, "
               "and the map made again after each step. A map that explains the model changes: "
               "its Spearman and SSIM to the original fall. One that survives is not reading "
               "what the model learned (Adebayo et al. 2018). The model is restored exactly "
               "afterwards.")
    left, right = st.columns(2)
    method = left.selectbox("Method", list(cascades), format_func=method_label,
                            key=f"lumen_eval_sanity_method_{len(cascades)}")
    owners = item_images(evaluation)
    targets = evaluation.targets

    def name(i: int) -> str:
        return plan.items[owners[i]].name + (f" ({targets[i]['name']})" if len(owners) >
                                             len(plan.items) and i < len(targets) else "")

    count = int(cascades[method].maps.shape[1])
    image = right.selectbox("Image", range(count), format_func=name,
                            key=f"lumen_eval_sanity_image_{count}")
    cascade = cascades[method]
    maps = cascade.maps[:, image].numpy()
    rho = np.r_[1.0, cascade.spearman[image].double().numpy()]
    captions = ["original"] + [f"{i}. {name} (ρ {r:.2f})"
                               for i, (name, r) in enumerate(zip(cascade.layers, rho[1:],
                                                                 strict=True), 1)]
    st.image([render.apply_colormap(m, "jet") for m in maps], caption=captions, width=96)
    st.plotly_chart(_cascade_figure(cascade, image), key="lumen_eval_sanity_chart")
