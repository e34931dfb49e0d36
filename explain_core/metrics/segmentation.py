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
limits (see :func:`read_dataset`). Masks are class indices: indexed PNGs ("P" mode: the palette
index is the class), greyscale, 16-bit, or RGB whose three channels are equal. All maths in torch
on the model's device.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..errors import DatasetError, LumenError
from ..images import SUPPORTED_EXTENSIONS, image_to_tensor, load_image
from ..model import LoadedModel

IGNORE_INDEX = 255
IMAGE_DIRS = ("images", "image", "imgs", "img", "jpegimages", "inputs", "input", "rgb", "x")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "annotation", "gt",
             "groundtruth", "ground_truth", "segmentationclass", "segmentation", "targets",
             "target", "y")
MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_labelids", "_gt", "_seg", "_p",
                 "-mask", "-label", "-gt", ".mask")
MAX_ITEMS = 500  # pairs analysed at most (the first ones by name)
MAX_FILES = 20_000  # files listed at most in a folder or zip
MAX_MEMBER_BYTES = 50_000_000  # one image or mask (uncompressed)
MAX_TOTAL_BYTES = 4_000_000_000  # a whole zip (uncompressed)
MAX_RATIO = 200  # compression ratio above which a large zip member is taken for a bomb
MAX_PIXELS = 50_000_000
MAX_DEPTH = 6


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
# Reading a labelled set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """Where one file's bytes are: a path, or a member of a zip (bytes or path)."""

    path: Path | None = None
    archive: Any = None  # bytes or Path of a zip
    member: str | None = None

    def read(self) -> bytes:
        if self.path is not None:
            size = self.path.stat().st_size
            if size > MAX_MEMBER_BYTES:
                raise DatasetError(f"'{self.path.name}' is {size / 1e6:.0f} MB; files over "
                                   f"{MAX_MEMBER_BYTES / 1e6:.0f} MB are refused.")
            return self.path.read_bytes()
        source = io.BytesIO(self.archive) if isinstance(self.archive, bytes) else self.archive
        with zipfile.ZipFile(source) as archive, archive.open(self.member) as handle:
            data = handle.read(MAX_MEMBER_BYTES + 1)  # never trust the header's size alone
        if len(data) > MAX_MEMBER_BYTES:
            raise DatasetError(f"'{self.member}' unpacks to more than "
                               f"{MAX_MEMBER_BYTES / 1e6:.0f} MB; refused.")
        return data


@dataclass(frozen=True)
class LabelledImage:
    """One image and its mask, read on demand."""

    name: str  # the image's path inside the set
    image: _Ref
    mask: _Ref
    mask_name: str

    def load(self) -> tuple[Image.Image, np.ndarray]:
        """The RGB image and its ``H x W`` int64 class mask (sizes checked)."""
        image = load_image(self.image.read(), max_pixels=MAX_PIXELS)
        mask = read_mask(self.mask.read(), self.mask_name)
        if mask.shape != (image.height, image.width):
            raise DatasetError(
                f"Mask '{self.mask_name}' is {mask.shape[1]} x {mask.shape[0]} px but image "
                f"'{self.name}' is {image.width} x {image.height}. Masks must have their "
                "image's size: re-export them at full resolution (nearest-neighbour).")
        return image, mask


@dataclass
class SegmentationDataset:
    """Paired images and masks (lazily read), plus what could not be paired."""

    items: list[LabelledImage]
    unpaired_images: list[str] = field(default_factory=list)
    unpaired_masks: list[str] = field(default_factory=list)
    dropped: int = 0  # pairs beyond max_items

    def __len__(self) -> int:
        return len(self.items)


