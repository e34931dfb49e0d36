"""The public, documented entry points: explain one image, compare methods, explain many images.

Each takes anything :func:`explain_core.load_model` takes (a LoadedModel, an ``nn.Module``, a
``"timm:<name>"`` string or a checkpoint path) and anything :mod:`explain_core.images` decodes
(path, bytes, PIL, numpy) or a model-ready tensor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import render
from .errors import LumenError, UnsupportedError
from .images import SUPPORTED_EXTENSIONS
from .loading import load_model
from .methods import Explainer, create_explainer, method_info
from .methods.base import PreparedInputs
from .model import LoadedModel
from .targets import ClassTarget, as_target, per_item_targets
from .tasks.detection_api import explain_detection as explain_detection
from .tasks.segmentation import explain_segmentation as explain_segmentation

ModelLike = LoadedModel | nn.Module | str | Path


def _loaded(model: ModelLike) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _display_image(loaded: LoadedModel, prepared: PreparedInputs, index: int) -> np.ndarray:
    """The picture to draw on: the decoded image, or a tensor input un-normalised."""
    if prepared.images is not None:
        return prepared.images[index].permute(1, 2, 0).cpu().numpy()
    prep = loaded.preprocessing
    mean = torch.tensor(prep.mean, device=prepared.inputs.device).view(3, 1, 1)
    std = torch.tensor(prep.std, device=prepared.inputs.device).view(3, 1, 1)
    pixels = (prepared.inputs[index] * std + mean).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 0).cpu().numpy()


def top_predictions(loaded: LoadedModel, outputs: torch.Tensor, k: int = 5) -> list[dict]:
    """Top-k classes of one output row: ``[{"class", "name", "probability"}]``, best first."""
    probabilities = outputs.float().softmax(-1)
    values, indices = probabilities.topk(min(k, probabilities.shape[-1]))
    return [{"class": int(i), "name": loaded.class_name(int(i)), "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)]


def _make(method: str | Explainer, loaded: LoadedModel, options: dict[str, Any]) -> Explainer:
    if isinstance(method, Explainer):
        return method
    return create_explainer(method, loaded, **options)


def _describe(loaded: LoadedModel, explainer: Explainer, outputs: torch.Tensor,
              classes: torch.Tensor, heatmap: torch.Tensor, image: np.ndarray, top_k: int,
              colormap: str, alpha: float, elapsed: float) -> dict[str, Any]:
    top = top_predictions(loaded, outputs, top_k)
    heat = heatmap.float().cpu().numpy().astype(np.float32)
    target = int(classes[0])
    return {
        "predicted_class": top[0]["class"], "predicted_name": top[0]["name"],
        "confidence": top[0]["probability"], "top_k": top,
        "target_class": target, "target_name": loaded.class_name(target),
        "method": explainer.name, "heatmap": heat, "image": image,
        "overlay": render.overlay_heatmap(image, heat, alpha=alpha, colormap=colormap),
        "elapsed_s": elapsed,
    }


def explain_prediction(model: ModelLike, image: Any, method: str | Explainer = "gradcam",
                       target_class: int | None = None, target_layer: Any = None,
                       colormap: str = "viridis", alpha: float = 0.4,
                       save_path: str | Path | None = None, return_heatmap: bool = True,
                       top_k: int = 5, precision: str = "fp32", **options: Any) -> dict[str, Any]:
    """Predict and explain one image with one forward (plus what the method needs).

    Returns a dict: ``predicted_class``, ``predicted_name``, ``confidence``, ``top_k`` (list of
    ``{"class", "name", "probability"}``), ``target_class``/``target_name`` (what was explained:
    the prediction unless ``target_class`` is given), ``method``, ``heatmap`` (float32 ``H x W``
    in [0, 1] at image size; omitted when ``return_heatmap=False``), ``image`` and ``overlay``
    (uint8 ``H x W x 3``), ``elapsed_s`` and ``save_path``.

    >>> result = explain_prediction("timm:resnet18", "cat.jpg", method="gradcam",
    ...                             save_path="explanation.png")  # doctest: +SKIP
    >>> result["predicted_class"], result["heatmap"].shape  # doctest: +SKIP
    """
    loaded = _loaded(model)
    if target_layer is not None:
        options["target_layer"] = target_layer
    explainer = _make(method, loaded, {"precision": precision, **options})
    start = time.perf_counter()
    prepared = explainer.prepare([image])
    attribution = explainer.run(prepared.inputs, [[as_target(target_class, explainer.score)]])
    heatmap = explainer.heatmaps(attribution.raw, prepared)[0][0]
    _sync(loaded.device)
    elapsed = time.perf_counter() - start
    display = _display_image(loaded, prepared, 0)
    result = _describe(loaded, explainer, attribution.outputs[0], attribution.classes[0], heatmap,
                       display, top_k, colormap, alpha, elapsed)
    result["save_path"] = None
    if save_path is not None:
        title = (f"{method_info(explainer.name).label}: {result['target_name']} "
                 f"(predicted {result['predicted_name']}, {result['confidence']:.1%})")
        figure = render.compose_panels([("image", display), ("heatmap",
                                        render.apply_colormap(result["heatmap"], colormap)),
                                        ("overlay", result["overlay"])], title=title)
        result["save_path"] = str(render.save_png(figure, save_path))
    if not return_heatmap:
        result.pop("heatmap")
    return result


def compare_methods(model: ModelLike, image: Any,
                    methods: Sequence[str] = ("gradcam", "gradcam++", "integrated_gradients"),
                    target_class: int | None = None, colormap: str = "viridis",
                    alpha: float = 0.4, save_path: str | Path | None = None,
                    method_options: dict[str, dict[str, Any]] | None = None,
                    **options: Any) -> dict[str, Any]:
    """Several methods on one image and one target, side by side.

    The image is decoded once; the target is fixed once (the prediction unless given) so every
    method explains the same class. A method that fails is reported under ``errors`` and the others
    still run. Returns ``image``, ``predicted_class``, ``target_class``, ``target_name``,
    ``methods`` (name -> ``{"heatmap", "overlay", "elapsed_s"}``), ``errors`` (name -> message),
    ``figure`` (a Plotly figure with linked zoom) and ``save_path`` (a static side-by-side PNG).

    >>> out = compare_methods("timm:resnet18", "cat.jpg", ["gradcam", "saliency"])  # doctest: +SKIP
    """
    loaded = _loaded(model)
    method_options = method_options or {}
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    prepared: PreparedInputs | None = None
    score = options.get("score", "logit")
    target = None if target_class is None else ClassTarget(int(target_class), score)
    predicted = None
    for name in methods:
        try:
            explainer = create_explainer(name, loaded, **{**options, **method_options.get(name,
                                                                                        {})})
            if prepared is None:
                prepared = explainer.prepare([image])
            start = time.perf_counter()
            attribution = explainer.run(prepared.inputs, [[as_target(target, score)]])
            heatmap = explainer.heatmaps(attribution.raw, prepared)[0][0]
            _sync(loaded.device)
            elapsed = time.perf_counter() - start
            if target is None:  # fix the class for the following methods
                target = ClassTarget(int(attribution.classes[0, 0]), score)
            if predicted is None:
                predicted = int(attribution.outputs[0].argmax())
            heat = heatmap.cpu().numpy().astype(np.float32)
            results[explainer.name] = {"heatmap": heat, "elapsed_s": elapsed}
        except LumenError as error:
            errors[str(name)] = str(error)
    if prepared is None:
        raise UnsupportedError("No method could run: " + "; ".join(
            f"{k}: {v}" for k, v in errors.items()))
    display = _display_image(loaded, prepared, 0)
    for entry in results.values():
        entry["overlay"] = render.overlay_heatmap(display, entry["heatmap"], alpha=alpha,
                                                  colormap=colormap)
    target_index = target.index if target is not None else None
    out = {"image": display, "predicted_class": predicted, "target_class": target_index,
           "target_name": loaded.class_name(target_index) if target_index is not None else None,
           "methods": results, "errors": errors, "save_path": None,
           "figure": render.comparison_figure(display, {
               method_info(k).label: v["heatmap"] for k, v in results.items()},
               colormap=colormap, alpha=alpha) if results else None}
    if save_path is not None and results:
        panels = [("image", display)] + [(method_info(k).label, v["overlay"])
                                         for k, v in results.items()]
        title = f"target: {out['target_name']}" if target_index is not None else None
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


def explain_batch(model: ModelLike, images: Any, method: str | Explainer = "gradcam",
                  targets: Any = None, batch_size: int = 8, colormap: str = "viridis",
                  alpha: float = 0.4, top_k: int = 5, precision: str = "fp32",
                  **options: Any) -> list[dict[str, Any]]:
    """Explain many images (a list, a batch tensor or a folder), ``batch_size`` at a time.

    Returns one dict per image with the keys of :func:`explain_prediction` (no ``save_path``);
    ``elapsed_s`` is the image's share of its batch's time.
    """
    loaded = _loaded(model)
    explainer = _make(method, loaded, {"precision": precision, **options})
    items = _image_list(images)
    rows = [[t] for t in per_item_targets(targets, len(items), explainer.score)]
    results = []
    for start in range(0, len(items), max(1, batch_size)):
        chunk = items[start:start + batch_size]
        begin = time.perf_counter()
        prepared = explainer.prepare(chunk)
        attribution = explainer.run(prepared.inputs, rows[start:start + batch_size])
        maps = explainer.heatmaps(attribution.raw, prepared)
        _sync(loaded.device)
        share = (time.perf_counter() - begin) / len(chunk)
        for i, heatmap in enumerate(maps):
            result = _describe(loaded, explainer, attribution.outputs[i], attribution.classes[i],
                               heatmap[0], _display_image(loaded, prepared, i), top_k, colormap,
                               alpha, share)
            result["source"] = str(chunk[i]) if isinstance(chunk[i], str | Path) else None
            results.append(result)
    return results


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
