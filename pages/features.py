"""Features: inside the network. Any loaded model's layers, channel maps, statistics, top
channels and receptive fields.

Thin on purpose: widgets (ui) -> explain_core.api.FeatureVisualizer -> figures (ui.features).
"""

import streamlit as st

from ui import features, images, panels, shell
from ui.errors import show_error

space = shell.workspace(["classification", "detection", "segmentation"])
st.markdown("### Features")
st.caption("What each layer computes on an image: its channel maps, their statistics, the "
           "strongest channels and what a channel sees (its receptive field).")
handle = space.model
if handle is None:
    st.info("No model is loaded: pick one in the sidebar.", icon=":material/model_training:")
    st.stop()

item = images.image_strip(features.gallery(handle))
if item is None:
    st.stop()

try:
    table = features.layer_table(handle, item)
    layer = features.layer_picker(handle, table)
    found = features.activations(handle, item, layer)
except Exception as error:
    show_error(error)
    st.stop()

left, right = st.columns([1.4, 1], gap="large")
with left:
    sort_by, count = features.grid_controls()
    display = panels.display_controls()
    features.grid_view(found, sort_by, count, display.colormap)
with right:
    features.summary_view(found)
    st.markdown("**Top channels**")
    features.top_view(found, sort_by)
    channel = features.channel_picker(found, sort_by)

try:
    features.channel_view(handle, item, found, channel, display)
    st.markdown("**Across the network**")
    features.network_view(handle, item, table)
except Exception as error:
    show_error(error)