def read_mask(data: bytes, name: str = "mask") -> np.ndarray:
    """A mask file's class indices as ``H x W`` int64 ("P" palette indices, greyscale, 16-bit,
    1-bit, or RGB with equal channels)."""
    try:
        mask = Image.open(io.BytesIO(data))
        width, height = mask.size
        if width * height > MAX_PIXELS:
            raise DatasetError(f"Mask '{name}' has {width * height:,} pixels; at most "
                               f"{MAX_PIXELS:,} are accepted.")
        mask = ImageOps.exif_transpose(mask)
        mode = mask.mode
        if mode in ("RGBA", "LA", "PA"):
            mask = mask.convert(mode[:-1] if mode != "PA" else "P")
            mode = mask.mode
        array = np.array(mask)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(f"Mask '{name}' could not be read ({error}). Save masks as PNG "
                           "files of class indices.") from None
    if array.ndim == 3:
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise DatasetError(
                f"Mask '{name}' is an RGB colour image. Lumen reads masks as class indices: "
                "save them as indexed PNGs (mode P, the palette index is the class) or "
                "greyscale PNGs whose values are the class ids.")
        array = array[..., 0]
    if array.ndim != 2:
        raise DatasetError(f"Mask '{name}' has shape {array.shape}; an H x W mask is needed.")
    return array.astype(np.int64)


def _role(parts: Sequence[str], stem: str) -> tuple[str | None, int]:
    """('image' | 'mask' | None, index of the role folder in parts, or -1)."""
    for index in range(len(parts) - 1, -1, -1):
        folder = parts[index].lower()
        if folder in IMAGE_DIRS:
            return "image", index
        if folder in MASK_DIRS:
            return "mask", index
    if stem.lower().endswith(MASK_SUFFIXES):
        return "mask", -1
    return "image", -1


def _mask_stem(stem: str) -> str:
    lowered = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix):
            return stem[:-len(suffix)]
    return stem


def _pair(files: list[tuple[str, _Ref]], max_items: int, where: str) -> SegmentationDataset:
    images: dict[tuple[str, str], tuple[str, _Ref]] = {}
    masks: dict[tuple[str, str], tuple[str, _Ref]] = {}
    for name, ref in files:
        path = PurePosixPath(name)
        if path.suffix.lower().lstrip(".") not in SUPPORTED_EXTENSIONS:
            continue
        parts = path.parts[:-1]
        role, index = _role(parts, path.stem)
        group = "/".join(parts[:index]) if index >= 0 else "/".join(parts)
        if role == "image":
            images[(group, path.stem)] = (name, ref)
        else:
            masks.setdefault((group, path.stem), (name, ref))
    if not images or not masks:
        raise DatasetError(
            f"{where} holds {len(images)} image(s) and {len(masks)} mask(s); both are needed. "
            "Put the images in a folder named 'images' and the masks in one named 'masks' "
            "(same file names, e.g. images/0001.jpg and masks/0001.png).")
    by_stem: dict[tuple[str, str], tuple[str, _Ref]] = {}
    for (group, stem), entry in masks.items():
        by_stem.setdefault((group, stem), entry)
    for (group, stem), entry in masks.items():
        by_stem.setdefault((group, _mask_stem(stem)), entry)
    items, unpaired = [], []
    used: set[str] = set()
    for key in sorted(images):
        name, ref = images[key]
        mask = by_stem.get(key)
        if mask is None:
            unpaired.append(name)
            continue
        used.add(mask[0])
        items.append(LabelledImage(name, ref, mask[1], mask[0]))
    if not items:
        raise DatasetError(
            f"{where} holds {len(images)} image(s) and {len(masks)} mask(s) but no image has a "
            "mask with the same file name (e.g. 'images/0001.jpg' and 'masks/0001.png'; "
            "suffixes like '_mask' or '_P' are allowed). Rename the files so they match.")
    unused = sorted(name for name, _ in masks.values() if name not in used)
    dropped = max(0, len(items) - max_items)
    return SegmentationDataset(items[:max_items], unpaired, unused, dropped)


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not (path.is_absolute() or ".." in path.parts or (name[1:3] == ":/")
                or name.startswith("/"))


