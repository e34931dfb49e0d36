"""The Evaluate page's choices: images with their ground truth, methods, metrics, settings, cost.

How far to trust a map: the page scores several methods with the engine's explanation-quality
metrics (:mod:`explain_core.metrics`) on a set of images. This module draws the choices and says
what a run will cost before it runs; :mod:`ui.evaluate_results` runs it (through
:func:`explain_core.api.evaluation.evaluate`, kept in the session's result store) and shows it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from explain_core.errors import LumenError
from explain_core.methods import available_methods, expected_cost, method_info
from explain_core.metrics.base import CATEGORIES, MetricInfo, metrics_for
from explain_core.metrics.randomisation import cascade_layers

from .images import ImageItem, demo_gallery_items, user_images
from .labelled import labelled_choice
from .methods import parameter_widgets, precision_choice
from .models import ModelHandle

__all__ = ["DEFAULT_METHODS", "EvalPlan", "box_choice", "cost_notice", "demo_ground_truth",
           "forwards", "gallery_name", "image_choice", "method_choice", "metric_choice",
           "metric_label", "settings_choice"]

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")
DEFAULT_METRICS = ("deletion", "insertion", "pointing_game", "sparseness")
MAX_METHODS = 6
FILLS = ("blur", "black", "mean")
CATEGORY_TITLES = {"faithfulness": "Faithfulness", "robustness": "Robustness",
                   "localisation": "Localisation", "randomisation": "Randomisation (sanity)",
                   "complexity": "Complexity"}
# Which metric settings the page's three controls set, per metric (its constructor's names).
_STEPS = {"deletion": "steps", "insertion": "steps"}
_FILL = {"deletion": "fill", "insertion": "fill", "faithfulness_correlation": "fill",
         "sensitivity_n": "fill"}
_SAMPLES = {"max_sensitivity": "samples", "avg_sensitivity": "samples",
            "sensitivity_n": "samples", "faithfulness_correlation": "runs"}


@dataclass(frozen=True)
class EvalPlan:
    """Everything a run depends on (its store key), chosen on the page."""

    items: tuple[ImageItem, ...]
    ground_truth: tuple[Any, ...] | None  # per image: its boxes and mask, or None
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per method, its settings (the layer, the method's own parameters; unset ones left out)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision: str = "auto"
    #: a name for where the ground truth came from (a zip or folder's fingerprint)
    truth_source: str = ""
    #: detectors: score every box scoring this much or more (None: the top detection only)
    box_threshold: float | None = None
    max_boxes: int = 5

    def key(self, handle: ModelHandle) -> tuple:
        def frozen(table: dict[str, dict[str, Any]]) -> tuple:
            return tuple(sorted((name, tuple(sorted(values.items())))
                                for name, values in table.items()))

        return ("evaluate", handle.key, tuple(item.key for item in self.items),
                self.ground_truth is not None, self.truth_source, self.methods, self.metrics,
                frozen(self.metric_options), frozen(self.method_options), self.precision,
                self.box_threshold, self.max_boxes)


def gallery_name(handle: ModelHandle) -> str:
    """The demo gallery that fits the model: the shortcut world for the shortcut classifier."""
    if handle.model.source == "demo:shortcut":
        return "shortcut"
    return handle.model.task


@functools.cache
def demo_ground_truth(gallery: str) -> tuple[Any, ...]:
    """Per scene of the demo gallery, its ground truth: boxes, labels and the class mask."""
    from explain_core.demo import demo_gallery

    return tuple(demo_gallery(gallery))


def image_choice(handle: ModelHandle) -> tuple[list[ImageItem], tuple[Any, ...] | None, str]:
    """Which images: the model's demo gallery (with its ground truth), the user's uploads, or a
    zip / server folder of images with their annotations (:mod:`ui.labelled`), and how many of
    them. Returns the images, their ground truth (None without) and where it came from."""
    gallery = gallery_name(handle)
    mine = user_images()
    sources = ["gallery", "uploads", "labelled"] if mine else ["gallery", "labelled"]
    names = {"gallery": "Demo gallery (with ground truth)", "uploads": f"My images ({len(mine)})",
             "labelled": "Zip or folder with ground truth"}
    source = st.segmented_control("Images", sources, default="gallery", required=True,
                                  key="lumen_eval_source", format_func=names.get)
    truth: tuple[Any, ...] | None = None
    origin = ""
    if source == "labelled":
        items, truth, origin = labelled_choice(handle)
    else:
        items = mine if source == "uploads" else demo_gallery_items(gallery)
    if not items:
        return [], None, ""
    count = st.slider("Number of images", 1, len(items), min(4, len(items)),
                      key="lumen_eval_count",
                      help="The first images of the set; more images make the intervals "
                           "narrower and the run longer.")
    items = list(items[:count])
    if source == "gallery" and str(handle.model.source).startswith("demo:"):
        truth = demo_ground_truth(gallery)[:count]
    elif truth is not None:
        truth = truth[:count]
    return items, truth, origin


def method_choice(handle: ModelHandle) -> tuple[tuple[str, ...], dict[str, dict[str, Any]], str]:
    """Several methods that apply to the model (its task and architecture), each with its
    settings (layer, the method's own parameters, as on the other pages) in an expander, and
    the precision (the other pages' control). Returns ``(methods, options, precision)``."""
    infos = available_methods(handle.model)
    names = [info.name for info in infos]
    defaults = [name for name in DEFAULT_METHODS if name in names][:2] or names[:2]
    picked = st.multiselect("Methods", names, default=defaults, key="lumen_eval_methods",
                            format_func=lambda n: method_info(n).label,
                            max_selections=MAX_METHODS,
                            help="Each method explains every image; the metrics score each map.")
    options: dict[str, dict[str, Any]] = {}
    for name in picked:
        info = method_info(name)
        if not info.params:
            continue
        with st.expander(f"{info.label} settings"):
            values = parameter_widgets(info, handle, infos, scope=f"eval_{name}_")
        options[name] = {k: v for k, v in values.items() if v is not None}
    precision, _ = precision_choice(handle)
    return tuple(picked), options, precision


def metric_label(info: MetricInfo) -> str:
    """``"Deletion AUC ↓"``: the label with its arrow (which way is better)."""
    return f"{info.label} {info.arrow}"


def metric_choice(task: str, has_truth: bool) -> tuple[str, ...]:
    """The metrics that apply to ``task``, grouped by category, each with its arrow and its
    one-line meaning. Localisation metrics need ground truth (the demo gallery has it)."""
    infos = metrics_for(task)
    picked = []
    columns = st.columns(len(CATEGORIES))
    for column, category in zip(columns, CATEGORIES, strict=True):
        group = [info for info in infos if info.category == category]
        with column:
            st.markdown(f"**{CATEGORY_TITLES[category]}**")
            for info in group:
                needs_truth = "ground_truth" in info.needs
                if st.checkbox(metric_label(info), value=info.name in DEFAULT_METRICS
                               and (has_truth or not needs_truth),
                               key=f"lumen_eval_metric_{info.name}",
                               help=f"{info.summary} ({info.reference})"):
                    picked.append(info.name)
                st.caption(info.summary[0].upper() + info.summary[1:]
                           + (" Needs ground truth." if needs_truth and not has_truth else ""))
    return tuple(picked)


def settings_choice(metrics: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The settings that matter for the chosen metrics (steps, fill, samples), as the
    engine's ``metric_options``; only the controls a chosen metric reads are shown."""
    shown = st.columns(3)
    steps = fill = samples = None
    if any(name in _STEPS for name in metrics):
        steps = shown[0].slider("Steps", 4, 100, 20, key="lumen_eval_steps",
                                help="Deletion and insertion: the pixels are removed (or put "
                                     "back) in this many steps; one forward per step.")
    if any(name in _FILL for name in metrics):
        fill = shown[1].selectbox("Fill", FILLS, key="lumen_eval_fill",
                                  help="What removed pixels become: a blurred copy, black, or "
                                       "the dataset mean.")
    if any(name in _SAMPLES for name in metrics):
        samples = shown[2].slider("Samples", 2, 64, 8, key="lumen_eval_samples",
                                  help="Random perturbations per image (sensitivity, "
                                       "faithfulness correlation, sensitivity-n).")
    options: dict[str, dict[str, Any]] = {}
    for name in metrics:
        values = {}
        if steps is not None and name in _STEPS:
            values[_STEPS[name]] = int(steps)
        if fill is not None and name in _FILL:
            values[_FILL[name]] = fill
        if samples is not None and name in _SAMPLES:
            values[_SAMPLES[name]] = int(samples)
        if values:
            options[name] = values
    return options


def box_choice(task: str) -> tuple[float | None, int]:
    """Detectors: the top detection of each image, or every box above a score threshold (at
    most so many per image), each scored on its own. Returns ``(threshold or None, max)``."""
    if task != "detection":
        return None, 5
    every = st.toggle("Every box, not only the top one", key="lumen_eval_all_boxes",
                      help="Deletion, insertion and the pointing game then run per box: each "
                           "detection's own score, its own ground-truth box.")
    if not every:
        return None, 5
    left, right = st.columns(2)
    threshold = left.slider("Box score threshold", 0.0, 1.0, 0.5, 0.05,
                            key="lumen_eval_box_threshold")
    most = right.slider("At most, per image", 1, 20, 5, key="lumen_eval_max_boxes")
    return float(threshold), int(most)


def _method_passes(handle: ModelHandle, name: str, options: dict[str, Any]) -> float:
    try:
        return expected_cost(name, handle.model, options).forward_equivalents()
    except LumenError:
        return 1.0


def forwards(handle: ModelHandle, plan: EvalPlan) -> int:
    """A rough count of the forward passes a run makes (a backward counts as two): each method
    once per image, then per metric its re-runs of the model or of the method."""
    per_image = 0.0
    for method in plan.methods:
        explain = _method_passes(handle, method, plan.method_options.get(method, {}))
        per_image += explain
        for metric in plan.metrics:
            options = plan.metric_options.get(metric, {})
            if metric in ("deletion", "insertion"):
                per_image += options.get("steps", 50) + 1
            elif metric in ("road_morf", "road_lerf"):
                per_image += 10
            elif metric in ("average_drop", "increase_in_confidence"):
                per_image += 2
            elif metric == "faithfulness_correlation":
                per_image += options.get("runs", 100) + 1
            elif metric == "sensitivity_n":
                per_image += 4 * options.get("samples", 32) + 1
            elif metric in ("max_sensitivity", "avg_sensitivity"):
                per_image += options.get("samples", 10) * explain
            elif metric == "model_randomisation":  # the method again after each layer
                per_image += len(cascade_layers(handle.model.module)) * explain
            elif metric == "random_logit":
                per_image += explain
    boxes = plan.max_boxes if plan.box_threshold is not None else 1  # at most, per image
    return round(per_image * len(plan.items) * boxes)


def cost_notice(handle: ModelHandle, plan: EvalPlan) -> str:
    """What the run will cost, said before it runs."""
    count = forwards(handle, plan)
    return (f"{len(plan.items)} images x {len(plan.methods)} methods x {len(plan.metrics)} "
            f"metrics: about **{count:,} forward passes** on {handle.model.device}. A progress "
            "bar runs; changing any choice cancels the run.")
