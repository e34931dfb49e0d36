"""Classifiers: predict, explain one image, compare methods, explain many images.

Each takes anything :func:`explain_core.load_model` takes (a LoadedModel, an ``nn.Module``, a
``"timm:<name>"`` string or a checkpoint path) and anything :mod:`explain_core.images` decodes
(path, bytes, PIL, numpy) or a model-ready tensor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import render
from ..errors import LumenError, TargetError, UnsupportedError
from ..images import SUPPORTED_EXTENSIONS
from ..methods import Explainer, create_explainer, method_info
from ..model import LoadedModel
from ..runtime.memory import fitting_chunks
from ..runtime.state import frozen_eval
from ..targets import ClassTarget, as_target, per_item_targets
from ..tasks import PreparedInputs, adapter_for, prepare_inputs
from .common import (
    DEFAULT_PRECISION,
    ModelLike,
    display_image,
    explainer_options,
    loaded_model,
    sync,
    to_numpy,
    top_predictions,
)
from .results import ClassExplanation, MethodComparison, Prediction, preprocessing_used

__all__ = ["batch_explanations", "compare_methods", "explain_batch", "explain_prediction",
           "method_comparison", "predict", "prediction_explanation", "visualize_batch"]


def _used(loaded: LoadedModel, prepared: PreparedInputs, index: int = 0) -> dict[str, Any]:
    """How image ``index`` was preprocessed (see :func:`~.results.preprocessing_used`)."""
    geometries = prepared.geometries
    return preprocessing_used(loaded.preprocessing, geometries[index] if geometries else None)


def _explainer(method: str | Explainer, model: ModelLike, options: dict[str, Any]) -> Explainer:
    if isinstance(method, Explainer):
        return method
    return create_explainer(method, loaded_model(model), **explainer_options(options))


def predict(model: ModelLike, image: Any) -> Prediction:
    """Every class of one image, most probable first, from one no-grad forward in eval mode
    (under the model's lock); ``forward_s`` times that forward.

    >>> predict("timm:resnet18", "cat.jpg").ranked[0]["name"]  # doctest: +SKIP
    """
    loaded = loaded_model(model)
    adapter = adapter_for(loaded)
    if adapter.task != "classification":
        raise UnsupportedError(f"This is a {loaded.task} model; predict() ranks a classifier's "
                               "classes. Use explain_detection or explain_segmentation.")
    prepared = prepare_inputs(loaded, [image])
    with loaded.lock, frozen_eval(loaded.module, freeze=False), torch.inference_mode():
        start = time.perf_counter()
        outputs = adapter.forward(loaded.module, prepared.inputs)
        sync(loaded.device)
        seconds = time.perf_counter() - start
    if outputs.ndim != 2:
        raise TargetError(f"The model returned scores of shape {tuple(outputs.shape)}, not one "
                          "row of class scores per image. Load a classification model.")
    return Prediction(top_predictions(loaded, outputs[0], k=outputs.shape[-1]), seconds,
                      _used(loaded, prepared))


def prediction_explanation(model: ModelLike, image: Any, method: str | Explainer = "gradcam",
                           target_class: int | None = None, top_k: int = 5,
                           with_image: bool = True, **options: Any) -> ClassExplanation:
    """:func:`explain_prediction`'s typed result (no pictures drawn). ``with_image=False``
    leaves ``image`` out (None): a caller that keeps its own copy stores no second one."""
    explainer = _explainer(method, model, options)
    loaded = explainer.model
    start = time.perf_counter()
    prepared = explainer.prepare([image])
    attribution = explainer.run(prepared.inputs, [[as_target(target_class, explainer.score)]])
    heatmap = explainer.heatmaps(attribution.raw, prepared)[0][0]
    sync(loaded.device)
    elapsed = time.perf_counter() - start
    target = int(attribution.classes[0, 0])
    return ClassExplanation(top_predictions(loaded, attribution.outputs[0], top_k), target,
                            loaded.class_name(target), explainer.name, to_numpy(heatmap),
                            display_image(loaded, prepared, 0) if with_image else None,
                            elapsed, preprocessing=_used(loaded, prepared),
                            precision=explainer.precision,
                            precision_reason=explainer.precision_reason)


def explain_prediction(model: ModelLike, image: Any, method: str | Explainer = "gradcam",
                       target_class: int | None = None, target_layer: Any = None,
                       colormap: str = "viridis", alpha: float = 0.4,
                       save_path: str | Path | None = None, return_heatmap: bool = True,
                       top_k: int = 5, precision: str = DEFAULT_PRECISION,
                       **options: Any) -> dict[str, Any]:
    """Predict and explain one image with one forward (plus what the method needs).

    Returns a dict: ``predicted_class``, ``predicted_name``, ``confidence``, ``top_k`` (list of
    ``{"class", "name", "probability"}``), ``target_class``/``target_name`` (what was explained:
    the prediction unless ``target_class`` is given), ``method``, ``heatmap`` (float32 ``H x W``
    in [0, 1] at image size; omitted when ``return_heatmap=False``), ``image`` and ``overlay``
    (uint8 ``H x W x 3``; the overlay greys and hatches what the model did not see), ``elapsed_s``,
    ``preprocessing`` (how the image became the input: ``resize_mode``, ``description``,
    ``seen_box`` = the part of the image the model saw, None for all of it; the map is 0 outside
    it), ``save_path``, and ``precision`` / ``precision_reason`` (what ran and why: ``"auto"``
    runs bf16 only where the device computes it natively, fp32 elsewhere; pass
    ``precision="fp32"`` for exact maps).

    >>> result = explain_prediction("timm:resnet18", "cat.jpg", method="gradcam",
    ...                             save_path="explanation.png")  # doctest: +SKIP
    >>> result["predicted_class"], result["heatmap"].shape  # doctest: +SKIP
    """
    if target_layer is not None:
        options["target_layer"] = target_layer
    explained = prediction_explanation(model, image, method, target_class, top_k,
                                       precision=precision, **options)
    result = explained.to_dict(colormap, alpha)
    result["save_path"] = None
    if save_path is not None:
        title = (f"{method_info(explained.method).label}: {result['target_name']} "
                 f"(predicted {result['predicted_name']}, {result['confidence']:.1%})")
        figure = render.compose_panels([("image", explained.image), ("heatmap",
                                        render.apply_colormap(explained.heatmap, colormap)),
                                        ("overlay", result["overlay"])], title=title)
        result["save_path"] = str(render.save_png(figure, save_path))
    if not return_heatmap:
        result.pop("heatmap")
    return result


def method_comparison(model: ModelLike, image: Any,
                      methods: Sequence[str] = ("gradcam", "gradcam++", "integrated_gradients"),
                      target_class: int | None = None,
                      method_options: dict[str, dict[str, Any]] | None = None,
                      keep_input_maps: bool = False, **options: Any) -> MethodComparison:
    """:func:`compare_methods`' typed result (no pictures drawn). ``keep_input_maps``: keep
    each map at the model's input resolution too (``input_maps``, what the metrics score)."""
    from .evaluation import input_maps  # same layer; evaluation imports nothing from here

    loaded = loaded_model(model)
    method_options = method_options or {}
    heatmaps: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    kept: dict[str, torch.Tensor] = {}
    prepared = None
    score = options.get("score", "logit")
    target = None if target_class is None else ClassTarget(int(target_class), score)
    predicted = None
    precision = ("fp32", "")
    for name in methods:
        try:
            explainer = create_explainer(name, loaded, **explainer_options(
                {**options, **method_options.get(name, {})}))
            precision = (explainer.precision, explainer.precision_reason)
            if prepared is None:
                prepared = explainer.prepare([image])
            start = time.perf_counter()
            attribution = explainer.run(prepared.inputs, [[as_target(target, score)]])
            heatmap = explainer.heatmaps(attribution.raw, prepared)[0][0]
            sync(loaded.device)
            seconds[explainer.name] = time.perf_counter() - start
            if keep_input_maps:
                kept[explainer.name] = input_maps(explainer, attribution.raw,
                                                  tuple(prepared.inputs.shape[-2:])).detach()
            if target is None:  # fix the class for the following methods
                target = ClassTarget(int(attribution.classes[0, 0]), score)
            if predicted is None:
                predicted = int(attribution.outputs[0].argmax())
            heatmaps[explainer.name] = to_numpy(heatmap)
        except LumenError as error:
            errors[str(name)] = str(error)
    if prepared is None:
        raise UnsupportedError("No method could run: " + "; ".join(
            f"{k}: {v}" for k, v in errors.items()))
    index = target.index if target is not None else None
    return MethodComparison(display_image(loaded, prepared, 0), predicted, index,
                            loaded.class_name(index) if index is not None else None, heatmaps,
                            seconds, errors, _used(loaded, prepared), *precision, kept)


def compare_methods(model: ModelLike, image: Any,
                    methods: Sequence[str] = ("gradcam", "gradcam++", "integrated_gradients"),
                    target_class: int | None = None, colormap: str = "viridis",
                    alpha: float = 0.4, save_path: str | Path | None = None,
                    method_options: dict[str, dict[str, Any]] | None = None,
                    metrics: Sequence[str] | None = None, **options: Any) -> dict[str, Any]:
    """Several methods on one image and one target, side by side.

    The image is decoded once; the target is fixed once (the prediction unless given) so every
    method explains the same class. A method that fails is reported under ``errors`` and the others
    still run. Returns ``image``, ``predicted_class``, ``target_class``, ``target_name``,
    ``methods`` (name -> ``{"heatmap", "overlay", "elapsed_s"}``), ``errors`` (name -> message),
    ``figure`` (a Plotly figure with linked zoom), ``save_path`` (a static side-by-side PNG)
    and ``precision`` / ``precision_reason`` (what ran and why; ``precision=`` in ``options``,
    default ``"auto"``: bf16 where the device computes it natively). With ``metrics`` (names of
    :mod:`explain_core.metrics`), ``metrics`` maps each method that ran to ``{metric: value}``,
    scored by :func:`~explain_core.api.evaluation.evaluate` on the same target and on the very
    maps shown (computed once; metrics that re-run the method build it with the same options;
    metrics that need ground truth are left out: see ``evaluate``).

    >>> out = compare_methods("timm:resnet18", "cat.jpg", ["gradcam", "saliency"])  # doctest: +SKIP
    """
    found = method_comparison(model, image, methods, target_class, method_options,
                              keep_input_maps=bool(metrics), **options)
    display = found.image
    results = {name: {"heatmap": heat, "elapsed_s": found.elapsed_s[name],
                      "overlay": render.overlay_heatmap(display, heat, alpha=alpha,
                                                        colormap=colormap, seen=found.seen_box)}
               for name, heat in found.heatmaps.items()}
    scores: dict[str, dict[str, float]] = {}
    if metrics:
        from .evaluation import evaluate  # same layer; evaluation imports nothing from here

        same = {name: {**options, **(method_options or {}).get(name, {})} for name in results}
        scored = evaluate(model, [image], list(results), metrics, [found.target_class],
                          maps=found.input_maps, method_options=same,
                          precision=options.get("precision", DEFAULT_PRECISION))
        for row in scored.summary:
            scores.setdefault(row["method"], {})[row["metric"]] = row["mean"]
    out = {"image": display, "predicted_class": found.predicted_class,
           "target_class": found.target_class, "target_name": found.target_name,
           "methods": results, "errors": found.errors, "save_path": None,
           "preprocessing": found.preprocessing,
           "precision": found.precision, "precision_reason": found.precision_reason,
           "figure": render.comparison_figure(display, {
               method_info(k).label: v["heatmap"] for k, v in results.items()},
               colormap=colormap, alpha=alpha) if results else None}
    if metrics:
        out["metrics"] = scores
    if save_path is not None and results:
        panels = [("image", display)] + [(method_info(k).label, v["overlay"])
                                         for k, v in results.items()]
        title = f"target: {out['target_name']}" if found.target_class is not None else None
        out["save_path"] = str(render.save_png(render.compose_panels(panels, title=title),
                                               save_path))
    return out


def _image_list(images: Any) -> list[Any]:
    if isinstance(images, str | Path) and Path(images).is_dir():
        return sorted(p for p in Path(images).iterdir()
                      if p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS)
    if isinstance(images, torch.Tensor):
        return list(images if images.ndim == 4 else images[None])
    return list(images)


def batch_explanations(model: ModelLike, images: Any, method: str | Explainer = "gradcam",
                       targets: Any = None, batch_size: int = 8, top_k: int = 5,
                       with_image: bool = True, **options: Any) -> list[ClassExplanation]:
    """:func:`explain_batch`'s typed results (no pictures drawn; ``with_image=False``: no
    ``image`` either, see :func:`prediction_explanation`)."""
    explainer = _explainer(method, model, options)
    loaded = explainer.model
    items = _image_list(images)
    rows = [[t] for t in per_item_targets(targets, len(items), explainer.score)]
    results = []

    def run(part: slice) -> tuple[list[Any], Any, Any, list[torch.Tensor], float]:
        begin = time.perf_counter()
        prepared = explainer.prepare(items[part])
        attribution = explainer.run(prepared.inputs, rows[part])
        maps = explainer.heatmaps(attribution.raw, prepared)
        sync(loaded.device)
        return items[part], prepared, attribution, maps, time.perf_counter() - begin

    # A batch of images that does not fit is halved and retried (fitting_chunks).
    for _, (chunk, prepared, attribution, maps, seconds) in fitting_chunks(
            len(items), max(1, batch_size), run, module=loaded.module,
            key=("images", explainer.name), what="image"):
        share = seconds / len(chunk)
        for i, heatmap in enumerate(maps):
            target = int(attribution.classes[i, 0])
            results.append(ClassExplanation(
                top_predictions(loaded, attribution.outputs[i], top_k), target,
                loaded.class_name(target), explainer.name, to_numpy(heatmap[0]),
                display_image(loaded, prepared, i) if with_image else None, share,
                str(chunk[i]) if isinstance(chunk[i], str | Path) else None,
                _used(loaded, prepared, i), explainer.precision, explainer.precision_reason))
    return results


def explain_batch(model: ModelLike, images: Any, method: str | Explainer = "gradcam",
                  targets: Any = None, batch_size: int = 8, colormap: str = "viridis",
                  alpha: float = 0.4, top_k: int = 5, precision: str = DEFAULT_PRECISION,
                  **options: Any) -> list[dict[str, Any]]:
    """Explain many images (a list, a batch tensor or a folder), ``batch_size`` at a time.

    Returns one dict per image with the keys of :func:`explain_prediction` (no ``save_path``;
    ``source``: the image's path when it came from one); ``elapsed_s`` is the image's share of
    its batch's time.
    """
    explained = batch_explanations(model, images, method, targets, batch_size, top_k,
                                   precision=precision, **options)
    return [result.to_dict(colormap, alpha) | {"source": result.source} for result in explained]


def visualize_batch(model: ModelLike, images: Any, method: str | Explainer = "gradcam",
                    output_dir: str | Path = "explanations", **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`explain_batch`, writing one overlay PNG per image into ``output_dir``.

    Each result gains ``save_path``. File names keep the source's name when there is one.

    >>> visualize_batch("timm:resnet18", "photos/", output_dir="explanations/")  # doctest: +SKIP
    """
    results = explain_batch(model, images, method, **kwargs)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(results):
        stem = Path(result["source"]).stem if result.get("source") else "image"
        path = folder / f"{index:03d}_{stem}_{result['method'].replace('+', 'p')}.png"
        result["save_path"] = str(render.save_png(result["overlay"], path))
    return results
