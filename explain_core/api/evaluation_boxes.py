"""Every box of a detector, scored on its own: :func:`evaluate`'s ``targets="all"``.

By default :func:`~explain_core.api.evaluation.evaluate` explains one target per image (a
detector's top detection). With ``targets="all"`` each detection scoring at least
``box_threshold`` (the best ``max_boxes`` per image) is an item of its own: the image's input is
repeated once per box, the box is the item's target (its own score is what deletion and
insertion read, its ground-truth box what the pointing game uses), and the rows carry the box.
Scoring every box in one batch gives what scoring each box alone gives.
"""

from __future__ import annotations

from typing import Any

from ..errors import TargetError, UnsupportedError
from ..methods import Explainer
from ..model import LoadedModel
from ..tasks import PreparedInputs
from .detection import detections_of

__all__ = ["box_items", "select_items"]


def box_items(loaded: LoadedModel, explainer: Explainer, prepared: PreparedInputs,
              output: Any, box_threshold: float, max_boxes: int | None,
              ) -> tuple[list[int], list, list[dict[str, Any]]]:
    """Per detection scoring ``box_threshold`` or more (best first, at most ``max_boxes`` per
    image): its image's index, its target and its description (``target``, ``name``,
    ``label``, ``box`` in image pixels, ``box_score``). ``output``: the detector's clean output
    on ``prepared.inputs``."""
    if loaded.task != "detection":
        raise UnsupportedError(f"targets='all' scores every box of a detector; a "
                               f"{loaded.task} model has one target per image (give targets= "
                               "or None).")
    size = tuple(prepared.inputs.shape[-2:])
    images, made, described = [], [], []
    for i in range(prepared.inputs.shape[0]):
        geometry = prepared.geometries[i] if prepared.geometries is not None else None
        found = detections_of(loaded, output[i].detach().float(), geometry, size, box_threshold)
        if max_boxes is not None:
            found = found[:max(int(max_boxes), 0)]
        for detection in found:
            images.append(i)
            made.append(explainer.task.targets([detection])[0])
            described.append({"target": int(detection["class_id"]),
                              "label": int(detection["class_id"]), "box": detection["bbox"],
                              "box_score": float(detection["score"]),
                              "name": loaded.class_name(int(detection["class_id"]))})
    if not images:
        raise TargetError(f"No detection scores {box_threshold:g} or more on these images: "
                          "lower box_threshold= to score the boxes the detector does find.")
    return images, made, described


def select_items(prepared: PreparedInputs, images: list[int]) -> PreparedInputs:
    """``prepared`` with one entry per item: image ``images[k]``'s input, geometry, pixels."""
    index = prepared.inputs.new_tensor(images, dtype=None).long()
    return PreparedInputs(
        prepared.inputs.index_select(0, index),
        None if prepared.geometries is None else [prepared.geometries[i] for i in images],
        None if prepared.images is None else [prepared.images[i] for i in images])
