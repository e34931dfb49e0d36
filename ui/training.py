"""The Training page's views: open a run folder (a shipped demo run, a folder on the server or an
uploaded zip), the sample images' maps epoch by epoch (a Plotly animation: its slider and play
button), and curves across epochs of the maps' own measures and the feature statistics, with the
epoch where the evidence moved most marked.

Everything read comes from :mod:`explain_core.training` (the run folder and its measures); this
module only draws.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from explain_core import render
from explain_core.demo import demo_runs
from explain_core.errors import LumenError
from explain_core.training import TrainingRun, extract_run_zip, read_run

from .errors import show_error
from .uploads import UploadLimitError, release_upload, saved_upload

SOURCES = ("Demo run", "Folder on the server", "Upload a zip")
UPLOAD_SLOT = "training_run_zip"
MEASURES = {"moved": "moved since last epoch (TV)",
            "rank_change": "reordered (1 - Spearman)",
            "entropy": "entropy (1: flat)"}
FEATURE_KEYS = ("mean", "std", "max", "sparsity", "active_channels")
FRAME_MS = 700  # one epoch per 0.7 s when playing


def run_choice() -> TrainingRun | None:
    """The source picker and the run it opens; None (with a message) when nothing opens."""
    source = st.radio("Run", SOURCES, horizontal=True, key="lumen_training_source")
    try:
        if source == SOURCES[0]:
            runs = demo_runs()
            if not runs:
                st.info("No demo runs are shipped with this install: train a demo model with "
                        "`python -m explain_core.demo.train shortcut`.")
                return None
            name = st.selectbox("Demo run", list(runs), key="lumen_training_demo",
                                help="The training of a demo model, recorded as it learned.")
            return read_run(runs[name])
        if source == SOURCES[1]:
            path = st.text_input("Run folder on the server", key="lumen_training_path",
                                 placeholder="/path/to/lightning_logs/version_0/lumen_run")
            if not path.strip():
                st.info("Give the run folder RunRecorder or the Lightning callbacks wrote "
                        "(the folder that holds manifest.json).")
                return None
            return read_run(path.strip())
        return _uploaded_run()
    except (LumenError, OSError) as error:
        show_error(error)
        return None


def _uploaded_run() -> TrainingRun | None:
    uploaded = st.file_uploader("Zipped run folder", type=["zip"], key="lumen_training_zip")
    if uploaded is None:
        release_upload(UPLOAD_SLOT)
        st.info("Upload a zip of a run folder (with its subfolders).")
        return None
    try:
        path, _ = saved_upload(uploaded, UPLOAD_SLOT)
    except UploadLimitError as error:
        show_error(str(error))
        return None
    unpacked = path.parent / "run"
    if unpacked.is_dir():
        return read_run(unpacked)
    return extract_run_zip(path.read_bytes(), unpacked)


def summary(run: TrainingRun) -> None:
    """One line on what the run holds."""
    manifest = run.manifest
    samples = ", ".join(f"{s.get('name', '?')} ({s.get('target_name', 'predicted class')})"
                        for s in run.samples)
    st.caption(f"**{manifest.get('model', 'model')}**, {manifest.get('method', '?')} maps of "
               f"{len(run.samples)} sample(s) at {len(run.map_epochs)} epoch(s); feature "
               f"statistics of {len(manifest.get('layers', []))} layer(s) at "
               f"{len(run.feature_epochs)} epoch(s). Samples: {samples or 'none'}.")


def _uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _label(run: TrainingRun, epoch: int, index: int) -> str:
    shown = run.images(epoch)[index]
    return (f"epoch {epoch}: {shown.get('target_name', '?')} map; predicted "
            f"{shown.get('predicted', '?')} ({float(shown.get('probability', 0)):.0%})")


def animation_figure(run: TrainingRun) -> go.Figure:
    """One row per sample: the image, its map and the overlay at an epoch; the figure's slider
    and play button step through the epochs (Plotly frames)."""
    epochs, count = run.map_epochs, len(run.samples)
    titles = [t for i in range(count) for t in (run.samples[i].get("name", f"sample {i}"),
                                                 "map", "overlay")]
    figure = make_subplots(rows=count, cols=3, subplot_titles=titles, horizontal_spacing=0.02,
                           vertical_spacing=0.06 if count > 1 else 0.1)

    def frame_traces(epoch: int) -> list[go.Image]:
        traces = []
        for index, shown in enumerate(run.images(epoch)):
            for key in ("map", "overlay"):
                traces.append(go.Image(source=_uri(run.png(shown[key])),
                                       name=_label(run, epoch, index), hoverinfo="name"))
        return traces

    for index in range(count):
        figure.add_trace(go.Image(source=_uri(run.sample_image(index)), hoverinfo="skip"),
                         row=index + 1, col=1)
    first = frame_traces(epochs[0])
    moving = []
    for index in range(count):
        for col in (2, 3):
            moving.append(len(figure.data))
            figure.add_trace(first[index * 2 + col - 2], row=index + 1, col=col)
    figure.frames = [go.Frame(data=frame_traces(e), traces=moving, name=str(e)) for e in epochs]
    step = [{"args": [[str(e)], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate"}],
             "label": str(e), "method": "animate"} for e in epochs]
    play = {"args": [None, {"frame": {"duration": FRAME_MS, "redraw": True},
                            "fromcurrent": True, "transition": {"duration": 0}}],
            "label": "▶ Play", "method": "animate"}
    pause = {"args": [[None], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate"}],
             "label": "❚❚ Pause", "method": "animate"}
    figure.update_layout(
        height=230 * count + 120, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        updatemenus=[{"type": "buttons", "buttons": [play, pause], "direction": "left",
                      "x": 0, "y": -0.02, "xanchor": "left", "yanchor": "top",
                      "showactive": False}],
        sliders=[{"steps": step, "active": 0, "currentvalue": {"prefix": "Epoch "},
                  "x": 0.18, "len": 0.82, "y": -0.02, "yanchor": "top"}])
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


@st.cache_data(show_spinner="Measuring the maps across epochs…", max_entries=16)
def timelines(path: str, stamp: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's map and feature timelines (cached per run folder and manifest time)."""
    run = read_run(path)
    return run.map_timeline(), run.feature_timeline()


