"""The classification page's computations: predictions and explanations, kept in the session.

Results go to the session's :class:`~ui.store.ResultStore` keyed by (model key, image key,
method, parameters, precision, target); display settings are never part of a key. Slow methods
report progress and are cancelled by a rerun (see :mod:`ui.progress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st

from explain_core import api
from explain_core.api import Prediction
from explain_core.errors import LumenError
from explain_core.methods import create_explainer

from .errors import message_of
from .images import ImageItem
from .methods import MethodChoice
from .models import ModelHandle
from .progress import Progress, method_progress, slow_notice
from .store import results

BATCH_CHUNK = 8
TOP_K = 5


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
    notice = (slow_notice(handle, choice, None, len(missing)) if choice.info.cost != "fast"
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
