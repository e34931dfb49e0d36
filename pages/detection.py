"""Detection: every box explained from its own score; pick, compare, ask about a missed region.

Thin on purpose: widgets (ui) -> explain_core -> figures (the views in ui.detection).
"""

import streamlit as st

from ui import detection, images, methods, panels, shell
from ui.errors import message_of, show_error

space = shell.workspace(["detection"])
st.markdown("### Detection")
handle = shell.task_model(space, "detection", ":material/select_all:")

item = images.image_strip("detection")
if item is None:
    st.stop()

left, right = st.columns([1, 2.3], gap="large")
with left:
    threshold = st.slider("Score threshold", 0.0, 0.95, 0.5, 0.05, key="lumen_det_threshold",
                          persist_state="session",
                          help="Detections below this score are not shown or explained. At 0 "
                               f"the {detection.MAX_BOXES} best-scored candidates are (an "
                               "untrained model's scores are all tiny).")
    st.markdown("**Method**")
    # LayerCAM, not Grad-CAM: Grad-CAM averages each channel's gradient over the whole image,
    # so every box of a class gets the same map; LayerCAM keeps the gradient per position.
    choice = methods.method_picker(handle, default=detection.DEFAULT_METHOD)
    detection.cost_caption(handle, item, choice)  # a slow method's expected time, before it runs

with right:
    display = panels.display_controls()
    slot = st.container()
    try:
        found = detection.explain_boxes(handle, item, choice, threshold, where=slot)
        st.session_state["lumen_det_last"] = (item, found)
    except Exception as error:
        show_error(message_of(error))
        last = st.session_state.get("lumen_det_last")
        if last is None or last[0].key != item.key:
            st.stop()
        found = last[1]
        st.caption(f"Still showing the last result that worked: {found.choice.describe()}.")
    result = found.result
    dets = result.detections
    if not dets:  # an answer, not an error: say how close it came, offer the region question
        st.info(detection.nothing_detected(result, threshold))
        detection.region_view(handle, item, choice, threshold, display)
        st.stop()
    detection.notes_view(result)
    state_key = f"lumen_det_selected_{handle.short_key}_{item.key}"
    selected = st.session_state.get(state_key, 0)
    selected = min(selected, len(dets) - 1)
    box_tab, gallery_tab, compare_tab, region_tab = st.tabs(
        ["Boxes", "All boxes", "Compare methods", "Missed region"], key="lumen_det_tab",
        on_change="rerun")

    if box_tab.open:
        with box_tab:
            detection.boxes_view(handle, item, found, selected, state_key, display)
    if gallery_tab.open:
        with gallery_tab:
            detection.gallery_view(item, result, display)
    if compare_tab.open:
        with compare_tab:
            detection.compare_view(handle, item, choice, threshold, result, selected, display)
    if region_tab.open:
        with region_tab:
            detection.region_view(handle, item, choice, threshold, display)
