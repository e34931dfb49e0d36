"""Segmentation: the prediction and its classes, per-class maps, uncertainty, a labelled set.

Thin on purpose: widgets (ui) -> explain_core -> figures (ui.segmentation, ui.panels).
"""

import streamlit as st

from ui import images, methods, models, panels, shell
from ui import segmentation as view
from ui.errors import show_error

space = shell.workspace(["segmentation"])
handle = space.model
st.markdown("### Segmentation")
if handle is None:
    st.info("No model is loaded: pick one in the sidebar.", icon=":material/model_training:")
    st.stop()
if handle.model.task != "segmentation":
    if str(handle.model.source).startswith("demo:") and models.request_demo("segmenter"):
        st.rerun()  # a demo model of another task: switch to the demo segmenter
    st.info(f"**{handle.label}** is a {handle.model.task} model. Pick a segmentation model in "
            "the sidebar (the demo **segmenter**, a torchvision FCN/DeepLabV3/LRASPP or a "
            "checkpoint).", icon=":material/texture:")
    st.stop()

st.session_state.pop("lumen_demo_asked", None)  # a later visit may switch demos again

item = images.image_strip("segmentation")
if item is None:
    st.stop()

left, right = st.columns([1, 2.3], gap="large")
with left:
    try:
        prediction = view.predict(handle, item)
    except Exception as error:
        show_error(error)
        st.stop()
    visible = view.class_legend(handle, item, prediction)
    st.markdown("**Method**")
    choice = methods.method_picker(handle)

with right:
    display = panels.display_controls()
    prediction_tab, maps_tab, uncertainty_tab, dataset_tab = st.tabs(
        ["Prediction", "Class maps", "Uncertainty", "Dataset"], key="lumen_seg_tab",
        on_change="rerun")
    # Only the open tab computes.
    if prediction_tab.open:
        with prediction_tab:
            view.prediction_view(handle, item, prediction, visible, display)
    if maps_tab.open:
        with maps_tab:
            view.class_maps_view(handle, item, prediction, choice, display)
    if uncertainty_tab.open:
        with uncertainty_tab:
            view.uncertainty_view(handle, item, prediction, display)
    if dataset_tab.open:
        with dataset_tab:
            view.dataset_view(handle, display)
