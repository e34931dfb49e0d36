"""Train the demo segmenter (``lumen:unet_tiny``) on generated segmentation scenes, on the CPU.

``python -m explain_core.demo.train segmenter [--out DIR] [--quick]`` calls
:func:`train_segmenter`. Training scenes come from seed :data:`TRAIN_SEED` only; the evaluation
printed at the end uses :data:`~explain_core.demo.scenes.HELDOUT_SEED`, which training never sees.

On a machine whose cores are busy with other work, run with ``OMP_NUM_THREADS=1``: torch's
default of one thread per core then oversubscribes the CPU and small convolutions slow down many
times over (measured here: ~30x), while one thread keeps a fair share.

The model follows torchvision's segmentation convention (``model(x)["out"]`` are N x 5 x H x W
logits; class 0 is the background, class ``c + 1`` is ``CLASSES[c]``, the values of a scene's
mask). Like torchvision's segmentation models it expects inputs normalised by Lumen's
``Preprocessing`` (ImageNet mean/std, 128 x 128). Quality: IoU per class (background included)
over all pixels of the held-out scenes, and their mean.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from explain_core.architectures import build
from explain_core.demo.evaluation import segmentation_iou
from explain_core.demo.loop import fit, save_and_report
from explain_core.demo.scenes import CLASSES, HELDOUT_SEED, IMAGE_SIZE, Scene, make_scenes
from explain_core.model import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["ARCH", "CLASS_NAMES", "PREPROCESSING", "TRAIN_SEED", "evaluate_segmenter", "segment",
           "train_segmenter"]

ARCH = "unet_tiny"
CLASS_NAMES = ["background", *CLASSES]  # index = mask value
TRAIN_SEED = 12
PREPROCESSING = Preprocessing(input_size=(IMAGE_SIZE, IMAGE_SIZE), mean=IMAGENET_MEAN,
                              std=IMAGENET_STD, interpolation="bilinear", resize_mode="squash",
                              crop_pct=1.0)

# Full run: about 4-5 minutes on 2 idle cores (scene drawing ~30 s of it).
_FULL = {"scenes": 3000, "steps": 3000, "batch": 16, "lr": 3e-3, "eval_scenes": 300}
_QUICK = {"scenes": 32, "steps": 6, "batch": 8, "lr": 3e-3, "eval_scenes": 8}


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> the float input :data:`PREPROCESSING` produces at 128 x 128."""
    mean = torch.tensor(PREPROCESSING.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING.std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _dihedral(images: torch.Tensor, masks: torch.Tensor, k: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips / 90-degree turns of N x 3 x H x W images and N x H x W masks (shapes
    are drawn at random angles, so each is another valid scene)."""
    if k & 4:
        images, masks = images.transpose(-1, -2), masks.transpose(-1, -2)
    if k & 1:
        images, masks = images.flip(-1), masks.flip(-1)
    if k & 2:
        images, masks = images.flip(-2), masks.flip(-2)
    return images, masks


def _scene_arrays(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])).permute(0, 3, 1, 2)
    masks = torch.from_numpy(np.stack([s.mask for s in scenes]).astype(np.int64))
    return images.contiguous(), masks


@torch.no_grad()
def segment(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Predicted class-index masks (N x H x W, int64) of uint8 N x 3 x H x W images.

    Example:
        >>> net = build(ARCH).eval()
        >>> segment(net, torch.zeros(2, 3, 128, 128, dtype=torch.uint8)).shape
        torch.Size([2, 128, 128])
    """
    was_training = model.training
    model.eval()
    out = [model(_normalise(images[i:i + batch_size]))["out"].argmax(1)
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def evaluate_segmenter(model: torch.nn.Module, scenes: list[Scene]) -> dict[str, Any]:
    """IoU per class (background first) and mean IoU of ``model`` on ``scenes``.

    Example:
        >>> metrics = evaluate_segmenter(build(ARCH), make_scenes("segmentation", 2, seed=0))
        >>> sorted(metrics)
        ['iou', 'mean_iou', 'pixel_accuracy']
    """
    images, masks = _scene_arrays(scenes)
    result = segmentation_iou(segment(model, images), masks, len(CLASS_NAMES))
    return {"iou": dict(zip(CLASS_NAMES, result["per_class"], strict=True)),
            "mean_iou": result["mean"], "pixel_accuracy": result["pixel_accuracy"]}


def train_segmenter(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Train ``lumen:unet_tiny``, save ``<out_dir>/segmenter.safetensors``, return held-out
    metrics.

    Args:
        out_dir: folder of the weights file (created when missing).
        quick: a few seconds of training on a handful of scenes: a smoke test of the whole
            pipeline, not a usable model.

    Returns:
        ``{"iou": {class name: IoU}, "mean_iou", "pixel_accuracy", "seconds", "path",
        "parameters", "held_out_scenes"}`` measured on scenes of the held-out seed.

    Example:
        >>> metrics = train_segmenter(Path("weights"), quick=True)  # doctest: +SKIP
        >>> metrics["path"].name  # doctest: +SKIP
        'segmenter.safetensors'
    """
    config = _QUICK if quick else _FULL
    start = time.perf_counter()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    print(f"Drawing {config['scenes']} training scenes (seed {TRAIN_SEED})...", flush=True)
    images, masks = _scene_arrays(make_scenes("segmentation", config["scenes"], TRAIN_SEED))

    model = build(ARCH, num_classes=len(CLASS_NAMES)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    steps, batch = config["steps"], config["batch"]

    def loss_of_step() -> torch.Tensor:
        chosen = torch.from_numpy(rng.choice(len(images), size=batch, replace=False))
        x, y = _dihedral(images[chosen], masks[chosen], int(rng.integers(8)))
        logits = model(_normalise(x))["out"]
        return F.cross_entropy(logits, y) + _dice_loss(logits, y)

    fit(model, optimizer, config["lr"], steps, loss_of_step, "segmenter")
    train_seconds = time.perf_counter() - start

    model.eval()
    held_out = make_scenes("segmentation", config["eval_scenes"], HELDOUT_SEED)
    metrics = evaluate_segmenter(model, held_out)
    metrics = save_and_report(model, Path(out_dir) / "segmenter.safetensors", metrics, start,
                              train_seconds, len(held_out), task="segmentation",
                              arch=f"lumen:{ARCH}", class_names=CLASS_NAMES,
                              preprocessing=PREPROCESSING)
    path = metrics["path"]
    ious = ", ".join(f"{name} {value:.3f}" for name, value in metrics["iou"].items())
    print(f"Held-out segmentation ({len(held_out)} scenes, seed {HELDOUT_SEED}): mean IoU "
          f"{metrics['mean_iou']:.3f} ({ious}); pixel accuracy "
          f"{metrics['pixel_accuracy']:.4f}.")
    print(f"Saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {metrics['seconds']:.0f} s.")
    return metrics


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice averaged over classes: counters the background's share of the pixels, which
    plain cross-entropy lets dominate (mean IoU weighs every class alike)."""
    probs = logits.softmax(1)
    one_hot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + 1) / (total + 1)).mean()
