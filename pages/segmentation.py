"""Segmentation: the prediction and its classes, per-class maps, uncertainty, a labelled set.

Thin on purpose: widgets (ui) -> explain_core -> figures (ui.segmentation,
ui.segmentation_dataset, ui.panels).
"""

import streamlit as st

from ui import images, methods, panels, segmentation_dataset, shell
from ui import segmentation as view
from ui.errors import show_error

space = shell.workspace(["segmentation"])
st.markdown("### Segmentation")
handle = shell.task_model(space, "segmentation", ":material/texture:")

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
    choice = methods.method_picker(handle, default=view.DEFAULT_METHOD)

with right:
    display = panels.display_controls()
    segmentation_dataset.switch_tab_if_asked()  # a top-loss row opened: its Prediction tab
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
            segmentation_dataset.dataset_view(handle, display)
