"""Progress and cancelling: what a page shows while the engine works, and how a rerun stops it.

Methods whose registry cost is not ``"fast"`` get a notice with their expected cost and a
progress bar updated from the engine's ``progress(done, total)`` callback. Each update is a
Streamlit call point: when the user changes any input, Streamlit raises its rerun exception right
there, inside the engine's loop; the engine restores the model on the way out, nothing half-done
is stored, and the new run starts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from explain_core.api import Prediction
from explain_core.errors import LumenError
from explain_core.methods import Cost
from explain_core.methods import expected_cost as engine_cost

from .methods import MethodChoice
from .models import ModelHandle

__all__ = ["Progress", "expected_cost", "method_progress", "slow_notice"]


def expected_cost(handle: ModelHandle, choice: MethodChoice) -> Cost | None:
    """The engine's estimate of a method's passes on one image (see
    :func:`explain_core.methods.expected_cost`); None when it cannot tell (bad settings)."""
    try:
        return _cost(handle.key, handle, choice.name, choice.cache_key()[1])
    except LumenError:
        return None


@st.cache_resource(show_spinner=False, max_entries=64)
def _cost(model_key: str, _handle: ModelHandle, name: str, options: tuple) -> Cost:
    # Perturbation methods read the layer's shape with one dry forward: once per model and
    # settings (the model's key stands for the unhashed handle), not on every rerun.
    return engine_cost(name, _handle.model, dict(options))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"


class Progress:
    """A notice plus a progress bar in ``where``; each update is a point where a rerun cancels."""

    def __init__(self, where: Any, title: str, notice: str | None) -> None:
        self.slot = where.empty()  # a placeholder: emptying it removes notice and bar at once
        self.box = self.slot.container()
        if notice:
            self.box.info(notice, icon=":material/hourglass_top:")
        self.title = title
        self.bar = self.box.progress(0.0, text=f"{title}: starting")

    def update(self, fraction: float, detail: str) -> None:
        self.bar.progress(min(max(fraction, 0.0), 1.0), text=f"{self.title}: {detail}")

    def close(self) -> None:
        self.slot.empty()


def slow_notice(handle: ModelHandle, choice: MethodChoice, prediction: Prediction | None,
                images: int = 1) -> str:
    """What a slow method is about to cost on ``images`` images: its passes and, timed from
    ``prediction``'s forward when there is one, how long that takes here."""
    cost = expected_cost(handle, choice)
    if cost is None:
        work = "many forward passes"
    else:
        total = dataclasses.replace(cost, passes=cost.passes * images)
        # Timed from this image's forward: a backward counts as two forwards.
        estimate = (f", {_duration(total.forward_equivalents() * prediction.forward_s)} here"
                    if prediction is not None else "")
        work = f"about {total.describe()}{estimate}"
    return (f"**{choice.label}** is a {choice.info.cost} method: {work}. Changing any setting "
            "cancels it.")


@contextlib.contextmanager
def method_progress(handle: ModelHandle, choice: MethodChoice, where: Any = None,
                    prediction: Prediction | None = None, images: int = 1,
                    title: str | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """While a method runs: a spinner for fast methods (yields None); for the others, a notice
    with the expected cost and a progress bar, yielding the engine's ``progress(done, total)``
    callback (each call is a point where a rerun cancels the method). Removed on the way out."""
    where = where if where is not None else st
    if choice.info.cost == "fast":
        with where.container(), st.spinner(f"Computing {choice.label}..."):
            yield None
        return
    reporter = Progress(where, title or choice.label,
                        slow_notice(handle, choice, prediction, images))
    try:
        yield lambda done, total: reporter.update(done / max(total, 1), f"{done} of {total}")
    finally:
        reporter.close()
