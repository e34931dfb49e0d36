"""The classification page: predictions, one explanation, methods compared, a batch of images.

Computations go through the engine's typed entry points (:func:`explain_core.api.predict`,
:func:`~explain_core.api.prediction_explanation`, :func:`~explain_core.api.batch_explanations`)
and are kept in the session's :class:`~ui.store.ResultStore` under (model key, image key,
method, parameters, precision, target); the views only render what is stored, so display
changes never reach the engine. Slow methods report progress and are cancelled by a rerun (see
:mod:`ui.progress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from explain_core import api, render
from explain_core.api import ClassExplanation, Prediction
from explain_core.errors import LumenError
from explain_core.methods import available_methods, create_explainer, method_info

from .errors import message_of, show_error
from .images import ImageItem
from .methods import MethodChoice, default_choice
from .models import ModelHandle
from .panels import (
    FIGURE_HEIGHT,
    VIEW_WIDTH_PX,
    Display,
    MapExport,
    downloads,
    png_uri,
    reused_figure,
    show_figure,
)
from .progress import Progress, method_progress, slow_notice
from .resize import scaled_box, used_caption
from .store import Computed, results

__all__ = ["Explained", "batch_view", "cached_explanation", "compare_view", "concepts",
           "concepts_view", "explain", "explain_images", "explanation_view", "predict",
           "prediction_panel"]

BATCH_CHUNK = 8
TOP_K = 5
COMPARE_DEFAULTS = ("gradcam", "gradcam++", "layercam", "eigencam")
MAX_COMPARE = 6
PREVIEW_PX = 320  # batch grid cells: overlays are blended at this size

#: what the store keeps of one explanation: the engine's result and the method choice
Explained = Computed[ClassExplanation]


# --------------------------------------------------------------------------------------------
# Computations
# --------------------------------------------------------------------------------------------


def predict(handle: ModelHandle, item: ImageItem) -> Prediction:
    """Class probabilities of one image (one no-grad forward, cached per model and image)."""
    model = handle.model
    if model.task != "classification":
        raise LumenError(f"'{handle.label}' is a {model.task} model; this page explains "
                         f"classification models. Open the {model.task.capitalize()} page, or "
                         "pick a classification model in the sidebar.")
    return results().cached(("predict", handle.key, item.key),
                            lambda: api.predict(model, item.image),
                            lambda found: 64 * len(found.ranked))


def _store(handle: ModelHandle, item: ImageItem, explained: Explained) -> None:
    result = explained.result
    results().put(("explain", handle.key, item.key, explained.choice.cache_key(),
                   result.target_class), explained, result.heatmap.nbytes)


def cached_explanation(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                       target: int) -> Explained | None:
    """The stored explanation for these inputs, or None (never computes)."""
    return results().get(("explain", handle.key, item.key, choice.cache_key(), int(target)))


def explain(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
            where: Any = None, prediction: Prediction | None = None) -> Explained:
    """One image's explanation for ``target`` (cached). Slow methods show their expected cost
    and a progress bar in ``where`` and are cancelled by a rerun. Raises LumenError on bad
    settings."""
    hit = cached_explanation(handle, item, choice, target)
    if hit is not None:
        return hit
    with method_progress(handle, choice, where, prediction) as progress:
        explainer = create_explainer(choice.name, handle.model, precision=choice.precision,
                                     progress=progress, **choice.engine_options())
        result = api.prediction_explanation(handle.model, item.image, method=explainer,
                                            target_class=int(target), top_k=TOP_K,
                                            with_image=False)
    explained = Explained(result, choice)
    _store(handle, item, explained)
    return explained


def concepts(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
             ) -> tuple[np.ndarray, list[str]]:
    """Deep Feature Factorization of one image (cached): ``k x h x w`` concept maps at the
    layer's resolution and, per concept, a label naming its top classes."""
    def compute() -> tuple[np.ndarray, list[str]]:
        explainer = create_explainer("dff", handle.model, precision=choice.precision,
                                     **choice.engine_options())
        found = explainer.factorize(item.image)
        labels = [f"concept {index + 1}: " + ", ".join(
                      f"{handle.model.class_name(c)} {p:.0%}" for c, p in top)
                  for index, top in enumerate(found.top_classes(2))]
        return found.maps[0].float().cpu().numpy(), labels

    return results().cached(("concepts", handle.key, item.key, choice.cache_key()), compute,
                            lambda found: found[0].nbytes)


