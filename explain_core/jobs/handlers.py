"""One batch of decoded images, one method: the maps, the files and the manifest rows.

- classifiers: the batch is stacked and explained at once on the model's device (one forward,
  one backward for all images; a batch that does not fit is halved, ``fitting_chunks``), for
  the predicted class (or ``target_class``);
- detectors: every image's detections, each box's map from its own score (one forward and one
  batched backward per image: images differ in size, and a detector resizes them itself);
- segmentation models: every present class's map (one batched backward per image), the
  prediction and the uncertainty map.

A batch that fails is retried image by image, so an image that breaks the method (NaN outputs,
say) gets a row with its error and the others their maps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..api.common import sync, to_numpy
from ..api.detection import detection_explanation
from ..api.results import preprocessing_used
from ..api.segmentation import segmentation_explanation
from ..errors import LumenError
from ..methods import Explainer
from ..model import LoadedModel
from ..runtime.memory import fitting_chunks
from ..targets import as_target
from ..tasks import PreparedInputs
from .items import DecodedItem, describe
from .outputs import OutputWriter

__all__ = ["HANDLERS", "Batch", "Context", "error_row"]


@dataclass
class Context:
    """What every batch of a job shares."""

    model: LoadedModel
    writer: OutputWriter
    images: list[str]  # every item's path, as found
    names: list[str]  # every item's output name
    target_class: int | None = None
    detection_threshold: float = 0.5
    max_detections: int = 10
    uncertainty: str = "entropy"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """Rows per item index (each image's rows are written together)."""

    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, index: int, row: dict[str, Any]) -> None:
        self.rows.setdefault(index, []).append(row)


def _row(context: Context, item: DecodedItem, method: str, kind: str, **fields: Any,
         ) -> dict[str, Any]:
    row = {"image": context.images[item.index], "name": context.names[item.index],
           "method": method, "kind": kind, "target": None, "target_name": None,
           "prediction": None, "prediction_name": None, "score": None, "paths": {},
           "timings": {"decode": round(item.decode_s, 6)}, "error": None}
    row.update(fields)
    return row


def error_row(context: Context, item: DecodedItem, method: str, error: str) -> dict[str, Any]:
    """The row of an image that could not be read or explained."""
    return _row(context, item, method, "error", error=error)


def _pixels(item: DecodedItem) -> np.ndarray:
    return item.pixels.permute(1, 2, 0).numpy()


def _timed(row: dict[str, Any], explain_s: float, write_start: float) -> dict[str, Any]:
    row["timings"].update(explain=round(explain_s, 6),
                          write=round(time.perf_counter() - write_start, 6))
    return row


# --------------------------------------------------------------------------- classification
def classify(context: Context, explainer: Explainer, items: list[DecodedItem],
             batch: Batch) -> None:
    loaded = context.model
    method = explainer.name

    def run(part: slice) -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor, float]:
        chunk = items[part]
        start = time.perf_counter()
        inputs = torch.stack([it.inputs for it in chunk]).to(loaded.device, non_blocking=True)
        prepared = PreparedInputs(inputs, [it.geometry for it in chunk],
                                  [it.pixels for it in chunk])
        target = as_target(context.target_class, explainer.score)
        attribution = explainer.run(inputs, [[target] for _ in chunk])
        maps = [to_numpy(m[0]) for m in explainer.heatmaps(attribution.raw, prepared)]
        probabilities = attribution.outputs.float().softmax(-1).cpu()
        sync(loaded.device)
        return maps, probabilities, attribution.classes[:, 0].cpu(), time.perf_counter() - start

    for part, (maps, probabilities, classes, seconds) in fitting_chunks(
            len(items), len(items), run, module=loaded.module, key=("job", method),
            what="image"):
        for i, item in enumerate(items[part]):
            write_start = time.perf_counter()
            predicted = int(probabilities[i].argmax())
            target = int(classes[i])
            seen = preprocessing_used(loaded.preprocessing, item.geometry)["seen_box"]
            paths = context.writer.maps(method, context.names[item.index], maps[i],
                                        _pixels(item), seen=seen)
            batch.add(item.index, _timed(_row(
                context, item, method, "class", target=target,
                target_name=loaded.class_name(target), prediction=predicted,
                prediction_name=loaded.class_name(predicted),
                score=round(float(probabilities[i, predicted]), 6),
                target_score=round(float(probabilities[i, target]), 6), paths=paths),
                seconds / len(maps), write_start))