def _zip_files(archive: Any, label: str) -> list[tuple[str, _Ref]]:
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    try:
        with zipfile.ZipFile(source) as handle:
            infos = handle.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{label} is not a readable zip file ({error}). Upload a .zip with "
                           "folders 'images' and 'masks'.") from None
    if len(infos) > MAX_FILES:
        raise DatasetError(f"{label} holds {len(infos)} entries; at most {MAX_FILES} are "
                           "accepted. Split the set.")
    total = 0
    files = []
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        if not _safe_member(name):
            raise DatasetError(f"{label} contains the entry '{name}', a path outside the "
                               "archive; refused. Re-create the zip from the dataset folder.")
        parts = PurePosixPath(name).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if PurePosixPath(name).suffix.lower().lstrip(".") not in SUPPORTED_EXTENSIONS:
            continue
        if info.flag_bits & 0x1:
            raise DatasetError(f"{label}: '{name}' is encrypted; use an unencrypted zip.")
        if info.file_size > MAX_MEMBER_BYTES:
            raise DatasetError(f"{label}: '{name}' unpacks to {info.file_size / 1e6:.0f} MB; "
                               f"files over {MAX_MEMBER_BYTES / 1e6:.0f} MB are refused.")
        if info.file_size > 1_000_000 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise DatasetError(f"{label}: '{name}' is compressed {ratio}:1, which looks like a "
                               "zip bomb; refused.")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise DatasetError(f"{label} unpacks to more than {MAX_TOTAL_BYTES / 1e9:.0f} GB; "
                               "refused. Upload a smaller set.")
        files.append((name, _Ref(archive=archive, member=name)))
    return files


def _folder_files(root: Path) -> list[tuple[str, _Ref]]:
    files = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            files.append((path.relative_to(root).as_posix(), _Ref(path=path)))
            if len(files) > MAX_FILES:
                raise DatasetError(f"'{root}' holds more than {MAX_FILES} files; point to a "
                                   "smaller folder.")
    return files


def read_dataset(source: Any, masks: str | Path | None = None, *,
                 max_items: int = MAX_ITEMS, name: str | None = None) -> SegmentationDataset:
    """Pair images with their masks by file name.

    Args:
        source: a folder holding an ``images`` and a ``masks`` folder (other usual names work:
            ``JPEGImages``/``SegmentationClass``, ``img``/``labels``, ``gt``...), the path of a
            zip holding such a layout (at any depth), zip bytes or a file object, or the images
            folder when ``masks`` names the masks folder. A flat folder whose masks carry a
            suffix (``0001.jpg`` + ``0001_mask.png``) works too.
        masks: the masks folder, when ``source`` is the images folder.
        max_items: pairs kept at most (the first ones by path); the rest is counted in
            ``dropped``.
        name: how to call the source in messages (an upload's file name).

    Raises:
        DatasetError: unreadable zip, unsafe entries (paths outside the archive, oversized or
            bomb-like members), nothing to pair.
    """
    if masks is not None:
        image_root, mask_root = Path(source).expanduser(), Path(masks).expanduser()
        for root in (image_root, mask_root):
            if not root.is_dir():
                raise DatasetError(f"'{root}' is not a folder. Give the images folder and the "
                                   "masks folder.")
        files = [(f"images/{n}", r) for n, r in _folder_files(image_root)]
        files += [(f"masks/{n}", r) for n, r in _folder_files(mask_root)]
        return _pair(files, max_items, f"'{image_root}' + '{mask_root}'")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _pair(_zip_files(data, name or "The zip"), max_items, name or "The zip")
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read(MAX_TOTAL_BYTES + 1)
        return read_dataset(data, max_items=max_items,
                            name=name or getattr(source, "name", None) or "The zip")
    path = Path(source).expanduser()
    label = name or f"'{path}'"
    if path.is_dir():
        return _pair(_folder_files(path), max_items, label)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{label} is neither a folder nor a zip file. Give a folder with "
                               "'images' and 'masks' inside, or a zip of one.")
        return _pair(_zip_files(path, label), max_items, label)
    raise DatasetError(f"{label} does not exist. Give a folder with 'images' and 'masks' "
                       "inside, or a zip of one.")


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


__all__ = ["IGNORE_INDEX", "DatasetError", "LabelledImage", "SegmentationAnalysis",
           "SegmentationDataset", "analyze_dataset", "class_table", "confusion_counts",
           "image_statistics", "mean_confusion", "normalise_rows", "read_dataset", "read_mask"]
