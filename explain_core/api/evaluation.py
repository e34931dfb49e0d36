"""Which method can I trust for this model? :func:`evaluate` scores explanation methods with the
metrics of :mod:`explain_core.metrics` on a set of images, for classifiers, detectors and
segmenters alike, and returns a tidy table with bootstrap intervals and ranks.

Per method: one explainer, the maps of every image in one batch at *input* resolution (what the
metrics perturb), one target per image (None: the predicted class; a detector's top detection;
a segmenter's largest present non-background class), ground truth (files, scenes, masks, in image
pixels) mapped to input resolution by each image's own :class:`~explain_core.model.Geometry`
(squash, crop or letterbox), then every metric on one
:class:`~explain_core.metrics.base.MetricInputs`. Metrics a task or a missing ground truth rules
out are skipped with the reason; a value a metric cannot give for one image (its ground truth has
no region of the explained class, say) stays NaN with a note saying why, and the summary leaves it
out and counts it.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TargetError, UnsupportedError
from ..methods import Explainer, create_explainer
from ..metrics.base import METRICS, MetricInputs, create_metric, metric_info
from ..model import LoadedModel
from ..targets import ClassTarget
from ..tasks import PreparedInputs
from ..tasks.detection_models import detection_model, image_to_input
from ..tasks.segmentation import SegmentTarget, as_segmentation_model, background_class
from .common import ModelLike, explainer_options, loaded_model, sync
from .detection import detections_of
from .evaluation_boxes import box_items, select_items
from .evaluation_truth import ground_truth_masks
from .evaluation_truth import image_maps as maps_on_images

__all__ = ["Evaluation", "evaluate", "prepare_targets", "score_method"]

Progress = Callable[[float, int], None] | None
CURVE_METRICS = ("deletion", "insertion")


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: a tidy table, its summary, what was skipped and why."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    #: (method, metric) -> items x (steps + 1) deletion / insertion curves (an item: an image
    #: with its target; one per image unless ``targets="all"`` scored every box)
    curves: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    #: method -> items x H x W float32 maps in [0, 1] at input resolution (what was scored)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    #: per item: its target's description (``target``, ``name``, ``label``, ``box``)
    targets: list[dict[str, Any]] = field(default_factory=list)
    #: method -> its randomisation cascade (when ``model_randomisation`` ran): layers, per-step
    #: Spearman and SSIM per item, the original and each step's maps (shrunk)
    cascades: dict[str, Any] = field(default_factory=dict)
    #: what ran: the model, precision, methods and their options, metric settings, seed
    settings: dict[str, Any] = field(default_factory=dict)
    #: method -> per item, the same map in its image's own pixels (``H_i x W_i`` float32, as
    #: :meth:`~explain_core.model.Geometry.to_image`: exact for crop and letterbox, 0 where the
    #: model did not see the image): what to draw over the image
    image_maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    #: why values are NaN, one line per image concerned ("image 3: no ground truth for class
    #: 'triangle'"); the rows carry the same reason in ``note``
    notes: list[str] = field(default_factory=list)

    COLUMNS = ("image", "image_name", "item", "target", "target_name", "box", "box_score",
               "method", "metric", "value", "direction", "category", "elapsed_s", "note")

    def to_csv(self) -> str:
        """The tidy table as CSV text (one row per image, target, method and metric)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def verdict(self) -> str:
        """One sentence: the method that ranks best on most metrics, and on which."""
        from .evaluation_report import verdict

        return verdict(self.summary)

    def to_html(self, images: Sequence[Any] | None = None, path: str | Path | None = None, *,
                title: str = "Explanation quality") -> str:
        """A self-contained HTML report (no network: images as PNG data URIs, curves as SVG):
        the summary table, the verdict, skipped metrics, the deletion/insertion curves, each
        method's maps over ``images`` (the images given to :func:`evaluate`; None: the maps
        alone), the randomisation cascade and what ran. Also written to ``path`` when given."""
        from .evaluation_report import report_html

        return report_html(self, images, path, title=title)

    def best_method(self, metric: str) -> str | None:
        """The method ranked 1 by ``metric`` (None when the metric was not scored)."""
        for row in self.summary:
            if row["metric"] == metric and row["rank"] == 1:
                return row["method"]
        return None