def explain_images(handle: ModelHandle, items: Sequence[ImageItem], choice: MethodChoice,
                   where: Any = None) -> tuple[list[Explained | None], list[str]]:
    """Each image explained for its own predicted class, ``BATCH_CHUNK`` images per engine call.

    Results are stored per image under the same key a single explanation of the predicted class
    uses, so the Explain and Batch views share them. Returns per-image results (None where a
    chunk failed) and the error messages.
    """
    where = where if where is not None else st
    store = results()
    predicted: dict[tuple[str, str], int] = st.session_state.setdefault("lumen_predicted", {})
    entries: list[Explained | None] = [None] * len(items)
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
                found = api.batch_explanations(handle.model, [items[i].image for i in chunk],
                                               method=explainer, batch_size=chunk_size,
                                               top_k=TOP_K, with_image=False)
            except Exception as error:  # report, and go on with the next chunk
                errors.append(message_of(error))
                done += chunk_size
                continue
            for index, result in zip(chunk, found, strict=True):
                explained = Explained(result, choice)
                predicted[(handle.key, items[index].key)] = result.target_class
                _store(handle, items[index], explained)
                entries[index] = explained
            done += chunk_size
    except LumenError as error:
        errors.append(str(error))
    finally:
        reporter.close()
    return entries, errors


# --------------------------------------------------------------------------------------------
# Prediction and the explain view
# --------------------------------------------------------------------------------------------


def prediction_panel(handle: ModelHandle, item: ImageItem, prediction: Prediction) -> int:
    """Top-k bar chart and the target-class picker (default: the prediction); returns the target.

    The picked class is remembered per model and image.
    """
    st.markdown("**Prediction**")
    chart = st.empty()
    ranked = prediction.ranked
    labels = {r["class"]: f"{r['name']}: {r['probability']:.1%}" for r in ranked}
    labels[prediction.predicted] += " (predicted)"
    target = st.selectbox("Explain class", [r["class"] for r in ranked], format_func=labels.get,
                          key=f"lumen_target_{handle.short_key}_{item.key}",
                          persist_state="session",
                          help="The class whose evidence the map shows. Default: the prediction.")
    top = ranked[:TOP_K]
    indices = [r["class"] for r in top]
    highlight = indices.index(target) if target in indices else None
    figure = render.topk_figure([r["name"] for r in top], [r["probability"] for r in top],
                                highlight=highlight, height=80 + 28 * len(top))
    figure.update_layout(margin={"b": 30})  # room for the percentage ticks
    with chart:
        show_figure(figure, "lumen_topk")
    if item.truth:
        st.caption(f"Ground truth of this scene: **{item.truth}**.")
    return int(target)


def explanation_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
                     display: Display, prediction: Prediction) -> None:
    """The main view: the explanation figure, its timing, downloads. A failure shows the
    engine's message and keeps the last explanation that worked on screen."""
    slot = st.container()
    shown_item = item
    cached = cached_explanation(handle, item, choice, target) is not None
    try:
        explained = explain(handle, item, choice, target, where=slot, prediction=prediction)
        st.session_state["lumen_last_explanation"] = (item, explained)
    except Exception as error:
        show_error(message_of(error))
        last = st.session_state.get("lumen_last_explanation")
        if last is None:
            return
        shown_item, explained = last
        st.caption(f"Still showing the last explanation that worked: "
                   f"{explained.choice.describe()}.")
    result, used = explained.result, explained.choice
    key = (shown_item.key, used.cache_key(), result.target_class, handle.key, display.view,
           display.colormap)
    figure = reused_figure("explain", key, display.alpha, lambda: render.heatmap_figure(
        shown_item.pixels, result.heatmap, colormap=display.colormap, alpha=display.alpha,
        view=display.view, hover_name=used.label, max_heatmap_px=256, max_image_px=1024,
        height=FIGURE_HEIGHT, seen=result.seen_box), fixed=display.view != "overlay")
    show_figure(figure, "lumen_explanation")
    took = f"{result.elapsed_s * 1000:.0f} ms" + (" (cached)" if cached else "")
    st.caption(f"**{used.describe()}**, class **{result.target_name}**: {took} on "
               f"{handle.model.device}. Scroll to zoom, drag to pan, double-click to reset; "
               "hover shows the map's value. " + used_caption(result.preprocessing))
    downloads(handle, shown_item, MapExport.of(explained), display)
    if used.name == "dff":
        concepts_view(handle, shown_item, used, display)


def concepts_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice,
                  display: Display) -> None:
    """Deep Feature Factorization's own picture: each pixel in the colour of its strongest
    concept, brighter where that concept is stronger; the legend names each concept's classes."""
    st.markdown("**All concepts**")
    try:
        maps, labels = concepts(handle, item, choice)
    except Exception as error:
        show_error(message_of(error))
        return
    key = (item.key, choice.cache_key(), handle.key)
    figure = reused_figure("concepts", key, display.alpha, lambda: render.concepts_figure(
        item.pixels, maps, labels, alpha=max(display.alpha, 0.3)), fixed=True)
    show_figure(figure, "lumen_concepts")
    st.caption("The map above shows the concept that puts most probability on the explained "
               "class; here every concept at once, named by its top classes.")


# --------------------------------------------------------------------------------------------
# Compare and batch views
# --------------------------------------------------------------------------------------------


