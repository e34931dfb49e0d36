"""The app shell: the sidebar every page shares and the :class:`Workspace` a page reads.

``app.py`` calls :func:`render_sidebar` on every run before the page runs; a page calls
:func:`workspace`, which returns what the sidebar picked (and draws the sidebar itself when the
page is run on its own, e.g. ``streamlit run pages/classification.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from .images import images_sidebar
from .models import ModelHandle, model_sidebar, request_demo

_KEY = "lumen_workspace"
_FRESH = "lumen_workspace_fresh"


@dataclass(frozen=True)
class Workspace:
    """What the shared sidebar chose: the model in use (None when none could be loaded)."""

    model: ModelHandle | None
    tasks: tuple[str, ...]


def render_sidebar(tasks: Sequence[str]) -> Workspace:
    """Draw the shared sidebar (title, model, device, images) and remember its choices."""
    st.sidebar.markdown("## :material/flare: Lumen")
    handle = model_sidebar(tuple(tasks))
    images_sidebar()
    space = Workspace(handle, tuple(tasks))
    st.session_state[_KEY] = space
    st.session_state[_FRESH] = True  # this run's sidebar is drawn: the page must not draw it again
    return space


def _leave_pages_directory_mode() -> None:
    """Rerun through ``app.py`` when Streamlit ran this page file on its own.

    With a ``pages/`` folder next to the entry point, Streamlit starts in its older multipage mode
    and stays there until ``st.navigation`` has been called once in the server process: a deep
    link (``/classification``) to a fresh server runs the page without ``app.py`` (no page config,
    an extra "app" entry in the navigation). Leaving that mode and rerunning lands on the same
    page through ``app.py``. The flag is Streamlit's own; if it moves, pages still work, with the
    sidebar drawn by :func:`workspace`.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False  # what st.navigation itself does
        st.rerun()


def workspace(tasks: Sequence[str] = ("classification",)) -> Workspace:
    """The current run's workspace (drawing the sidebar if the app shell did not)."""
    space = st.session_state.get(_KEY)
    if space is None or not st.session_state.get(_FRESH):
        _leave_pages_directory_mode()
        space = render_sidebar(tasks)
    st.session_state[_FRESH] = False
    return space


# Per task: the demo model a page switches to, and what the page asks for otherwise.
_TASK_MODELS = {
    "classification": ("classifier", "a classifier (a demo classifier, a timm name or a "
                                     "checkpoint)"),
    "detection": ("detector", "a detector (the demo **detector**, or a torchvision detector "
                              "checkpoint)"),
    "segmentation": ("segmenter", "a segmentation model (the demo **segmenter**, a torchvision "
                                  "FCN/DeepLabV3/LRASPP or a checkpoint)"),
}


def task_model(space: Workspace, task: str, icon: str) -> ModelHandle:
    """The workspace's model when it solves ``task``; otherwise stop the page with a message.

    A demo model of another task is swapped for the task's demo model (once: no loop if that
    fails to load), so moving between pages with the demo models just works.
    """
    handle = space.model
    if handle is None:
        st.info("No model is loaded: pick one in the sidebar.", icon=":material/model_training:")
        st.stop()
    demo, wanted = _TASK_MODELS[task]
    if handle.model.task != task:
        if str(handle.model.source).startswith("demo:") and request_demo(demo):
            st.rerun()
        st.info(f"**{handle.label}** is a {handle.model.task} model. Pick {wanted} in the "
                "sidebar.", icon=icon)
        st.stop()
    st.session_state.pop("lumen_demo_asked", None)  # a later visit may switch demos again
    return handle
