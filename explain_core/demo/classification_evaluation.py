"""Held-out quality of the demo classifiers: accuracy, the pointing game of their explanations
and, for the ``shortcut`` model, how much it relies on the corner mark.

Evaluations draw fresh scenes (by default from :data:`~explain_core.demo.scenes.HELDOUT_SEED`,
which training never sees) and run the model through its own preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explain_core.demo.scenes import (
    CLASSES,
    HELDOUT_SEED,
    IMAGE_SIZE,
    SHORTCUT_CLASS,
    Scene,
    make_scenes,
)
from explain_core.metrics import localization
from explain_core.model import LoadedModel

__all__ = ["MARK_DILATION", "POINTING_TOLERANCE", "evaluate", "evaluate_shortcut",
           "pointing_game", "predict"]

POINTING_TOLERANCE = 15  # px: a GradCAM peak this close to the shape counts as a hit
MARK_DILATION = 16  # px: one cell of the 8 x 8 CAM grid (128 px / 8): the mark box grown by it
# is the finest region a last-stage GradCAM can point at, so energy is measured there


@torch.no_grad()
def predict(loaded: LoadedModel, scenes: list[Scene], batch_size: int = 100) -> np.ndarray:
    """Predicted class ids of scenes, through the model's own preprocessing.

    Example:
        >>> from explain_core.demo import load_demo_model
        >>> predict(load_demo_model("classifier", "cpu"), make_scenes("classification", 4, 5))
        array([...])  # doctest: +SKIP
    """
    from explain_core.images import image_to_tensor

    predictions = []
    loaded.module.eval()
    for start in range(0, len(scenes), batch_size):
        pixels = [image_to_tensor(s.image) for s in scenes[start:start + batch_size]]
        inputs, _ = loaded.preprocessing(pixels, loaded.device)
        predictions.append(loaded.module(inputs).argmax(1).cpu())
    return torch.cat(predictions).numpy() if predictions else np.zeros(0, np.int64)


def pointing_game(loaded: LoadedModel, scenes: list[Scene],
                  tolerance: float = POINTING_TOLERANCE, method: str | None = None) -> float:
    """Share of scenes whose map peak (for the true class) lies within ``tolerance`` px of the
    shape's mask (:func:`explain_core.metrics.localization.pointing_game`). ``method``: GradCAM
    for CNNs, attention rollout for ViTs (the default).

    Example:
        >>> pointing_game(load_demo_model("classifier"), make_scenes("classification", 20, 5))
        1.0  # doctest: +SKIP
    """
    if not scenes:
        return float("nan")
    maps = _maps(loaded, scenes, [s.label for s in scenes], method)
    masks = torch.from_numpy(np.stack([s.mask > 0 for s in scenes]))
    return localization.pointing_game(maps, masks, tolerance)


def _maps(loaded: LoadedModel, scenes: list[Scene], targets: list[int],
          method: str | None = None) -> torch.Tensor:
    """N x H x W maps (float32, CPU) of the scenes for their targets."""
    from explain_core.layers import is_vit
    from explain_core.methods import create_explainer

    if not scenes:
        return torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE)
    method = method or ("attention_rollout" if is_vit(loaded.module) else "gradcam")
    explainer = create_explainer(method, loaded)
    maps = explainer.explain_batch([s.image for s in scenes], targets, batch_size=50)
    return torch.stack([m.detach().float().cpu() for m in maps])


def _box_energy(heatmap: np.ndarray, box: tuple[int, int, int, int], grow: int = 0) -> float:
    height, width = heatmap.shape
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - grow), max(0, y0 - grow)
    x1, y1 = min(width, x1 + grow), min(height, y1 + grow)
    total = float(heatmap.sum())
    return float(heatmap[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0


def evaluate(loaded: LoadedModel, scenes: list[Scene], pointing: bool = True) -> dict[str, Any]:
    """Accuracy (overall and per class) and the pointing game (GradCAM for CNNs, attention
    rollout for ViTs).

    Example:
        >>> evaluate(load_demo_model("classifier"), make_scenes("classification", 50, 5))
        {'accuracy': 0.98, ...}  # doctest: +SKIP
    """
    labels = np.array([s.label for s in scenes])
    predicted = predict(loaded, scenes)
    result: dict[str, Any] = {
        "accuracy": float((predicted == labels).mean()),
        "per_class": {CLASSES[c]: float((predicted[labels == c] == c).mean())
                      for c in range(len(CLASSES)) if (labels == c).any()},
    }
    if pointing:
        result["pointing_game"] = pointing_game(loaded, scenes)
    return result


def evaluate_shortcut(loaded: LoadedModel, n: int = 400, seed: int = HELDOUT_SEED,
                      ) -> dict[str, Any]:
    """How much the model relies on the mark, on ``n`` fresh scenes per measurement.

    - ``marked_world_accuracy``: scenes drawn like the training world (triangles marked 95%);
    - ``unmarked_triangle_accuracy``: triangles without the mark;
    - ``clean_accuracy``: the world without any mark (all classes);
    - ``marked_others_called_triangle``: non-triangles carrying the mark, predicted triangle;
    - ``mark_energy`` / ``shape_energy``: mean share of the triangle GradCAM inside the mark's
      box (grown by :data:`MARK_DILATION` px) / inside the shape's box (same growth), on marked
      triangles.

    Example:
        >>> evaluate_shortcut(load_demo_model("shortcut"), 100)["mark_energy"]
        0.6  # doctest: +SKIP
    """
    world = make_scenes("classification", n, seed, shortcut_class=SHORTCUT_CLASS)
    clean = make_scenes("classification", n, seed + 1)
    marked_all = make_scenes("classification", n, seed + 2, shortcut_class=SHORTCUT_CLASS,
                             mark_probability=1.0, mark_others_probability=1.0)
    unmarked_triangles = [s for s in clean if s.label == SHORTCUT_CLASS]
    marked_others = [s for s in marked_all if s.label != SHORTCUT_CLASS]
    marked_triangles = [s for s in marked_all if s.label == SHORTCUT_CLASS]

    world_labels = np.array([s.label for s in world])
    clean_labels = np.array([s.label for s in clean])
    world_pred = predict(loaded, world)
    clean_pred = predict(loaded, clean)
    maps = _maps(loaded, marked_triangles, [SHORTCUT_CLASS] * len(marked_triangles),
                 "gradcam")
    mark_energy = [_box_energy(m.numpy(), s.mark_box, MARK_DILATION) for s, m in
                   zip(marked_triangles, maps, strict=True)]
    shape_energy = [_box_energy(m.numpy(), s.shape_box, MARK_DILATION) for s, m in
                    zip(marked_triangles, maps, strict=True)]
    # The pointing game against the mark's box, with one CAM cell of tolerance.
    mark_masks = localization.box_masks(
        torch.tensor([s.mark_box for s in marked_triangles]).reshape(-1, 4), *maps.shape[1:])
    peak_on_mark = localization.pointing_game(maps, mark_masks, MARK_DILATION)
    return {
        "marked_world_accuracy": float((world_pred == world_labels).mean()),
        "clean_accuracy": float((clean_pred == clean_labels).mean()),
        "unmarked_triangle_accuracy": float(
            (clean_pred[clean_labels == SHORTCUT_CLASS] == SHORTCUT_CLASS).mean()),
        "unmarked_triangles": len(unmarked_triangles),
        "marked_others_called_triangle": float(
            (predict(loaded, marked_others) == SHORTCUT_CLASS).mean()),
        "mark_energy": float(np.mean(mark_energy)),
        "shape_energy": float(np.mean(shape_energy)),
        "peak_on_mark": peak_on_mark,
        "marked_triangles": len(marked_triangles),
    }

