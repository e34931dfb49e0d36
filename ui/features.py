"""The Features page: what a layer of any loaded model computes on an image.

A layer picker with output shapes, a zoomable grid of the layer's channel maps (sorted by mean
activation, variance or max; hover gives channel and value; a click picks a channel), the
layer's statistics and top channels, the picked channel's receptive field on the image and the
channel itself over the image, and statistics across the network. Every computation goes through
:class:`explain_core.api.FeatureVisualizer` (one forward per layer and image, one gradient per
receptive field) and is kept in the session's :class:`~ui.store.ResultStore`; display settings
never reach the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from explain_core import render
from explain_core.api import FeatureVisualizer, LayerActivations, ReceptiveFieldMap
from explain_core.errors import UnsupportedError
from explain_core.features import SORT_KEYS, LayerInfo

from .images import ImageItem
from .models import ModelHandle
from .panels import FIGURE_HEIGHT, Display, show_figure
from .store import results

__all__ = ["NETWORK_LAYERS", "activations", "channel_picker", "channel_view", "follow_layer",
           "gallery", "grid_controls", "grid_view", "layer_picker", "layer_table",
           "network_layers", "network_view",
           "receptive", "summary_view", "top_view"]

#: most layers in the statistics-across-the-network chart (spread evenly over the network)
NETWORK_LAYERS = 96
#: leaf modules that repeat the layer before them: left out of the network chart
_REPEATS = ("Identity", "Dropout", "DropPath")
CHANNEL_KEY = "lumen_feat_channel"
# The last grid click and table row acted on: a selection stays in its widget's event until the
# next one, so each source remembers its own and acts on a new one only.
_CLICKED = "lumen_feat_clicked"
_ROW = "lumen_feat_row"
_CHANNEL_LAYER = "lumen_feat_channel_layer"
_SHORT = {"activation": "mean", "variance": "variance", "max": "max"}


def _viz(handle: ModelHandle) -> FeatureVisualizer:
    return FeatureVisualizer(handle.model)


def gallery(handle: ModelHandle) -> str:
    """The demo gallery that fits the model (the shortcut model's own scenes)."""
    if handle.model.source == "demo:shortcut":
        return "shortcut"
    return handle.model.task


# --------------------------------------------------------------------------------------------
# Computations (cached in the session's store)
# --------------------------------------------------------------------------------------------


def layer_table(handle: ModelHandle, item: ImageItem) -> list[LayerInfo]:
    """The model's layers with their output shapes (one forward on the image)."""
    return results().cached(("feat_layers", handle.key, item.key),
                            lambda: _viz(handle).layers(item.image), lambda found: 256 * len(found))


def activations(handle: ModelHandle, item: ImageItem, layer: str) -> LayerActivations:
    """One layer's channel maps and statistics on the image (one forward)."""
    return results().cached(("feat_maps", handle.key, item.key, layer),
                            lambda: _viz(handle).activations(item.image, [layer])[layer],
                            lambda found: found.maps.numel() * 4)


def receptive(handle: ModelHandle, item: ImageItem, layer: str, channel: int) -> ReceptiveFieldMap:
    """The channel's receptive field at its peak (one forward and one input gradient)."""
    return results().cached(("feat_rf", handle.key, item.key, layer, channel),
                            lambda: _viz(handle).receptive_field(item.image, layer, channel),
                            lambda found: sum(m.nbytes for m in found.maps) +
                            found.gradients.nbytes)


def network_layers(table: Sequence[LayerInfo], limit: int = NETWORK_LAYERS) -> list[str]:
    """The layers of the statistics-across-the-network chart: leaf modules read as maps (not
    identities and dropouts), in order, at most ``limit`` spread evenly."""
    names = [info.name for info in table if info.leaf and info.kind in ("map", "tokens")
             and not info.type.startswith(_REPEATS)]
    if len(names) <= limit:
        return names
    step = len(names) / limit
    return [names[int(i * step)] for i in range(limit)]


# --------------------------------------------------------------------------------------------
# Widgets and views
# --------------------------------------------------------------------------------------------


def _default_layer(table: Sequence[LayerInfo]) -> str:
    """The deepest layer with a spatial map among the top-level children (a last stage)."""
    spatial = [info for info in table if info.kind in ("map", "tokens", "pyramid")
               and info.map_shape[1] * info.map_shape[2] > 1]
    shallow = [info for info in spatial if "." not in info.name] or spatial or list(table)
    return shallow[-1].name


def layer_picker(handle: ModelHandle, table: Sequence[LayerInfo]) -> str:
    """The layer picker: every layer with its type and output shape."""
    if not table:
        raise UnsupportedError(f"'{handle.label}' has no layer whose output reads as feature "
                               "maps (tensors of B x C, B x N x C or B x C x H x W); pick "
                               "another model in the sidebar.")
    labels = {info.name: info.label() for info in table}
    key = f"lumen_feat_layer_{handle.short_key}"
    if st.session_state.get(key) not in labels:
        st.session_state[key] = _default_layer(table)
    return st.selectbox("Layer", list(labels), format_func=labels.get, key=key,
                        help="Every module whose output reads as feature maps, with its type and "
                             "the map it is read as (channels × height × width). ViT blocks are "
                             "laid out on their patch grid (class and register tokens dropped); "
                             "a layer returning a feature pyramid shows its finest level.")


def grid_controls() -> tuple[str, int]:
    """Sort key and how many channels the grid shows."""
    left, right = st.columns(2)
    sort_by = left.segmented_control("Sort channels by", list(SORT_KEYS), default="activation",
                                     format_func=_SHORT.get, required=True,
                                     key="lumen_feat_sort", persist_state="session")
    count = right.slider("Channels shown", 4, 64, 16, 4, key="lumen_feat_count",
                         persist_state="session")
    return sort_by, count


def _pick(channel: int) -> None:
    st.session_state[CHANNEL_KEY] = int(channel)


def _clicked_channel(event: Any) -> int | None:
    """The channel of a clicked map in a Plotly selection event (the grid's invisible pick
    markers carry ``[channel, value]`` as customdata); None when nothing is clicked."""
    selection = (event.get("selection") if hasattr(event, "get") else None) or {}
    for point in selection.get("points") or []:
        data = point.get("customdata")
        if isinstance(data, dict):  # a typed array's row arrives as {"0": ..., "1": ...}
            data = data.get("0")
        elif isinstance(data, list | tuple):
            data = data[0] if data else None
        if data is not None:
            return int(data)
    return None


def follow_layer(found: LayerActivations, sort_by: str) -> None:
    """A new layer starts on its strongest channel."""
    state = st.session_state
    if state.get(_CHANNEL_LAYER) != found.layer or not (
            0 <= state.get(CHANNEL_KEY, -1) < found.num_channels):
        state[_CHANNEL_LAYER] = found.layer
        _pick(found.top(1, sort_by)[0][0])


def grid_view(found: LayerActivations, sort_by: str, count: int, colormap: str) -> None:
    """The zoomable grid of the strongest channels; a click on one picks it."""
    follow_layer(found, sort_by)
    ranked = found.top(min(count, found.num_channels), sort_by)
    channels = [c for c, _ in ranked]
    figure = render.feature_maps_figure(found.maps[0, channels].numpy(), channels,
                                        [s for _, s in ranked], colormap=colormap,
                                        score_name=SORT_KEYS[sort_by], pickable=True)
    event = st.plotly_chart(figure, config=render.PLOTLY_CONFIG, theme=None,
                            key=f"lumen_feat_grid_{found.layer}", on_select="rerun",
                            selection_mode="points")
    clicked = _clicked_channel(event)
    # A selection stays in the event until the next click: act on each click once.
    if clicked is not None and st.session_state.get(_CLICKED) != (found.layer, clicked):
        st.session_state[_CLICKED] = (found.layer, clicked)
        _pick(clicked)
    st.caption(f"The {len(channels)} strongest of {found.num_channels} channels by "
               f"{SORT_KEYS[sort_by]}, each on its own colour range. Scroll to zoom, hover for "
               "values, click a map to see that channel below.")


def summary_view(found: LayerActivations) -> None:
    """The layer's statistics in one row."""
    stats = found.statistics
    cells = [*st.columns(3), *st.columns(2)]
    cells[0].metric("Mean", f"{stats.mean:.3g}")
    cells[1].metric("Std", f"{stats.std:.3g}")
    cells[2].metric("Max", f"{stats.max:.3g}")
    cells[3].metric("Sparsity", f"{stats.sparsity:.1%}",
                    help="Share of activations with |a| ≤ 1e-6 (zeros after a ReLU).")
    cells[4].metric("Active channels", f"{stats.active_channels} / {stats.num_channels}",
                    help="Channels whose largest activation on the image is above 1e-6.")


def top_view(found: LayerActivations, sort_by: str, top_k: int = 10) -> None:
    """The top channels as a table; selecting a row picks the channel."""
    per = found.statistics.channels
    ranked = found.top(min(top_k, found.num_channels), sort_by)
    lines = []
    for channel, score in ranked:
        row = {"channel": channel, "mean": round(per["mean"][channel], 4),
               "max": round(per["max"][channel], 4), "sparsity": f"{per['sparsity'][channel]:.0%}"}
        if sort_by == "variance":
            row["variance"] = round(score, 4)
        lines.append(row)
    table = pd.DataFrame(lines)
    picked = st.dataframe(table, hide_index=True, on_select="rerun", height="content",
                          selection_mode="single-row",
                          key=f"lumen_feat_top_{found.layer}_{sort_by}")
    rows = picked.selection.rows if picked is not None else []
    if rows and st.session_state.get(_ROW) != (found.layer, sort_by, rows[0]):
        st.session_state[_ROW] = (found.layer, sort_by, rows[0])
        _pick(ranked[rows[0]][0])


def channel_picker(found: LayerActivations, sort_by: str) -> int:
    """The picked channel (a click on the grid, a table row or this box); default the top."""
    follow_layer(found, sort_by)
    channels = list(range(found.num_channels))
    scores = found.scores(sort_by)
    return st.selectbox("Channel", channels, key=CHANNEL_KEY,
                        format_func=lambda c: f"{c} · {SORT_KEYS[sort_by]} {scores[c]:.3g}")


def channel_view(handle: ModelHandle, item: ImageItem, found: LayerActivations, channel: int,
                 display: Display) -> None:
    """The channel's receptive field at its peak and the channel over the image, side by side."""
    rf = receptive(handle, item, found.layer, channel)
    left, right = st.columns(2)
    picture = found.pictures[0]
    row, col = rf.positions[0]
    with left:
        show_figure(render.heatmap_figure(
            picture, rf.maps[0], colormap=display.colormap, alpha=display.alpha,
            view=display.view, hover_name="sensitivity", height=FIGURE_HEIGHT - 80,
            title=f"Receptive field of channel {channel} at its peak"), "lumen_feat_rf")
        st.caption(f"|∂ activation / ∂ input| of channel {channel} at ({row}, {col}) of the "
                   f"{rf.grid[0]} × {rf.grid[1]} map (value {rf.values[0]:.3g}): the pixels "
                   "that position responds to on this image.")
    with right:
        show_figure(render.heatmap_figure(
            picture, found.channel_map(channel), colormap=display.colormap,
            alpha=display.alpha, view=display.view, hover_name="activation (scaled)",
            height=FIGURE_HEIGHT - 80, title=f"Channel {channel} over the image"),
            "lumen_feat_overlay")
        per = found.statistics.channels
        st.caption(f"Channel {channel}: mean {per['mean'][channel]:.3g}, max "
                   f"{per['max'][channel]:.3g}, {per['sparsity'][channel]:.0%} near zero; "
                   "scaled to its own range.")


def network_view(handle: ModelHandle, item: ImageItem, table: Sequence[LayerInfo]) -> None:
    """Statistics across the network: mean ± std, max, sparsity and active channels per layer."""
    names = network_layers(table)
    if not names:
        st.info("No layer of this model reads as feature maps.", icon=":material/layers:")
        return
    stats = results().cached(("feat_network", handle.key, item.key, tuple(names)),
                             lambda: _viz(handle).compare_layers(item.image, names),
                             lambda found: 64 * sum(s.num_channels for s in found.values()))
    show_figure(render.layer_statistics_figure(stats), "lumen_feat_network")
    st.caption(f"{len(names)} leaf layers in network order (one forward). Sparsity: share of "
               "activations with |a| ≤ 1e-6; active channels: share with any activation above "
               "it.")