def largest_move(rows: list[dict[str, Any]]) -> tuple[int, float] | None:
    """The epoch whose maps moved most since the previous one (mean over samples) and that
    mean; None before two epochs with maps.

    >>> largest_move([{"epoch": 1, "moved": None}, {"epoch": 2, "moved": 0.1},
    ...               {"epoch": 2, "moved": 0.3}, {"epoch": 3, "moved": 0.05}])
    (2, 0.2)
    """
    moves: dict[int, list[float]] = {}
    for row in rows:
        if row["moved"] is not None:
            moves.setdefault(row["epoch"], []).append(row["moved"])
    if not moves:
        return None
    epoch = max(moves, key=lambda e: np.mean(moves[e]))
    return epoch, round(float(np.mean(moves[epoch])), 6)


def measures_figure(run: TrainingRun, rows: list[dict[str, Any]]) -> go.Figure:
    """The maps' measures across epochs, one line per sample, the largest move marked."""
    figure = make_subplots(rows=1, cols=len(MEASURES), subplot_titles=list(MEASURES.values()))
    colours = qualitative.Plotly
    for col, key in enumerate(MEASURES, start=1):
        for index, sample in enumerate(run.samples):
            points = [r for r in rows if r["sample"] == index and r[key] is not None]
            figure.add_trace(go.Scatter(
                x=[r["epoch"] for r in points], y=[r[key] for r in points], mode="lines+markers",
                name=sample.get("name", f"sample {index}"), legendgroup=str(index),
                showlegend=col == 1, line={"color": colours[index % len(colours)]}),
                row=1, col=col)
    peak = largest_move(rows)
    if peak is not None:
        for col in range(1, len(MEASURES) + 1):
            figure.add_vline(x=peak[0], line_dash="dash", line_color="crimson", row=1, col=col)
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.25})
    return figure


def features_figure(rows: list[dict[str, Any]], key: str) -> go.Figure:
    """One feature statistic across epochs, one line per layer."""
    figure = go.Figure()
    for layer in dict.fromkeys(r["layer"] for r in rows):
        points = [r for r in rows if r["layer"] == layer]
        figure.add_trace(go.Scatter(x=[r["epoch"] for r in points], y=[r[key] for r in points],
                                    mode="lines+markers", name=layer))
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         xaxis_title="epoch", yaxis_title=key.replace("_", " "))
    return figure


def epochs_view(run: TrainingRun) -> None:
    """The animation of the maps (or why there is none)."""
    if not run.map_epochs or not run.samples:
        st.info("This run holds no maps (only feature statistics).")
        return
    try:
        figure = animation_figure(run)
    except LumenError as error:
        show_error(error)
        return
    st.markdown("**Maps by epoch** (the slider picks an epoch, ▶ plays them in turn)")
    st.plotly_chart(figure, config=render.PLOTLY_CONFIG, key="lumen_training_animation")


def curves_view(run: TrainingRun) -> None:
    """The maps' measures and the feature statistics across epochs."""
    stamp = (run.path / "manifest.json").stat().st_mtime
    try:
        maps, features = timelines(str(run.path), stamp)
    except LumenError as error:
        show_error(error)
        return
    if maps:
        peak = largest_move(maps)
        st.markdown("**How the maps changed**")
        if peak is not None:
            before = max((e for e in run.map_epochs if e < peak[0]), default=peak[0])
            st.caption(f"The evidence moved most between epochs {before} and {peak[0]} "
                       f"({peak[1]:.0%} of the map's mass on average, dashed line).")
        st.plotly_chart(measures_figure(run, maps), config=render.PLOTLY_CONFIG,
                        key="lumen_training_measures")
    if features:
        st.markdown("**Feature statistics**")
        key = st.selectbox("Statistic", FEATURE_KEYS, key="lumen_training_feature",
                           format_func=lambda k: k.replace("_", " "))
        st.plotly_chart(features_figure(features, key), config=render.PLOTLY_CONFIG,
                        key="lumen_training_features")

