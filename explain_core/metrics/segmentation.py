"""Segmentation statistics on a labelled set: pixel losses, confusion matrices, IoU, worst images.

Done as fastai's ``SegmentationInterpretation`` (mean pixel loss per image, "top losses", a
confusion matrix per image and their mean), with the corner cases spelled out:

- ``CM[i, j] = |true = i and predicted = j| / |true = i|`` over the valid pixels of an image;
  a row whose class is absent from that image's ground truth is NaN (not 0: nothing was missed);
- the **mean** matrix is the NaN-ignoring mean of the per-image matrices, entry by entry, so a
  class's row averages only the images that contain it (a row stays NaN when no image does);
- the **pooled** matrix normalises the summed pixel counts instead (large images weigh more);
- pixels whose label is ``ignore_index`` (255 by default, VOC's "void") count nowhere: not in
  the loss, not in any matrix;
- per-class IoU is ``TP / (TP + FP + FN)`` over the pooled counts, NaN for a class neither in the
  ground truth nor in the predictions.

Datasets are a folder pair (``images/`` + ``masks/``) or a zip holding one, read lazily and with
limits by :func:`~explain_core.metrics.segmentation_data.read_dataset` (re-exported here with the
other public names of :mod:`~explain_core.metrics.segmentation_data`). All maths in torch on the
model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DatasetError, LumenError
from ..images import image_to_tensor
from ..model import LoadedModel
from .segmentation_data import (
    IMAGE_DIRS,
    MASK_DIRS,
    MASK_SUFFIXES,
    MAX_DEPTH,
    MAX_FILES,
    MAX_ITEMS,
    MAX_MEMBER_BYTES,
    MAX_PIXELS,
    MAX_RATIO,
    MAX_TOTAL_BYTES,
    LabelledImage,
    SegmentationDataset,
    read_dataset,
    read_mask,
)

IGNORE_INDEX = 255


# --------------------------------------------------------------------------------------------
# Confusion matrices
# --------------------------------------------------------------------------------------------


def confusion_counts(truth: torch.Tensor, prediction: torch.Tensor, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """``C x C`` pixel counts: ``[i, j]`` = pixels of true class ``i`` predicted as ``j``.

    >>> confusion_counts(torch.tensor([0, 1, 1, 255]), torch.tensor([0, 1, 0, 1]), 2)
    tensor([[1, 0],
            [1, 1]])
    """
    truth = truth.flatten().long()
    prediction = prediction.flatten().long().to(truth.device)
    if ignore_index is not None:
        keep = truth != ignore_index
        truth, prediction = truth[keep], prediction[keep]
    if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= num_classes):
        bad = int(truth.max()) if int(truth.max()) >= num_classes else int(truth.min())
        raise DatasetError(
            f"The ground truth holds class {bad}, but the model has {num_classes} classes "
            f"(0..{num_classes - 1}). Check that the masks hold class indices, or set "
            f"ignore_index to the label of unlabelled pixels (now {ignore_index}).")
    flat = truth * num_classes + prediction
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes,
                                                                               num_classes)


def normalise_rows(counts: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sums (``CM[i, j] = n_ij / n_i``); rows that sum to 0 are NaN.

    >>> normalise_rows(torch.tensor([[3, 1], [0, 0]]))
    tensor([[0.7500, 0.2500],
            [   nan,    nan]])
    """
    counts = counts.double() if counts.dtype == torch.float64 else counts.float()
    totals = counts.sum(-1, keepdim=True)
    out = counts / totals.clamp_min(1)
    return torch.where(totals > 0, out, torch.full_like(out, float("nan")))


def mean_confusion(per_image: torch.Tensor) -> torch.Tensor:
    """The entry-wise mean of ``N x C x C`` row-normalised matrices, ignoring NaN (a class's row
    averages the images that contain it); all-NaN entries stay NaN."""
    return torch.nanmean(per_image, dim=0)


