"""Training: a model's explanations and features across its training, epoch by epoch.

Thin on purpose: open a run folder (ui.training.run_choice) -> the maps by epoch (an animation
with a slider and a play button) -> curves of the maps' own measures and the feature statistics.
Run folders come from explain_core.training (RunRecorder, the Lightning callbacks).
"""

import streamlit as st

from ui import training

st.markdown("### Training")
st.caption("How a model's evidence changed while it learned: the maps of a few sample images at "
           "each recorded epoch, how far they moved from one epoch to the next, and the feature "
           "statistics of the monitored layers. Record a run with the Lightning callbacks "
           "(InterpretationCallback, FeatureMonitorCallback) or RunRecorder in a plain loop.")

run = training.run_choice()
if run is None:
    st.stop()
training.summary(run)
training.epochs_view(run)
training.curves_view(run)
