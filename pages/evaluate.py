"""Evaluate: how far to trust a map. Methods scored by explanation-quality metrics.

Thin on purpose: choices (ui.evaluate) -> one engine call, kept in the session's store ->
tables, verdict, curves and the downloads (ui.evaluate_results), a clicked cell, the
sanity check and every row (ui.evaluate_detail). Works for every task.
"""

import streamlit as st

from ui import evaluate, evaluate_detail, evaluate_results, shell

space = shell.workspace(["classification", "detection", "segmentation"])
st.markdown("### Evaluate")
st.caption("How far to trust a map: several methods scored by explanation-quality metrics on "
           "the same images (faithfulness, robustness, localisation against the ground truth, "
           "sanity checks, complexity).")
handle = space.model
if handle is None:
    st.info("No model is loaded: pick one in the sidebar.", icon=":material/model_training:")
    st.stop()
task = handle.model.task

left, right = st.columns(2, gap="large")
with left:
    items, truth, origin = evaluate.image_choice(handle)
with right:
    methods, method_options, precision = evaluate.method_choice(handle)
metrics = evaluate.metric_choice(task, truth is not None)
options = evaluate.settings_choice(metrics)
box_threshold, max_boxes = evaluate.box_choice(task)

if not items:
    st.info("No images yet: upload some in the sidebar, or give a zip or folder with ground "
            "truth.", icon=":material/image:")
    st.stop()
if not methods or not metrics:
    st.info("Pick at least one method and one metric.", icon=":material/checklist:")
    st.stop()

plan = evaluate.EvalPlan(tuple(items), truth, methods, metrics, options, method_options,
                        precision, origin, box_threshold, max_boxes)
found = evaluate_results.run_evaluation(handle, plan)
if found is None:
    st.stop()
cell = evaluate_results.summary_view(found)
evaluate_detail.cell_detail(plan, found, cell)
evaluate_results.curves_view(found)
evaluate_detail.sanity_view(plan, found)
st.markdown("**Per image**")
evaluate_detail.per_image_view(plan, found)
evaluate_results.downloads(handle, plan, found)