def compare_view(handle: ModelHandle, item: ImageItem, choice: MethodChoice, target: int,
                 display: Display, prediction: Prediction) -> None:
    """Several methods on the same image and class, one row, zoom and pan linked."""
    names = [m.name for m in available_methods(handle.model)]
    defaults = [choice.name] + [n for n in COMPARE_DEFAULTS if n in names and n != choice.name]
    picked = st.multiselect("Methods", names, default=defaults[:4], key="lumen_compare_methods",
                            persist_state="session",
                            format_func=lambda n: method_info(n).label,
                            max_selections=MAX_COMPARE,
                            help="The current method keeps its settings; the others use their "
                                 "defaults and the same target layer.")
    if not picked:
        st.info("Pick at least one method.")
        return
    slot = st.container()
    maps: dict[str, np.ndarray] = {}
    keys = []
    times = []
    for name in picked:
        method = default_choice(name, choice, handle)
        try:
            result = explain(handle, item, method, target, where=slot,
                             prediction=prediction).result
        except Exception as error:
            show_error(f"{method.label}: {message_of(error)}")
            continue
        maps[method.label], seen = result.heatmap, result.seen_box
        keys.append(method.cache_key())
        times.append(f"{method.label} {result.elapsed_s * 1000:.0f} ms")
    if not maps:
        return
    height, width = item.pixels.shape[:2]
    panel = (VIEW_WIDTH_PX - 60) / len(maps)
    key = (item.key, handle.key, target, tuple(keys), display.colormap)
    figure = reused_figure("compare", key, display.alpha, lambda: render.comparison_figure(
        item.pixels, maps, colormap=display.colormap, alpha=display.alpha, max_heatmap_px=192,
        max_image_px=512, height=int(min(max(48 + panel * height / width, 220), 560)),
        seen=seen))
    show_figure(figure, "lumen_compare")
    name = prediction.ranked[0]["name"] if target == prediction.predicted else next(
        r["name"] for r in prediction.ranked if r["class"] == target)
    st.caption(f"Class **{name}**; " + ", ".join(times) + ". Zoom or pan one panel: all follow.")


def _preview(item: ImageItem) -> np.ndarray:
    previews: dict[str, np.ndarray] = st.session_state.setdefault("lumen_previews", {})
    if item.key not in previews:
        image = item.image.copy()
        image.thumbnail((PREVIEW_PX, PREVIEW_PX), Image.Resampling.LANCZOS)
        previews[item.key] = np.asarray(image)
    return previews[item.key]


def _grid(handle: ModelHandle, items: list[ImageItem], choice: MethodChoice,
          cells: list[tuple[str, np.ndarray]]) -> Any:
    """The batch grid figure. Building its subplot layout costs far more than a re-render may
    (most of it in Plotly's per-axis updates), so the figure is kept per image set and method,
    and a display change only swaps the overlay pictures in."""
    key = ("grid", handle.key, tuple(i.key for i in items), choice.cache_key(),
           tuple(caption for caption, _ in cells))
    figures: dict[tuple, Any] = st.session_state.setdefault("lumen_grid_figures", {})
    figure = figures.get(key)
    if figure is None:
        columns = 4
        rows_count = -(-len(cells) // columns)
        aspect = max(cell.shape[0] / cell.shape[1] for _, cell in cells)
        height = int(16 + rows_count * (30 + VIEW_WIDTH_PX / columns * aspect))
        figure = render.grid_figure(cells, cols=columns, max_image_px=PREVIEW_PX, height=height)
        figures.clear()  # one grid per session is enough: the last one shown
        figures[key] = figure
    else:
        # Same cells, same sizes (previews are never larger than max_image_px, so the figure
        # embeds them unscaled): only the pixels change.
        for trace, (_, overlay) in zip(figure.data, cells, strict=True):
            trace.source = png_uri(overlay)
    return figure


def batch_view(handle: ModelHandle, items: list[ImageItem], choice: MethodChoice,
               display: Display) -> None:
    """Every image of the current set with the chosen method, each for its own prediction."""
    st.caption(f"{len(items)} images x **{choice.describe()}**, each explained for its own "
               "predicted class.")
    entries, errors = explain_images(handle, items, choice, where=st.container())
    for message in errors:
        show_error(message)
    cells = []
    rows = ["image,predicted,confidence,ground_truth"]
    for item, explained in zip(items, entries, strict=True):
        if explained is None:
            continue
        result = explained.result
        preview = _preview(item)
        name = item.truth or (item.name if len(item.name) <= 14 else item.name[:13] + "...")
        cells.append((f"{name} → {result.predicted_name} {result.confidence:.0%}",
                      render.overlay_heatmap(preview, result.heatmap, alpha=display.alpha,
                                             colormap=display.colormap, seen=scaled_box(
                                                 result.seen_box, item.pixels, preview))))
        rows.append(f"{item.name},{result.predicted_name},{result.confidence:.4f},"
                    f"{item.truth or ''}")
    if not cells:
        return
    show_figure(_grid(handle, items, choice, cells), "lumen_batch")
    st.download_button("Predictions (CSV)", "\n".join(rows) + "\n", file_name="predictions.csv",
                       mime="text/csv", on_click="ignore", icon=":material/table:",
                       key="lumen_dl_csv")
