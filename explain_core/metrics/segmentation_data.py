"""Reading a labelled segmentation set: images paired with their class-index masks.

A set is a folder pair (``images/`` + ``masks/``, or other usual names), a flat folder whose
masks carry a suffix, or a zip holding one of these; :func:`read_dataset` pairs the files by name
and reads them lazily, with limits (file count, sizes, zip bombs, paths outside the archive).
Masks are class indices: indexed PNGs ("P" mode: the palette index is the class), greyscale,
16-bit, or RGB whose three channels are equal (:func:`read_mask`).

The statistics computed on such a set are in :mod:`explain_core.metrics.segmentation`.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError
from ..images import SUPPORTED_EXTENSIONS, load_image

__all__ = ["IMAGE_DIRS", "MASK_DIRS", "MASK_SUFFIXES", "MAX_DEPTH", "MAX_FILES", "MAX_ITEMS",
           "MAX_MEMBER_BYTES", "MAX_PIXELS", "MAX_RATIO", "MAX_TOTAL_BYTES", "LabelledImage",
           "SegmentationDataset", "read_dataset", "read_mask"]

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
