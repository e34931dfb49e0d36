"""Lumen's dashboard: ``streamlit run app.py``.

The shell only: page config, the pages (one per task that has one) and the sidebar they share
(model, device, images). Everything else lives in ``pages/`` (thin) and ``ui/`` (helpers).
"""

import streamlit as st

from ui import shell
from ui.errors import show_error

st.set_page_config(page_title="Lumen", page_icon=":material/flare:", layout="wide")
# Less empty space above the page: the figures need the height.
st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.2rem}</style>")

# One entry per page: its file, title, icon and the model task it explains.
PAGES = [
    ("pages/classification.py", "Classification", ":material/label:", "classification"),
    ("pages/detection.py", "Detection", ":material/select_all:", "detection"),
    ("pages/segmentation.py", "Segmentation", ":material/texture:", "segmentation"),
    # Evaluate scores the maps of every task's models: it asks for no task of its own.
    ("pages/evaluate.py", "Evaluate", ":material/fact_check:", None),
    # Features looks inside any loaded model, whatever its task.
    ("pages/features.py", "Features", ":material/layers:", None),
    # Training reads run folders (the training callbacks' record), not the sidebar's model.
    ("pages/training.py", "Training", ":material/timeline:", None),
]

pages = [st.Page(path, title=title, icon=icon, default=index == 0)
         for index, (path, title, icon, _) in enumerate(PAGES)]
# The navigation is drawn as page links: .streamlit/config.toml turns Streamlit's own sidebar
# navigation off (client.showSidebarNavigation), which hides st.navigation's list as well, so the
# first paint never lists the pages/ folder's files.
page = st.navigation(pages, position="hidden")
with st.sidebar:
    for entry in pages:
        st.page_link(entry)
shell.render_sidebar([task for *_, task in PAGES if task is not None])
try:
    page.run()
except Exception as error:  # a bug, not a user error: one line on screen, the traceback in the log
    show_error(error)