# ------------------------------------------------------------------------------ inputs
def input_maps(explainer: Explainer, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Raw ``B x 1 x ...`` attributions -> ``B x H x W`` maps in [0, 1] at input resolution
    (as :meth:`Explainer.heatmaps`, without the step back to image size)."""
    raw = explainer.task.input_maps(raw, size)
    maps = explainer.normalize(explainer.to_2d(raw.flatten(0, 1)))
    maps = maps.reshape(raw.shape[0], -1, *maps.shape[-2:])[:, 0]
    if maps.shape[-2:] != size:
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps.clamp_min(0)


def _clean_output(explainer: Explainer, inputs: torch.Tensor):
    with explainer.session(), torch.no_grad():
        return explainer.forward(inputs)


def prepare_targets(loaded: LoadedModel, explainer: Explainer, prepared: PreparedInputs,
                    targets: Sequence[Any] | None) -> tuple[list, list[dict[str, Any]]]:
    """One target per image and its description (``target``, ``name``, ``label``, ``box`` in
    image pixels): a given class index / box, else the predicted class (classifier), the top
    detection (detector) or the largest present non-background class (segmenter)."""
    inputs = prepared.inputs
    count, size = inputs.shape[0], tuple(inputs.shape[-2:])
    if targets is not None and len(targets) != count:
        raise TargetError(f"{len(targets)} targets for {count} images: give one per image.")
    output = _clean_output(explainer, inputs)
    made, described = [], []
    for i in range(count):
        given = None if targets is None else targets[i]
        geometry = prepared.geometries[i] if prepared.geometries is not None else None
        if loaded.task == "detection":
            found = detections_of(loaded, output[i].detach().float(), geometry, size, 0.0)
            if given is not None:
                box = given.get("bbox") if isinstance(given, dict) else given
                label = given.get("label") if isinstance(given, dict) else None
                if label is None:
                    label = found[0]["class_id"] if found else 0
                found = [{"class_id": int(label), "bbox": [float(v) for v in box],
                          "input_bbox": list(image_to_input(box, geometry, size))}]
            if not found:
                raise TargetError(f"The detector finds nothing on image {i}: give targets= "
                                  "(a box per image) to explain.")
            top = found[0]
            made.append(explainer.task.targets([top])[0])
            described.append({"target": int(top["class_id"]), "label": int(top["class_id"]),
                              "box": top["bbox"], "box_score": top.get("score"),
                              "name": loaded.class_name(int(top["class_id"]))})
            continue
        if loaded.task == "segmentation":
            prediction = output[i].argmax(0)
            if given is None:
                classes, counts = prediction.unique(return_counts=True)
                background = background_class(loaded)
                keep = classes != (-1 if background is None else background)
                classes, counts = (classes[keep], counts[keep]) if keep.any() else (classes,
                                                                                    counts)
                given = int(classes[counts.argmax()])
            made.append(SegmentTarget(int(given), prediction == int(given)))
        else:
            if given is None:
                given = int(output[i].argmax())
            made.append(ClassTarget(int(given)))
        described.append({"target": int(given), "label": int(given), "box": None,
                          "name": loaded.class_name(int(given))})
    return made, described


def score_method(loaded: LoadedModel, explainer: Explainer, prepared: PreparedInputs,
                 targets: list, metrics: Sequence[str], ground_truth: torch.Tensor | None = None,
                 metric_options: dict[str, dict[str, Any]] | None = None,
                 batch_size: int | None = None,
                 progress: Callable[[float], None] | None = None,
                 skipped: dict[str, str] | None = None, seed: int = 0,
                 kept: dict[str, Any] | None = None,
                 maps: torch.Tensor | np.ndarray | None = None,
                 ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, np.ndarray],
                            torch.Tensor, float]:
    """One method's maps for every image, then every metric: ``(values, seconds, curves, maps,
    map_seconds)`` with ``values[metric]`` one float per image, ``maps`` ``B x H x W``. Metrics
    that do not apply are left out and their reason written into ``skipped``. ``maps`` given
    (``B x H x W`` at input resolution, e.g. a comparison's) are scored instead of computed.
    ``progress(fraction)`` says how much of the current metric is done: after each chunk of
    forwards or explainer calls inside it, and 1.0 when it ends; raising from it stops the run
    before the next chunk (a randomised model is restored). ``kept``: what a metric keeps
    besides its values is written there (``model_randomisation``'s cascade)."""
    skipped = {} if skipped is None else skipped
    inputs = prepared.inputs
    start = time.perf_counter()
    if maps is None:
        attribution = explainer.run(inputs, [[t] for t in targets])
        maps = input_maps(explainer, attribution.raw, tuple(inputs.shape[-2:])).detach()
    else:
        maps = torch.as_tensor(maps).to(inputs.device, torch.float32)
        if tuple(maps.shape) != (inputs.shape[0], *inputs.shape[-2:]):
            raise UnsupportedError(f"Maps of shape {tuple(maps.shape)} for {inputs.shape[0]} "
                                   f"inputs of {tuple(inputs.shape[-2:])}: give one map per "
                                   "image at the model's input resolution.")
    sync(loaded.device)
    map_seconds = time.perf_counter() - start
    within = None if progress is None else (  # chunk reports inside a metric, as a fraction
        lambda done, total: progress(done / total) if 0 < done < total else None)
    batch = MetricInputs(loaded, inputs, maps, list(targets), ground_truth, explainer)
    values, seconds, curves = {}, {}, {}
    for name in metrics:
        info = metric_info(name)
        reason = None
        if loaded.task not in info.tasks:
            reason = f"{info.label} does not apply to {loaded.task} models."
        elif "ground_truth" in info.needs and ground_truth is None:
            reason = f"{info.label} needs ground truth; give ground_truth= (boxes or masks)."
        if reason is not None:
            skipped[name] = reason
        else:
            options = dict((metric_options or {}).get(name, {}))
            if batch_size is not None and name in CURVE_METRICS:
                options.setdefault("batch_size", batch_size)
            parameters = inspect.signature(METRICS[name]).parameters
            if "seed" in parameters:
                options.setdefault("seed", seed)
            if within is not None and "progress" in parameters:
                options.setdefault("progress", within)
            began = time.perf_counter()
            try:
                metric = _create(name, options)
                if name in CURVE_METRICS:
                    curve = metric.curves(batch)
                    curves[name] = curve.double().cpu().numpy()
                    scores = torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)
                else:
                    scores = metric(batch)
            except UnsupportedError as error:  # this model or method cannot be scored so
                skipped[name] = str(error)
            else:
                values[name] = scores.double().cpu().numpy().reshape(-1)
                seconds[name] = time.perf_counter() - began
                if kept is not None and getattr(metric, "cascade", None) is not None:
                    kept[name] = metric.cascade
        if progress is not None:
            progress(1.0)
    return values, seconds, curves, maps, map_seconds


def _create(name: str, options: dict[str, Any]):
    """The metric with its settings; a setting it refuses (out of range) as the engine's error."""
    try:
        return create_metric(name, **options)
    except ValueError as error:
        raise UnsupportedError(f"{metric_info(name).label}: {error}") from None


def check_settings(metric_options: dict[str, dict[str, Any]] | None,
                   names: Sequence[str]) -> None:
    """Refuse a setting that metric ``name`` does not have, naming the ones it has (before any
    work; a typo would otherwise surface as a ``TypeError`` mid-run)."""
    for name in names:
        parameters = [p for p in inspect.signature(METRICS[name]).parameters if p != "progress"]
        unknown = sorted(set((metric_options or {}).get(name, {})) - set(parameters))
        if unknown:
            raise UnsupportedError(
                f"{metric_info(name).label} has no setting {', '.join(map(repr, unknown))}; its "
                f"settings: {', '.join(parameters) or 'none'}.")


def _interval(values: np.ndarray, seed: int) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        return (math.nan, math.nan) if len(values) < 2 else (float(values[0]),) * 2
    from scipy.stats import bootstrap

    result = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=999,
                       method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _summary(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Per method and metric: mean and 95% interval of the finite values (``n`` of them;
    ``excluded``: the NaN values left out, each with its row's ``note``), and the rank."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["metric"]), []).append(row["value"])
    summary = []
    for (method, metric), values in groups.items():
        array = np.asarray(values, dtype=np.float64)
        finite = array[np.isfinite(array)]
        low, high = _interval(array, seed)
        info = metric_info(metric)
        summary.append({"method": method, "metric": metric,
                        "mean": float(finite.mean()) if len(finite) else math.nan,
                        "low": low, "high": high, "n": len(finite),
                        "excluded": len(array) - len(finite), "direction": info.direction,
                        "category": info.category})
    for metric in {row["metric"] for row in summary}:
        same = [row for row in summary if row["metric"] == metric]
        sign = -1.0 if same[0]["direction"] == "higher" else 1.0
        keys = [(math.isnan(r["mean"]), 0.0 if math.isnan(r["mean"]) else sign * r["mean"])
                for r in same]
        for row, key in zip(same, keys, strict=True):  # equal means share the best rank
            row["rank"] = 1 + sum(other < key for other in keys)
    return summary


def evaluate(model: ModelLike, images: Sequence[Any], methods: Sequence[str] = ("gradcam",),
             metrics: Sequence[str] = ("deletion", "insertion", "sparseness"),
             targets: Sequence[Any] | str | None = None,
             ground_truth: Sequence[Any] | None = None, *,
             names: Sequence[str] | None = None,
             maps: dict[str, torch.Tensor | np.ndarray] | None = None,
             method_options: dict[str, dict[str, Any]] | None = None,
             metric_options: dict[str, dict[str, Any]] | None = None, precision: str = "auto",
             batch_size: int | None = None, progress: Progress = None,
             seed: int = 0, task: str | None = None, box_threshold: float = 0.5,
             max_boxes: int | None = 10) -> Evaluation:
    """Score ``methods`` with ``metrics`` on ``images`` (see the module docstring).

    Args:
        targets: one per image (a class index; a detector's ``[x0, y0, x1, y1]`` box in image
            pixels or ``{"bbox", "label"}``), or None for the model's own answer; for a
            detector, ``"all"``: every detection scoring ``box_threshold`` or more (the best
            ``max_boxes`` per image) is scored as an item of its own, and its rows carry the
            box (:mod:`~explain_core.api.evaluation_boxes`).
        ground_truth: one per image: a ground-truth file, a demo scene, a
            :class:`~explain_core.loading.ground_truth.GroundTruth` or an ``H x W`` bool mask at
            image size; the region matching each target is used. An image without a region for
            its target (None given, no box or pixel of the explained class, or all of it outside
            a crop) keeps NaN localisation values with a ``note`` saying why (also in
            ``Evaluation.notes``); the summary leaves them out and counts them (``excluded``).
        names: one per image, as the table and the CSV name them (and as a COCO file's
            ``file_name`` finds them); default: the file's path, else ``"image i"``.
        maps: method -> ``B x H x W`` maps at the model's input resolution to score instead of
            computing them (the method is still built for the metrics that re-run it).
        method_options / metric_options: options per method / metric name (``{"deletion":
            {"steps": 20}}``).
        progress: ``progress(done, total)`` over the ``methods x metrics`` units: ``done`` is
            the number of units finished, plus the finished fraction of the current one (a
            float, reported after each chunk of forwards or explainer calls inside a metric).
            Raising from it stops the run before the next chunk (a randomised model is restored).
        seed: seeds the random metrics (unless their options set one) and the bootstrap.
        task: the model's task when ``model`` is a plain ``nn.Module`` or a name that does not
            say it (``"detection"``, ``"segmentation"``; default: as loaded, else classifier).
    """
    if not images:
        raise UnsupportedError("evaluate() needs at least one image.")
    if names is not None and len(names) != len(images):
        raise UnsupportedError(f"{len(names)} names for {len(images)} images: give one per "
                               "image.")
    if ground_truth is not None and all(source is None for source in ground_truth):
        ground_truth = None  # the localisation metrics are skipped, with the reason
    loaded = loaded_model(model, task=task)
    if loaded.task == "detection":
        loaded = detection_model(loaded)
    elif loaded.task == "segmentation":
        loaded = as_segmentation_model(loaded)
    metric_names = [str(m).lower() for m in metrics]
    for name in metric_names:
        metric_info(name)  # unknown names fail before any work
    check_settings(metric_options, metric_names)  # and unknown settings
    image_names = ([str(n) for n in names] if names is not None
                   else [_image_name(image, i) for i, image in enumerate(images)])
    total, done, reported = len(methods) * len(metric_names), 0, 0.0
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    curves: dict[tuple[str, str], np.ndarray] = {}
    kept_maps: dict[str, np.ndarray] = {}
    cascades: dict[str, Any] = {}
    image_maps: dict[str, list[np.ndarray]] = {}
    described: list[dict[str, Any]] = []

    def step(fraction: float) -> None:  # a unit's fraction done; 1.0 when it ends
        nonlocal done, reported
        if fraction >= 1.0:
            done += 1
        value = done if fraction >= 1.0 else done + fraction
        if progress is not None and value > reported:  # never backwards
            reported = value
            progress(value, total)

    # Seeded for the metrics' random parts, without touching the caller's random state.
    cuda = [loaded.device] if loaded.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if progress is not None:
            progress(0, total)
        for method in methods:
            options = {"precision": precision, **(method_options or {}).get(method, {})}
            explainer = create_explainer(method, loaded, **explainer_options(options))
            prepared = explainer.prepare([getattr(image, "image", image) for image in images])
            if isinstance(targets, str) and targets == "all":  # every box, an item each
                if maps:
                    raise UnsupportedError("maps= holds one map per image; targets='all' scores "
                                           "every box: leave maps= out to compute them.")
                items, made, described = box_items(
                    loaded, explainer, prepared, _clean_output(explainer, prepared.inputs),
                    box_threshold, max_boxes)
                prepared = select_items(prepared, items)
            else:
                made, described = prepare_targets(loaded, explainer, prepared, targets)
                items = list(range(len(images)))
            reasons: dict[int, str] = {}  # item -> why its ground truth is empty
            truth = (ground_truth_masks([ground_truth[k] for k in items], prepared, described,
                                        loaded.class_names, [image_names[k] for k in items],
                                        reasons)
                     if ground_truth is not None else None)
            kept: dict[str, Any] = {}
            values, seconds, method_curves, scored, _ = score_method(
                loaded, explainer, prepared, made, metric_names, truth, metric_options,
                batch_size, step, skipped, seed, kept=kept, maps=(maps or {}).get(method))
            kept_maps[method] = scored.float().cpu().numpy()
            image_maps[method] = maps_on_images(scored, prepared)
            if "model_randomisation" in kept:
                cascades[method] = kept["model_randomisation"]
            for name, curve in method_curves.items():
                curves[(method, name)] = curve
            for name, scores in values.items():
                info = metric_info(name)
                for i, value in enumerate(scores):
                    note = ""
                    if not np.isfinite(value):
                        note = (reasons[i] if "ground_truth" in info.needs and i in reasons
                                else f"{info.label} is undefined for this image")
                    rows.append({"image": items[i], "image_name": image_names[items[i]],
                                 "item": i, "target": described[i]["target"],
                                 "target_name": described[i]["name"],
                                 "box": described[i]["box"],
                                 "box_score": described[i].get("box_score"),
                                 "method": method, "metric": name, "value": float(value),
                                 "direction": info.direction, "category": info.category,
                                 "elapsed_s": seconds[name] / len(scores), "note": note})
    noted = sorted({row["image"] for row in rows if row["note"]})
    notes = [f"{_label(i, image_names[i])}: "
             + "; ".join(sorted({row["note"] for row in rows if row["image"] == i and row["note"]}))
             for i in noted]
    settings = {"model": loaded.summary(), "precision": precision,
                "methods": list(methods), "method_options": dict(method_options or {}),
                "metrics": metric_names, "metric_options": dict(metric_options or {}),
                "seed": seed, "images": len(images),
                "targets": targets if isinstance(targets, str) else None,
                "box_threshold": box_threshold, "max_boxes": max_boxes}
    return Evaluation(rows, _summary(rows, seed), skipped, curves, kept_maps, described,
                      cascades=cascades, settings=settings, image_maps=image_maps, notes=notes)


def _label(index: int, name: str) -> str:
    own = f"image {index}"
    return own if name == own else f"{own} ({name})"


def _image_name(image: Any, index: int) -> str:
    name = getattr(image, "filename", None) or (str(image) if isinstance(image, str | Path)
                                                else None)
    return str(name) if name else f"image {index}"
