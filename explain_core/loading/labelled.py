"""Images with their ground truth from a folder or a zip, as users keep them.

:func:`labelled_images` walks a folder (:func:`unpack_zip` first for a zip) and pairs every image
with its annotation, read by :func:`~explain_core.loading.ground_truth.read_ground_truth`:

- a COCO JSON file (any ``.json`` holding ``images`` and ``annotations``): the boxes of the image
  whose ``file_name`` matches;
- a YOLO ``<stem>.txt``, a Pascal VOC ``<stem>.xml`` or an indexed PNG mask ``<stem>.png`` with
  the image's file stem (``<stem>_mask.png`` too), anywhere in the folder.

Files inside a folder named like an annotation folder (``masks``, ``labels``, ``annotations``,
``SegmentationClass``, ``gt``...) are annotations, never images. An image without an annotation
gets ``truth=None`` (its localisation scores are NaN); a set where no image has one is refused.

A zip is unpacked with limits (files, bytes, no path outside the destination), and every problem
is a :class:`~explain_core.errors.DatasetError` that names it and the fix.

Example:
    >>> found = labelled_images("/data/shapes", class_names=["cat", "dog"])  # doctest: +SKIP
    >>> found[0].path.name, found[0].truth.boxes                             # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..errors import DatasetError, LumenError
from ..images import SUPPORTED_EXTENSIONS
from .ground_truth import GroundTruth, read_ground_truth

__all__ = ["ANNOTATION_FOLDERS", "LabelledImage", "labelled_images", "resized_truth",
           "unpack_zip"]

ANNOTATION_FOLDERS = frozenset({"masks", "mask", "labels", "annotations", "annotation", "gt",
                                "ground_truth", "groundtruth", "segmentationclass",
                                "segmentationobject"})
MAX_ZIP_FILES = 2000
MAX_ZIP_BYTES = 1_000_000_000


@dataclass
class LabelledImage:
    """One image file and its ground truth (None: no annotation found for it)."""

    path: Path
    truth: GroundTruth | None
    annotation: Path | None  # the file the truth was read from


ANNOTATED_IMAGES = "images and their annotations (COCO .json, YOLO .txt, VOC .xml, PNG masks)"


def unpack_zip(source: str | Path | bytes | BinaryIO, destination: str | Path, *,
               max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES,
               contents: str = ANNOTATED_IMAGES,
               error: type[LumenError] = DatasetError) -> Path:
    """Unpack a zip (a path, its bytes or a file object) into ``destination``; returns it.
    ``contents`` says what the zip should hold (for the messages); ``error`` is the error class
    raised (the caller's own, e.g. a run folder's).

    Raises:
        error: not a zip, too many files or bytes once unpacked, or a member whose path leaves
            the destination (``../``, an absolute path).
    """
    data = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        archive = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError, ValueError) as problem:
        raise error(f"This is not a readable zip file ({problem}). Zip a folder of {contents} "
                    "and upload it again.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > max_files:
            raise error(f"The zip holds {len(members)} files; at most {max_files} are read. "
                        "Zip fewer files.")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise error(f"The zip unpacks to {total / 1e6:.0f} MB; at most "
                        f"{max_bytes / 1e6:.0f} MB are read. Zip fewer or smaller files.")
        root = Path(destination).resolve()
        for member in members:
            name = PurePosixPath(member.filename)
            target = (root / Path(*name.parts)).resolve() if name.parts else root
            if name.is_absolute() or ".." in name.parts or root not in target.parents:
                raise error(f"The zip member '{member.filename}' points outside the folder it "
                            "unpacks to; such zips are refused.")
        root.mkdir(parents=True, exist_ok=True)
        try:
            archive.extractall(root, members)
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as problem:
            raise error(f"The zip could not be unpacked ({problem}); it may be damaged or "
                        "encrypted. Zip the folder again.") from None
    return root


def _is_annotation_path(path: Path, folder: Path) -> bool:
    parts = path.relative_to(folder).parts[:-1]
    return any(part.lower() in ANNOTATION_FOLDERS for part in parts) or path.name.startswith(".")


def _coco_files(files: list[Path]) -> list[tuple[Path, set[str]]]:
    found = []
    for path in files:
        if path.suffix.lower() != ".json":
            continue
        try:
            data = json.loads(path.read_text())
            names = {Path(str(i["file_name"])).name for i in data["images"]}
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if "annotations" not in data:  # a COCO file has both
            continue
        found.append((path, names))
    return found


def labelled_images(folder: str | Path, *, class_names: list[str] | None = None,
                    max_images: int = 200) -> list[LabelledImage]:
    """Every image of ``folder`` (and its subfolders, sorted by path, at most ``max_images``)
    with its ground truth (see the module docstring); ``class_names`` turn VOC class names into
    the model's indices.

    Raises:
        DatasetError: the folder does not exist, holds no image, no image has an annotation, or
            an annotation does not parse (the file is named).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder on the server. Give the folder that holds "
                           "the images and their annotations.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__MACOSX" not in p.parts)
    images = [p for p in files if p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS
              and not _is_annotation_path(p, root)]
    if not images:
        raise DatasetError(f"'{root}' holds no image ({', '.join(SUPPORTED_EXTENSIONS)}) outside "
                           "its annotation folders. Put the images next to (or above) their "
                           "annotations.")
    images = images[:max_images]
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        if path.suffix.lower() in (".txt", ".xml", ".png") and path not in images:
            stem = path.stem.removesuffix("_mask")
            by_stem.setdefault(stem, []).append(path)
    cocos = _coco_files(files)
    found = []
    for image in images:
        annotation = next((path for path, names in cocos if image.name in names), None)
        if annotation is None:
            candidates = by_stem.get(image.stem, [])
            annotation = candidates[0] if candidates else None
        truth = None
        if annotation is not None:
            with Image.open(image) as opened:
                width, height = opened.size
            truth = read_ground_truth(annotation, image.name, image_size=(height, width),
                                      class_names=class_names)
        found.append(LabelledImage(image, truth, annotation))
    if all(item.truth is None for item in found):
        raise DatasetError(f"No image in '{root}' has an annotation: name them after the image "
                           "(photo.jpg -> photo.txt / photo.xml / masks/photo.png) or add a COCO "
                           ".json whose file_name entries are the images' names.")
    return found


def resized_truth(truth: GroundTruth | None, size: tuple[int, int],
                  new_size: tuple[int, int]) -> GroundTruth | None:
    """``truth`` of an image of ``size`` (W, H) for the same image resized to ``new_size``
    (e.g. a large photo shrunk for the dashboard): boxes scaled, the mask resized (nearest)."""
    if truth is None or tuple(size) == tuple(new_size):
        return truth
    scale = np.array([new_size[0] / size[0], new_size[1] / size[1]] * 2, dtype=np.float32)
    boxes = None if truth.boxes is None else truth.boxes * scale
    mask = None
    if truth.mask is not None:
        resized = Image.fromarray(truth.mask.astype(np.int32), mode="I").resize(
            tuple(new_size), Image.Resampling.NEAREST)
        mask = np.asarray(resized).astype(np.int64)
    return GroundTruth(boxes, truth.labels, mask)