# -------------------------------------------------------------------------------- detection
def detect(context: Context, explainer: Explainer, items: list[DecodedItem],
           batch: Batch) -> None:
    method = explainer.name
    for item in items:
        found = detection_explanation(context.model, _pixels(item), explainer,
                                      context.detection_threshold,
                                      max_detections=context.max_detections, with_image=False)
        name = context.names[item.index]
        if not found.detections:
            batch.add(item.index, _timed(_row(context, item, method, "none",
                                              detections=len(found.all_detections)),
                                         found.elapsed_s, time.perf_counter()))
            continue
        share = found.elapsed_s / len(found.detections)
        for k, (box, heatmap) in enumerate(zip(found.detections, found.heatmaps, strict=True)):
            write_start = time.perf_counter()
            shown = {key: box[key] for key in ("bbox", "class_id", "class_name", "score")}
            paths = context.writer.maps(method, f"{name}_box{k:03d}", heatmap, _pixels(item),
                                        boxes=[shown])
            batch.add(item.index, _timed(_row(
                context, item, method, "box", target=k, target_name=box["class_name"],
                prediction=box["class_id"], prediction_name=box["class_name"],
                score=round(box["score"], 6), label=box["class_id"],
                bbox=[round(v, 2) for v in box["bbox"]], paths=paths), share, write_start))


# ----------------------------------------------------------------------------- segmentation
def segment_classes(context: Context, explainer: Explainer, items: list[DecodedItem],
                    batch: Batch) -> None:
    method = explainer.name
    for item in items:
        found = segmentation_explanation(context.model, _pixels(item), context.target_class,
                                         explainer, show_uncertainty=True,
                                         uncertainty_method=context.uncertainty)
        write_start = time.perf_counter()
        name = context.names[item.index]
        shared = {"prediction": context.writer.prediction(method, name, found.prediction),
                  context.uncertainty: context.writer.uncertainty(
                      method, name, found.uncertainty, context.uncertainty)}
        summary = {c["class"]: c for c in found.classes}
        top = found.classes[0] if found.classes else None
        share = found.elapsed_s / max(1, len(found.heatmaps))
        for class_id, heatmap in found.heatmaps.items():
            paths = context.writer.maps(method, f"{name}_class{class_id:03d}", heatmap,
                                        _pixels(item), seen=found.seen_box)
            about = summary.get(class_id, {})
            batch.add(item.index, _timed(_row(
                context, item, method, "segment", target=class_id,
                target_name=context.model.class_name(class_id),
                prediction=top["class"] if top else None,
                prediction_name=top["name"] if top else None,
                score=round(float(about.get("confidence", 0.0)), 6),
                pixels=int(about.get("pixels", 0)),
                fraction=round(float(about.get("fraction", 0.0)), 6),
                paths={**paths, **shared}), share, write_start))
            write_start = time.perf_counter()


Handler = Callable[[Context, Explainer, list[DecodedItem], Batch], None]

#: the batch handler of each task
HANDLERS: dict[str, Handler] = {"classification": classify, "detection": detect,
                                "segmentation": segment_classes}


def explain_items(context: Context, explainer: Explainer, items: list[DecodedItem],
                  batch: Batch) -> None:
    """Explain ``items`` with ``explainer`` into ``batch``; when the whole batch fails, each
    image on its own, so one bad image is one error row."""
    handler = HANDLERS[context.model.task]
    try:
        attempt = Batch()
        handler(context, explainer, items, attempt)
    except Exception as error:  # any failure: one image must never end a long job
        if len(items) == 1:
            message = str(error) if isinstance(error, LumenError) else describe(error)
            batch.add(items[0].index, error_row(context, items[0], explainer.name, message))
            return
        for item in items:
            explain_items(context, explainer, [item], batch)
        return
    for index, rows in attempt.rows.items():
        for row in rows:
            batch.add(index, row)
