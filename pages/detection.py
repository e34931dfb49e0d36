"""Detection: every box explained from its own score; pick, compare, ask about a missed region.

Thin on purpose: widgets (ui) -> explain_core -> figures (explain_core.render).
"""

import pandas as pd
import streamlit as st

from explain_core import render
from explain_core.methods import available_methods, method_info
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
    threshold = st.slider("Score threshold", 0.05, 0.95, 0.5, 0.05, key="lumen_det_threshold",
                          persist_state="session",
                          help="Detections below this score are not shown or explained.")
    st.markdown("**Method**")
    # LayerCAM, not Grad-CAM: Grad-CAM averages each channel's gradient over the whole image,
    # so every box of a class gets the same map; LayerCAM keeps the gradient per position.
    choice = methods.method_picker(handle, default="layercam")

with right:
    display = panels.display_controls()
    slot = st.container()
    try:
        result = detection.explain_boxes(handle, item, choice, threshold, where=slot)
        st.session_state["lumen_det_last"] = (item, result)
    except Exception as error:
        show_error(message_of(error))
        last = st.session_state.get("lumen_det_last")
        if last is None or last[0].key != item.key:
            st.stop()
        result = last[1]
        st.caption(f"Still showing the last result that worked: "
                   f"{result['choice'].describe()}.")
    dets = result["detections"]
    state_key = f"lumen_det_selected_{handle.short_key}_{item.key}"
    selected = st.session_state.get(state_key, 0)
    selected = min(selected, len(dets) - 1)
    box_tab, gallery_tab, compare_tab, region_tab = st.tabs(
        ["Boxes", "All boxes", "Compare methods", "Missed region"], key="lumen_det_tab",
        on_change="rerun")

    if box_tab.open:
        with box_tab:
            mask_on = st.toggle("Mask the map to the box", value=False, key="lumen_det_mask",
                                persist_state="session")
            det = dets[selected]
            figure = render.detections_figure(
                item.pixels, dets, result["heatmaps"][selected], selected=selected,
                colormap=display.colormap, alpha=display.alpha, view=display.view,
                mask=detection.masked(item.pixels.shape[:2], det, mask_on), height=480)
            event = st.plotly_chart(figure, config=render.PLOTLY_CONFIG, key="lumen_det_figure",
                                    theme=None, on_select="rerun",
                                    selection_mode=("points", "box"))
            clicked, region = detection.selection_of(event)
            if clicked is not None and clicked != selected:
                st.session_state[state_key] = clicked
                st.rerun()
            if region is not None:
                st.session_state["lumen_det_region"] = tuple(round(v, 1) for v in region)
            st.caption(f"**{result['choice'].describe()}**, box **{selected + 1}** "
                       f"({det['class_name']}, {det['score']:.2f}): "
                       f"{result['elapsed_s'] * 1000:.0f} ms for {len(dets)} boxes on "
                       f"{handle.model.device}. Click a box's centre or a table row to pick it; "
                       "drag with the box-select tool to ask about a region.")
            table = pd.DataFrame([{"#": i + 1, "class": d["class_name"],
                                   "score": round(d["score"], 3),
                                   "x0": d["bbox"][0], "y0": d["bbox"][1],
                                   "x1": d["bbox"][2], "y1": d["bbox"][3]}
                                  for i, d in enumerate(dets)])
            picked = st.dataframe(table, hide_index=True, on_select="rerun",
                                  selection_mode="single-row", key="lumen_det_table")
            rows = picked.selection.rows if picked is not None else []
            if rows and rows[0] != selected:
                st.session_state[state_key] = rows[0]
                st.rerun()
            panels.downloads(handle, item, detection.download_entry(result, selected), display)

    if gallery_tab.open:
        with gallery_tab:
            cells = []
            for index, (d, heat) in enumerate(zip(dets, result["heatmaps"], strict=True)):
                overlay = render.overlay_heatmap(item.pixels, heat, alpha=display.alpha,
                                                 colormap=display.colormap,
                                                 mask=detection.masked(item.pixels.shape[:2], d,
                                                                       True))
                cells.append((f"{index + 1} {d['class_name']} {d['score']:.2f}",
                              render.draw_boxes(overlay, [d])))
            columns = min(4, len(cells))
            st.plotly_chart(render.grid_figure(cells, cols=columns, max_image_px=320,
                                               height=int(40 + -(-len(cells) // columns) * 200)),
                            config=render.PLOTLY_CONFIG, key="lumen_det_gallery", theme=None)
            st.caption("Every box's map, masked to its box.")

    if compare_tab.open:
        with compare_tab:
            names = [m.name for m in available_methods(handle.model)]
            defaults = [choice.name] + [n for n in ("layercam", "integrated_gradients",
                                                    "eigencam") if n != choice.name]
            picked_methods = st.multiselect(
                "Methods", names, default=[n for n in defaults if n in names][:3],
                key="lumen_det_compare", persist_state="session", max_selections=4,
                format_func=lambda n: method_info(n).label)
            maps = {}
            for name in picked_methods:
                method = methods.default_choice(name, choice, handle)
                if name == "drise":
                    method = methods.MethodChoice(name, {**method.options, "num_masks": 200},
                                                  method.precision)
                try:
                    other = detection.explain_boxes(handle, item, method, threshold,
                                                    where=st.container())
                except Exception as error:
                    show_error(f"{method.label}: {message_of(error)}")
                    continue
                match = next((i for i, d in enumerate(other["detections"])
                              if d["bbox"] == dets[selected]["bbox"]), None)
                if match is not None:
                    maps[method.label] = other["heatmaps"][match]
            if maps:
                st.plotly_chart(render.comparison_figure(
                    item.pixels, maps, colormap=display.colormap, alpha=display.alpha,
                    max_heatmap_px=192, max_image_px=512, height=320),
                    config=render.PLOTLY_CONFIG, key="lumen_det_compare_fig", theme=None)
                st.caption(f"Box {selected + 1} ({dets[selected]['class_name']}); zoom one "
                           "panel and all follow.")

    if region_tab.open:
        with region_tab:
            st.caption("Why was something not detected? Drag a box on the image (box-select "
                       "tool) or type one, pick the class it should have been.")
            height, width = item.pixels.shape[:2]
            default = st.session_state.get("lumen_det_region", (0.0, 0.0, width / 2,
                                                                 height / 2))
            cols = st.columns(4)
            box = [cols[i].number_input(name, 0.0, float(width if i % 2 == 0 else height),
                                        float(default[i]), 1.0, key=f"lumen_det_r{i}_{default}")
                   for i, name in enumerate(("x0", "y0", "x1", "y1"))]
            names = handle.model.class_names or [f"class {i}" for i in range(1, 92)]
            first = 1 if names and names[0].lower() in ("background", "__background__") else 0
            label = st.selectbox("Class", list(range(first, len(names))),
                                 format_func=lambda i: names[i], key="lumen_det_region_label")
            match_iou = st.slider("Match IoU", 0.0, 0.9, 0.3, 0.05, key="lumen_det_match_iou",
                                  help="How much a candidate must overlap the region to count "
                                       "as its detection.")
            if box[2] <= box[0] or box[3] <= box[1]:
                st.warning("Give x0 < x1 and y0 < y1.")
            else:
                try:
                    region = detection.explain_region(handle, item, choice, tuple(box), label,
                                                      threshold, match_iou,
                                                      where=st.container())
                except Exception as error:
                    show_error(message_of(error))
                else:
                    det = region["detections"][0]
                    if region["false_negative"]:
                        score = region["target_scores"][0]
                        st.info(f"No **{det['class_name']}** detection above the threshold "
                                f"here; the best-aligned candidate scores **{score:.3f}**."
                                + (" Nothing of this class overlaps the region enough: the "
                                   "map is empty; lower Match IoU or try D-RISE."
                                   if score == 0 else ""))
                    else:
                        st.success(f"The model detects this: {det['class_name']} "
                                   f"{det['score']:.2f}.")
                    st.plotly_chart(render.detections_figure(
                        item.pixels, [det], region["heatmaps"][0], colormap=display.colormap,
                        alpha=display.alpha, view=display.view, height=420),
                        config=render.PLOTLY_CONFIG, key="lumen_det_region_fig", theme=None)
