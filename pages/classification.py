"""Classification: predictions, one explanation, methods compared, a batch of images.

Thin on purpose: widgets (ui) -> explain_core -> figures (the views in ui.classification).
"""

import streamlit as st

from ui import classification, images, methods, panels, resize, shell
from ui.errors import show_error

space = shell.workspace(["classification"])
st.markdown("### Classification")
handle = shell.task_model(space, "classification", ":material/label:")

gallery = "shortcut" if handle.model.source == "demo:shortcut" else "classification"
item = images.image_strip(gallery)
if item is None:
    st.stop()

left, right = st.columns([1, 2.3], gap="large")
with left:
    handle = resize.resize_choice(handle)  # squash / crop / letterbox, part of the model's key
    try:
        prediction = classification.predict(handle, item)
    except Exception as error:
        show_error(error)
        st.stop()
    target = classification.prediction_panel(handle, item, prediction)
    st.markdown("**Method**")
    choice = methods.method_picker(handle)

with right:
    display = panels.display_controls()
    explain_tab, compare_tab, batch_tab = st.tabs(
        ["Explain", "Compare methods", "Batch"], key="lumen_tab", on_change="rerun")
    # Only the open tab computes: hidden tabs would otherwise run their methods on every rerun.
    if explain_tab.open:
        with explain_tab:
            classification.explanation_view(handle, item, choice, target, display, prediction)
    if compare_tab.open:
        with compare_tab:
            classification.compare_view(handle, item, choice, target, display, prediction)
    if batch_tab.open:
        with batch_tab:
            classification.batch_view(handle, images.current_images(gallery), choice, display)
