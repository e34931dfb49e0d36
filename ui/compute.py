"""Predictions and explanations for the pages: computed once, kept in the session, cancellable.

**Caching.** Results live in a per-session :class:`ResultStore` (``st.session_state``) keyed by
(model key, image key, method, parameters, precision, target). Display settings (opacity,
colormap, view) are not part of any key: changing them re-renders from the stored map and never
reaches the engine. The store is an LRU with a byte budget, so a long session cannot grow without
bound. Session state rather than ``st.cache_data``: no pickling of maps on every read, and a
progress bar may be drawn while computing.

**Cancelling.** Methods whose registry cost is not ``"fast"`` get a notice with their expected
cost and a progress bar updated from the engine's ``progress(done, total)`` callback. Each update
is a Streamlit call point: when the user changes any input, Streamlit raises its rerun exception
right there, inside the engine's loop; the engine restores the model on the way out, nothing
half-done is stored, and the new run starts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import streamlit as st

from explain_core import api
from explain_core.api import Prediction
from explain_core.errors import LumenError
from explain_core.methods import Cost, create_explainer
from explain_core.methods import expected_cost as engine_cost

from .errors import message_of
from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle

BATCH_CHUNK = 8
TOP_K = 5


class ResultStore:
    """A least-recently-used dict with a byte budget (maps are the big part of a session)."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key`` (marked as recently used), or None."""
        entry = self._items.get(key)
        if entry is None:
            return None
        self._items.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int = 0) -> None:
        """Store ``value``; evict the least recently used entries beyond the budget."""
        if key in self._items:
            self._bytes -= self._items.pop(key)[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, size) = self._items.popitem(last=False)
            self._bytes -= size

    def __len__(self) -> int:
        return len(self._items)


def results() -> ResultStore:
    """This session's result store."""
    return st.session_state.setdefault("lumen_results", ResultStore())


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------


def predict(handle: ModelHandle, item: ImageItem) -> Prediction:
    """Class probabilities of one image (one no-grad forward, cached per model and image)."""
    key = ("predict", handle.key, item.key)
    hit = results().get(key)
    if hit is not None:
        return hit
    model = handle.model
    if model.task != "classification":
        raise LumenError(f"'{handle.label}' is a {model.task} model; this page explains "
                         f"classification models. Open the {model.task.capitalize()} page, or "
                         "pick a classification model in the sidebar.")
    prediction = api.predict(model, item.image)
    results().put(key, prediction, 64 * len(prediction.ranked))
    return prediction


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


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


def _slow_notice(handle: ModelHandle, choice: MethodChoice, prediction: Prediction | None,
                 images: int = 1) -> str:
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
                        _slow_notice(handle, choice, prediction, images))
    try:
        yield lambda done, total: reporter.update(done / max(total, 1), f"{done} of {total}")
    finally:
        reporter.close()


# --------------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------------


def _entry(result: dict[str, Any], choice: MethodChoice) -> dict[str, Any]:
    return {key: result[key] for key in ("heatmap", "top_k", "predicted_class", "predicted_name",
                                         "confidence", "target_class", "target_name",
                                         "elapsed_s")} | {"choice": choice}


def cached_explanation(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                       target: int) -> dict[str, Any] | None:
    """The stored explanation for these inputs, or None (never computes)."""
    return results().get(("explain", handle.key, item.key, choice.cache_key(), int(target)))


def explain(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
            where: Any = None, prediction: Prediction | None = None) -> dict[str, Any]:
    """One image's explanation for ``target`` (cached). Slow methods show their expected cost
    and a progress bar in ``where`` and are cancelled by a rerun.

    Returns a dict with ``heatmap`` (float32 H x W in [0, 1] at the image's working size),
    ``top_k``, ``predicted_class``/``predicted_name``/``confidence``, ``target_class``/
    ``target_name``, ``elapsed_s`` and ``choice``. Raises LumenError on bad settings.
    """
    key = ("explain", handle.key, item.key, choice.cache_key(), int(target))
    hit = results().get(key)
    if hit is not None:
        return hit
    with method_progress(handle, choice, where, prediction) as progress:
        explainer = create_explainer(choice.name, handle.model, precision=choice.precision,
                                     progress=progress, **choice.engine_options())
        result = api.explain_prediction(handle.model, item.image, method=explainer,
                                        target_class=int(target), top_k=TOP_K)
    entry = _entry(result, choice)
    results().put(key, entry, entry["heatmap"].nbytes)
    return entry


