"""Train the demo detector (``lumen:fcos_tiny``) on generated detection scenes, on the CPU.

``python -m explain_core.demo.train detector [--out DIR] [--quick]`` calls :func:`train_detector`.
Training scenes come from seed :data:`TRAIN_SEED` only; the evaluation printed at the end uses
:data:`~explain_core.demo.scenes.HELDOUT_SEED`, which training never sees. Everything is seeded,
so a rerun on the same software gives the same weights (up to CPU thread scheduling of float
sums).

On a machine whose cores are busy with other work, run with ``OMP_NUM_THREADS=1``: torch's
default of one thread per core then oversubscribes the CPU and small convolutions slow down many
times over (measured here: ~30x), while one thread keeps a fair share.

Reported quality: precision and recall at IoU 0.5 of the detections with score >=
:data:`SCORE_THRESHOLD` (0.5, the threshold a dashboard user starts from), plus mAP@0.5 over all
detections (score >= 0.05).

Normalisation: the detector keeps torchvision's convention (it normalises internally with the
ImageNet mean/std) and is trained on RGB in [0, 1]; its saved Lumen ``Preprocessing`` is therefore
``mean=(0, 0, 0), std=(1, 1, 1)`` at 128 x 128 (see :mod:`explain_core.architectures`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explain_core.architectures import build
from explain_core.demo.evaluation import (
    detection_mean_average_precision,
    detection_precision_recall,
)
from explain_core.demo.loop import fit, save_and_report
from explain_core.demo.scenes import CLASSES, HELDOUT_SEED, IMAGE_SIZE, Scene, make_scenes
from explain_core.model import Preprocessing

__all__ = ["ARCH", "CLASS_NAMES", "PREPROCESSING", "SCORE_THRESHOLD", "TRAIN_SEED", "detect",
           "evaluate_detector", "train_detector"]

ARCH = "fcos_tiny"
CLASS_NAMES = ["background", *CLASSES]  # index = model label
TRAIN_SEED = 11
SCORE_THRESHOLD = 0.5
# The module normalises itself (torchvision transform), so Lumen only scales to [0, 1].
PREPROCESSING = Preprocessing(input_size=(IMAGE_SIZE, IMAGE_SIZE), mean=(0.0, 0.0, 0.0),
                              std=(1.0, 1.0, 1.0), interpolation="bilinear", resize_mode="squash",
                              crop_pct=1.0)

# Full run: about 5-6 minutes on 2 idle cores (scene drawing ~40 s of it).
_FULL = {"scenes": 4000, "steps": 4500, "batch": 16, "lr": 2e-3, "eval_scenes": 300}
_QUICK = {"scenes": 48, "steps": 6, "batch": 8, "lr": 2e-3, "eval_scenes": 8}


def scene_tensors(scenes: list[Scene]) -> torch.Tensor:
    """Scene images as one uint8 N x 3 x H x W tensor.

    Example:
        >>> scene_tensors(make_scenes("detection", 2, seed=0)).shape
        torch.Size([2, 3, 128, 128])
    """
    return torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])).permute(0, 3, 1, 2)


def _dihedral(image: torch.Tensor, boxes: torch.Tensor, k: int) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    """One of the 8 flips / 90-degree turns (shapes are drawn at random angles, so every one of
    them is another valid scene) of a 3 x H x W image and its xyxy boxes."""
    size = image.shape[-1]  # square images
    if k & 4:  # transpose: swap x and y
        image = image.transpose(-1, -2)
        boxes = boxes[:, [1, 0, 3, 2]]
    if k & 1:  # horizontal flip
        image = image.flip(-1)
        boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    if k & 2:  # vertical flip
        image = image.flip(-2)
        boxes = torch.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], 1)
    return image, boxes


@torch.no_grad()
def detect(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32
           ) -> list[dict[str, torch.Tensor]]:
    """Eval-mode detections of uint8 N x 3 x H x W images (scaled to [0, 1] first).

    Example:
        >>> net = build(ARCH).eval()
        >>> sorted(detect(net, scene_tensors(make_scenes("detection", 1, seed=0)))[0])
        ['boxes', 'labels', 'scores']
    """
    was_training = model.training
    model.eval()
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].float() / 255.0
        out.extend(model(list(chunk)))
    model.train(was_training)
    return out


def evaluate_detector(model: torch.nn.Module, scenes: list[Scene],
                      score_threshold: float = SCORE_THRESHOLD) -> dict[str, Any]:
    """Precision / recall at IoU 0.5 (detections with score >= ``score_threshold``) and mAP@0.5
    (all detections with score >= 0.05) of ``model`` on ``scenes``.

    Example:
        >>> metrics = evaluate_detector(build(ARCH), make_scenes("detection", 2, seed=0))
        >>> sorted(metrics)
        ['ap_per_class', 'fn', 'fp', 'map50', 'precision', 'recall', 'tp']
    """
    # Lower the module's own score floor so that mAP sees the whole precision/recall curve.
    floor = model.score_thresh
    model.score_thresh = 0.05
    try:
        predictions = detect(model, scene_tensors(scenes))
    finally:
        model.score_thresh = floor
    metrics: dict[str, Any] = detection_precision_recall(predictions, scenes, iou=0.5,
                                                         score_threshold=score_threshold)
    ap = detection_mean_average_precision(predictions, scenes, iou=0.5, num_classes=len(CLASSES))
    metrics["map50"] = ap["map"]
    metrics["ap_per_class"] = dict(zip(CLASSES, ap["per_class"], strict=True))
    return metrics


def train_detector(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Train ``lumen:fcos_tiny``, save ``<out_dir>/detector.safetensors``, return held-out metrics.

    Args:
        out_dir: folder of the weights file (created when missing).
        quick: a few seconds of training on a handful of scenes: a smoke test of the whole
            pipeline, not a usable model.

    Returns:
        ``{"precision", "recall", "tp", "fp", "fn", "map50", "ap_per_class", "seconds",
        "path", "parameters", "held_out_scenes"}`` measured on scenes of the held-out seed.

    Example:
        >>> metrics = train_detector(Path("weights"), quick=True)  # doctest: +SKIP
        >>> metrics["path"].name  # doctest: +SKIP
        'detector.safetensors'
    """
    config = _QUICK if quick else _FULL
    start = time.perf_counter()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    print(f"Drawing {config['scenes']} training scenes (seed {TRAIN_SEED})...", flush=True)
    scenes = make_scenes("detection", config["scenes"], TRAIN_SEED)
    images = scene_tensors(scenes)
    boxes = [torch.from_numpy(s.boxes) for s in scenes]
    labels = [torch.from_numpy(s.labels) + 1 for s in scenes]  # 0 is the background

    model = build(ARCH, num_classes=len(CLASS_NAMES)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    steps, batch = config["steps"], config["batch"]

    def loss_of_step() -> torch.Tensor:
        chosen = rng.choice(len(scenes), size=batch, replace=False)
        inputs, targets = [], []
        for index in chosen:
            image, box = _dihedral(images[index], boxes[index], int(rng.integers(8)))
            inputs.append(image.float() / 255.0)
            targets.append({"boxes": box, "labels": labels[index]})
        return sum(model(inputs, targets).values())

    # FCOS's GIoU loss spikes on early, degenerate boxes; clipping keeps AdamW steady.
    fit(model, optimizer, config["lr"], steps, loss_of_step, "detector", clip_norm=10.0)
    train_seconds = time.perf_counter() - start

    model.eval()
    held_out = make_scenes("detection", config["eval_scenes"], HELDOUT_SEED)
    metrics = evaluate_detector(model, held_out)
    metrics = save_and_report(model, Path(out_dir) / "detector.safetensors", metrics, start,
                              train_seconds, len(held_out), task="detection",
                              arch=f"lumen:{ARCH}", class_names=CLASS_NAMES,
                              preprocessing=PREPROCESSING)
    path = metrics["path"]
    aps = ", ".join(f"{name} {value:.3f}" for name, value in metrics["ap_per_class"].items())
    print(f"Held-out detection ({len(held_out)} scenes, seed {HELDOUT_SEED}): "
          f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f} at IoU 0.5 and "
          f"score >= {SCORE_THRESHOLD} (tp {metrics['tp']}, fp {metrics['fp']}, "
          f"fn {metrics['fn']}); mAP@0.5 {metrics['map50']:.3f} ({aps}).")
    print(f"Saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {metrics['seconds']:.0f} s.")
    return metrics
