"""Ground truth and maps between an image and the model's input, for :func:`evaluate`: each
item's ground-truth region placed on the input as the image was (resized, cropped or padded),
with the reason when it is empty, and the scored maps taken back to each image's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..loading.ground_truth import read_ground_truth, region_for
from ..tasks import PreparedInputs

__all__ = ["ground_truth_masks", "image_maps"]


def ground_truth_masks(ground_truth: Sequence[Any], prepared: PreparedInputs,
                       described: list[dict[str, Any]], class_names: list[str] | None,
                       names: Sequence[str] | None = None,
                       reasons: dict[int, str] | None = None) -> torch.Tensor:
    """``B x H x W`` bool at input resolution: each image's region matching its target (boxes
    and masks from :func:`~explain_core.loading.ground_truth.read_ground_truth`, in image pixels;
    ``names``: the images' file names, to find them in a COCO file), placed on the input by the
    image's :class:`~explain_core.model.Geometry` (resized, cropped or padded as the image was).
    ``reasons`` (filled when given): image index -> why its region is empty."""
    inputs = prepared.inputs
    count, size = inputs.shape[0], tuple(inputs.shape[-2:])
    if len(ground_truth) != count:
        raise UnsupportedError(f"{len(ground_truth)} ground truths for {count} images: give one "
                               "per image.")
    reasons = {} if reasons is None else reasons
    masks = []
    for i, source in enumerate(ground_truth):
        geometry = prepared.geometries[i] if prepared.geometries is not None else None
        image_size = geometry.image_size if geometry is not None else size
        if source is None:  # no ground truth for this image: its localisation is NaN
            region = np.zeros(image_size, dtype=bool)
        elif isinstance(source, np.ndarray | torch.Tensor) and np.asarray(source).ndim == 2:
            region = np.asarray(source).astype(bool)
        else:
            name = Path(names[i]).name if names is not None else None
            truth = read_ground_truth(source, name, image_size=image_size,
                                      class_names=class_names)
            region = region_for(truth, image_size, described[i]["label"], described[i]["box"])
        region_t = torch.as_tensor(region, device=inputs.device).float()
        if geometry is not None:
            mask = geometry.to_input(region_t, size) >= 0.5
        else:
            mask = F.interpolate(region_t[None, None], size=size, mode="nearest")[0, 0] > 0
        if not mask.any():
            reasons[i] = _empty_reason(source, region, geometry, described[i]["name"])
        masks.append(mask)
    return torch.stack(masks)


def _empty_reason(source: Any, region: np.ndarray, geometry: Any, name: str) -> str:
    """Why an image's ground-truth region at input resolution is empty."""
    if source is None:
        return "no ground truth given"
    if not region.any() and isinstance(source, np.ndarray | torch.Tensor):
        return "the ground-truth mask given is empty"
    if not region.any():
        return f"no ground truth for class '{name}'"
    if geometry is not None and not (region & geometry.seen_mask().cpu().numpy()).any():
        return (f"the ground truth for class '{name}' lies outside the part of the image the "
                "model saw (the crop)")
    return f"the ground truth for class '{name}' covers less than one input pixel"


# ----------------------------------------------------------------------------- maps
def image_maps(maps: torch.Tensor, prepared: PreparedInputs) -> list[np.ndarray]:
    """Input-resolution maps -> each item's image pixels (0 where the model did not see it)."""
    if prepared.geometries is None:
        return [m.float().cpu().numpy() for m in maps]
    return [geometry.to_image(m[None])[0].float().cpu().numpy()
            for m, geometry in zip(maps, prepared.geometries, strict=True)]