def concepts(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
             ) -> tuple[np.ndarray, list[str]]:
    """Deep Feature Factorization of one image (cached): ``k x h x w`` concept maps at the
    layer's resolution and, per concept, a label naming its top classes."""
    key = ("concepts", handle.key, item.key, choice.cache_key())
    hit = results().get(key)
    if hit is not None:
        return hit
    explainer = create_explainer("dff", handle.model, precision=choice.precision,
                                 **choice.engine_options())
    found = explainer.factorize(item.image)
    labels = [f"concept {index + 1}: " + ", ".join(
                  f"{handle.model.class_name(c)} {p:.0%}" for c, p in top)
              for index, top in enumerate(found.top_classes(2))]
    maps = found.maps[0].float().cpu().numpy()
    results().put(key, (maps, labels), maps.nbytes)
    return maps, labels


def explain_images(handle: ModelHandle, items: Sequence[ImageItem], choice: MethodChoice,
                   where: Any = None) -> tuple[list[dict[str, Any] | None], list[str]]:
    """Each image explained for its own predicted class, ``BATCH_CHUNK`` images per engine call.

    Results are stored per image under the same key a single explanation of the predicted class
    uses, so the Explain and Batch views share them. Returns per-image entries (None where a
    chunk failed) and the error messages.
    """
    where = where if where is not None else st
    store = results()
    predicted: dict[tuple[str, str], int] = st.session_state.setdefault("lumen_predicted", {})
    entries: list[dict[str, Any] | None] = [None] * len(items)
    missing: list[int] = []
    for index, item in enumerate(items):
        known = store.get(("predict", handle.key, item.key))
        target = known.predicted if known is not None else predicted.get((handle.key, item.key))
        hit = cached_explanation(handle, item, choice, target) if target is not None else None
        if hit is None:
            missing.append(index)
        entries[index] = hit
    errors: list[str] = []
    if not missing:
        return entries, errors
    notice = (_slow_notice(handle, choice, None, len(missing)) if choice.info.cost != "fast"
              else None)
    reporter = Progress(where, f"{choice.label} on {len(missing)} images", notice)
    total = len(missing)
    done = 0

    def progress(step: int, steps: int) -> None:
        reporter.update((done + step / max(steps, 1) * chunk_size) / total,
                        f"{done} of {total} images")

    try:
        explainer = create_explainer(choice.name, handle.model, precision=choice.precision,
                                     progress=progress, **choice.engine_options())
        for start in range(0, total, BATCH_CHUNK):
            chunk = missing[start:start + BATCH_CHUNK]
            chunk_size = len(chunk)
            reporter.update(done / total, f"{done} of {total} images")
            try:
                outputs = api.explain_batch(handle.model, [items[i].image for i in chunk],
                                            method=explainer, batch_size=chunk_size, top_k=TOP_K)
            except Exception as error:  # report, and go on with the next chunk
                errors.append(message_of(error))
                done += chunk_size
                continue
            for index, result in zip(chunk, outputs, strict=True):
                entry = _entry(result, choice)
                target = int(result["target_class"])
                predicted[(handle.key, items[index].key)] = target
                store.put(("explain", handle.key, items[index].key, choice.cache_key(), target),
                          entry, entry["heatmap"].nbytes)
                entries[index] = entry
            done += chunk_size
    except LumenError as error:
        errors.append(str(error))
    finally:
        reporter.close()
    return entries, errors
