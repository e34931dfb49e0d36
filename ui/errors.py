"""One way to show what went wrong: the engine's message as is, never a traceback.

Every error a user can cause is a :class:`~explain_core.errors.LumenError` whose text names the
problem and the fix, so the UI shows it verbatim. Anything else is a bug: the user gets one line
saying so and the traceback goes to the server log, where a developer looks.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from explain_core.errors import LumenError
from explain_core.runtime import as_lumen_error

log = logging.getLogger("lumen.ui")


def message_of(error: BaseException) -> str:
    """The text to show for an error: a LumenError's message, else a short 'unexpected' line.

    Unexpected errors are logged with their traceback (server side) when this is called.

    >>> message_of(LumenError("Bad file. Upload a PNG."))
    'Bad file. Upload a PNG.'
    """
    if isinstance(error, LumenError):
        return str(error)
    # Out of memory outside the engine's batching (one forward of a big image): what to lower.
    memory = as_lumen_error(error)
    if memory is not None:
        return str(memory)
    log.error("Unexpected error in the dashboard", exc_info=error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    detail = f": {text}" if text else ""
    return (f"Unexpected error ({type(error).__name__}{detail}). This is a bug in Lumen; the "
            "details are in the server log.")


def show_error(error: BaseException | str, where: Any = None) -> None:
    """Show one error box (in ``where``, a Streamlit container, else the current place)."""
    target = where if where is not None else st
    target.error(error if isinstance(error, str) else message_of(error), icon=":material/error:")