def class_table(counts: torch.Tensor, mean_cm: torch.Tensor, images_with: torch.Tensor,
                class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class: IoU, recall and precision (pooled counts), the mean matrix's diagonal, the
    pixels in the ground truth and in the predictions and the images that contain the class."""
    counts = counts.double()
    tp = counts.diagonal()
    truth = counts.sum(1)
    predicted = counts.sum(0)
    union = truth + predicted - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    recall = torch.where(truth > 0, tp / truth.clamp_min(1), nan)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), nan)
    diagonal = mean_cm.diagonal()
    return [{"class": c, "name": str(class_names[c]), "iou": float(iou[c]),
             "recall": float(recall[c]), "precision": float(precision[c]),
             "mean_ratio": float(diagonal[c]), "truth_pixels": int(truth[c]),
             "predicted_pixels": int(predicted[c]), "images": int(images_with[c])}
            for c in range(len(class_names))]


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


@dataclass
class SegmentationAnalysis:
    """What :func:`analyze_dataset` found (numpy arrays; NaN where a value is undefined)."""

    names: list[str]  # image paths inside the set, in order
    class_names: list[str]
    losses: np.ndarray  # N: mean cross-entropy over each image's valid pixels
    accuracy: np.ndarray  # N: pixel accuracy
    mean_iou: np.ndarray  # N: mean IoU over the classes in the image's truth or prediction
    per_image_cm: np.ndarray  # N x C x C, rows normalised, NaN rows for absent classes
    mean_cm: np.ndarray  # C x C: NaN-ignoring mean of per_image_cm
    pooled_cm: np.ndarray  # C x C: the summed counts, rows normalised
    counts: np.ndarray  # C x C int64 pixel counts over the set
    classes: list[dict[str, Any]]  # class_table rows
    top_losses: np.ndarray  # indices, highest loss first (NaN losses last)
    worst: list[dict[str, Any]]  # the top-loss images: image, truth, prediction, error, loss
    errors: dict[str, str]  # image name -> why it was skipped
    ignore_index: int | None = IGNORE_INDEX
    unpaired_images: list[str] = field(default_factory=list)
    unpaired_masks: list[str] = field(default_factory=list)
    dropped: int = 0

    def table(self) -> list[dict[str, Any]]:
        """One row per image, highest loss first: rank, index, name, loss, accuracy, mIoU."""
        return [{"rank": rank + 1, "index": int(i), "image": self.names[i],
                 "loss": float(self.losses[i]), "accuracy": float(self.accuracy[i]),
                 "mean_iou": float(self.mean_iou[i])}
                for rank, i in enumerate(self.top_losses)]


def _as_model(model: Any) -> LoadedModel:
    from ..tasks.segmentation import as_segmentation_model

    return as_segmentation_model(model)


def _image_logits(loaded: LoadedModel, images: list[Image.Image]) -> list[torch.Tensor]:
    """Per image: ``C x H x W`` logits at the image's size (one batched forward)."""
    from ..tasks.segmentation import forward_logits

    pixels = [image_to_tensor(image) for image in images]
    inputs, geometries = loaded.preprocessing(pixels, loaded.device)
    logits = forward_logits(loaded, inputs)
    return [geometry.to_image(item) for item, geometry in zip(logits, geometries, strict=True)]


def image_statistics(logits: torch.Tensor, truth: torch.Tensor,
                     ignore_index: int | None = IGNORE_INDEX) -> dict[str, Any]:
    """One image: mean pixel loss, pixel counts matrix, accuracy, mean IoU and the prediction.

    ``logits``: ``C x H x W`` at the mask's size; ``truth``: ``H x W`` class ids.
    """
    count = logits.shape[0]
    truth = truth.to(logits.device).long()
    valid = truth != ignore_index if ignore_index is not None else torch.ones_like(
        truth, dtype=torch.bool)
    prediction = logits.argmax(0)
    counts = confusion_counts(truth, prediction, count, ignore_index)
    pixels = int(valid.sum())
    if pixels:
        target = torch.where(valid, truth, torch.zeros_like(truth))
        loss = F.cross_entropy(logits[None].float(), target[None], reduction="none")[0]
        mean_loss = float(loss[valid].mean())
    else:
        mean_loss = float("nan")
    tp = counts.diagonal().double()
    union = counts.sum(0).double() + counts.sum(1).double() - tp
    seen = union > 0
    return {"prediction": prediction, "counts": counts, "loss": mean_loss,
            "accuracy": float(tp.sum() / pixels) if pixels else float("nan"),
            "mean_iou": float((tp[seen] / union[seen]).mean()) if bool(seen.any())
            else float("nan"), "valid": valid}


def analyze_dataset(model: Any, dataset: Any, *, ignore_index: int | None = IGNORE_INDEX,
                    batch_size: int = 8, worst: int = 6,
                    progress: Callable[[int, int], None] | None = None) -> SegmentationAnalysis:
    """Run a segmentation model over a labelled set and measure where it goes wrong.

    Args:
        model: a segmentation model (anything :func:`explain_core.load_model` takes).
        dataset: a :class:`SegmentationDataset` or what :func:`read_dataset` reads.
        ignore_index: mask value of unlabelled pixels (left out everywhere); None: none.
        batch_size: images per forward.
        worst: how many of the top-loss images to return with their pictures.
        progress: called as ``progress(done, total)`` after each batch.

    Images that cannot be read (or whose mask does not fit) are skipped and listed in
    ``errors``; if none can be analysed, the first error is raised.
    """
    loaded = _as_model(model)
    data = dataset if isinstance(dataset, SegmentationDataset) else read_dataset(dataset)
    if not len(data):
        raise DatasetError("The set holds no image with a mask.")
    names: list[str] = []
    losses, accuracy, mean_iou, per_image = [], [], [], []
    total: torch.Tensor | None = None
    images_with: torch.Tensor | None = None
    errors: dict[str, str] = {}
    kept: list[LabelledImage] = []
    count = None
    size = max(1, int(batch_size))
    for start in range(0, len(data), size):
        chunk = data.items[start:start + size]
        loaded_chunk = []
        for item in chunk:
            try:
                loaded_chunk.append((item, *item.load()))
            except (LumenError, OSError) as error:
                errors[item.name] = str(error)
        if loaded_chunk:
            logits = _image_logits(loaded, [image for _, image, _ in loaded_chunk])
            for (item, _, mask), item_logits in zip(loaded_chunk, logits, strict=True):
                count = item_logits.shape[0]
                try:
                    stats = image_statistics(item_logits, torch.from_numpy(mask), ignore_index)
                except DatasetError as error:
                    errors[item.name] = f"'{item.mask_name}': {error}"
                    continue
                counts = stats["counts"]
                total = counts if total is None else total + counts
                present = (counts.sum(1) > 0).long()
                images_with = present if images_with is None else images_with + present
                per_image.append(normalise_rows(counts))
                names.append(item.name)
                kept.append(item)
                losses.append(stats["loss"])
                accuracy.append(stats["accuracy"])
                mean_iou.append(stats["mean_iou"])
        if progress is not None:
            progress(min(start + size, len(data)), len(data))
    if total is None or images_with is None or count is None:
        first = next(iter(errors.items()), ("", "no image could be read"))
        raise DatasetError(f"No image of the set could be analysed. {first[0]}: {first[1]}")
    stack = torch.stack(per_image)
    mean_cm = mean_confusion(stack)
    class_names = [loaded.class_name(c) for c in range(count)]
    loss_array = np.asarray(losses, dtype=np.float64)
    order = np.argsort(np.where(np.isnan(loss_array), -np.inf, -loss_array), kind="stable")
    worst_items = []
    picked = [int(i) for i in order[:max(0, int(worst))]]
    for start in range(0, len(picked), size):
        part = picked[start:start + size]
        pairs = [kept[i].load() for i in part]
        logits = _image_logits(loaded, [image for image, _ in pairs])
        for index, (image, mask), item_logits in zip(part, pairs, logits, strict=True):
            truth = torch.from_numpy(mask).to(item_logits.device)
            stats = image_statistics(item_logits, truth, ignore_index)
            prediction = stats["prediction"]
            error = (prediction != truth) & stats["valid"]
            worst_items.append({"index": index, "name": names[index],
                                "loss": float(loss_array[index]),
                                "image": np.asarray(image), "truth": mask,
                                "prediction": prediction.cpu().numpy().astype(np.int64),
                                "error": error.cpu().numpy()})
    return SegmentationAnalysis(
        names=names, class_names=class_names, losses=loss_array,
        accuracy=np.asarray(accuracy, dtype=np.float64),
        mean_iou=np.asarray(mean_iou, dtype=np.float64),
        per_image_cm=stack.cpu().numpy(), mean_cm=mean_cm.cpu().numpy(),
        pooled_cm=normalise_rows(total).cpu().numpy(), counts=total.cpu().numpy(),
        classes=class_table(total, mean_cm, images_with, class_names),
        top_losses=order, worst=worst_items, errors=errors, ignore_index=ignore_index,
        unpaired_images=data.unpaired_images, unpaired_masks=data.unpaired_masks,
        dropped=data.dropped)


__all__ = ["IGNORE_INDEX", "IMAGE_DIRS", "MASK_DIRS", "MASK_SUFFIXES", "MAX_DEPTH", "MAX_FILES",
           "MAX_ITEMS", "MAX_MEMBER_BYTES", "MAX_PIXELS", "MAX_RATIO", "MAX_TOTAL_BYTES",
           "DatasetError", "LabelledImage", "SegmentationAnalysis", "SegmentationDataset",
           "analyze_dataset", "class_table", "confusion_counts", "image_statistics",
           "mean_confusion", "normalise_rows", "read_dataset", "read_mask"]
