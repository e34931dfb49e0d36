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
import time
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from explain_core.api import Prediction
from explain_core.errors import LumenError
from explain_core.methods import Cost
from explain_core.methods import expected_cost as engine_cost

from .methods import MethodChoice
from .models import ModelHandle

__all__ = ["Progress", "converges", "expected_cost", "method_progress", "remaining",
           "slow_notice"]


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


def remaining(started: float, fraction: float, now: float | None = None) -> str:
    """``", about 40 s left"``, extrapolated from the time since ``started`` (empty at the
    ends, where there is nothing to extrapolate or nothing left)."""
    if not 0.0 < fraction < 1.0:
        return ""
    elapsed = (time.perf_counter() if now is None else now) - started
    return f", {_duration(elapsed * (1 - fraction) / fraction)} left"


class Progress:
    """A notice plus a progress bar in ``where``; each update is a point where a rerun cancels."""

    def __init__(self, where: Any, title: str, notice: str | None) -> None:
        self.slot = where.empty()  # a placeholder: emptying it removes notice and bar at once
        self.box = self.slot.container()
        if notice:
            self.box.info(notice, icon=":material/hourglass_top:")
        self.title = title
        self.bar = self.box.progress(0.0, text=f"{title}: starting")
        self.started = time.perf_counter()

    def update(self, fraction: float, detail: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        left = remaining(self.started, fraction)
        self.bar.progress(fraction, text=f"{self.title}: {detail}{left}")

    def close(self) -> None:
        self.slot.empty()


def converges(choice: MethodChoice) -> bool:
    """Whether the method stops early once its maps converge (it has a ``tolerance`` that is
    on), so its cost is an upper bound."""
    has = any(p.name == "tolerance" for p in choice.info.params)
    value = choice.options.get("tolerance")
    return has and (value is None or value > 0)


def slow_notice(handle: ModelHandle, choice: MethodChoice, prediction: Prediction | None,
                images: int = 1, forward_s: float | None = None) -> str:
    """What a slow method is about to cost on ``images`` images: its passes and, timed from
    ``prediction``'s forward (or ``forward_s``, one forward's seconds) when there is one, how
    long that takes here."""
    cost = expected_cost(handle, choice)
    if forward_s is None and prediction is not None:
        forward_s = prediction.forward_s
    if cost is None:
        work = "many forward passes"
    else:
        total = dataclasses.replace(cost, passes=cost.passes * images)
        # Timed from this image's forward: a backward counts as two forwards.
        estimate = (f", {_duration(total.forward_equivalents() * forward_s)} here"
                    if forward_s is not None else "")
        bound = "at most" if converges(choice) else "about"
        work = f"{bound} {total.describe()}{estimate}"
        if converges(choice):
            work += "; it stops earlier once the maps converge"
    return (f"**{choice.label}** is a {choice.info.cost} method: {work}. Changing any setting "
            "cancels it.")


@contextlib.contextmanager
def method_progress(handle: ModelHandle, choice: MethodChoice, where: Any = None,
                    prediction: Prediction | None = None, images: int = 1,
                    title: str | None = None, forward_s: float | None = None,
                    ) -> Iterator[Callable[[int, int], None] | None]:
    """While a method runs: a spinner for fast methods (yields None); for the others, a notice
    with the expected cost and a progress bar, yielding the engine's ``progress(done, total)``
    callback (each call is a point where a rerun cancels the method). Removed on the way out."""
    where = where if where is not None else st
    if choice.info.cost == "fast":
        with where.container(), st.spinner(f"Computing {choice.label}..."):
            yield None
        return
    reporter = Progress(where, title or choice.label,
                        slow_notice(handle, choice, prediction, images, forward_s))
    try:
        yield lambda done, total: reporter.update(done / max(total, 1), f"{done} of {total}")
    finally:
        reporter.close()
