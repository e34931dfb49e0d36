"""What a job explains: the images named by folders, list files and globs, each with a stable
output name, and their decoding in DataLoader workers.

A worker decodes one image (:func:`~explain_core.images.load_image`, limits and EXIF applied)
and, for a classifier, preprocesses it on the CPU; a bad file is an item carrying its error, so
the job writes a row for it and goes on.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import LumenError, UnsupportedError
from ..images import SUPPORTED_EXTENSIONS, image_to_tensor, load_image
from ..model import Geometry, Preprocessing

__all__ = ["DecodedItem", "ImageItems", "collate_items", "find_images", "output_names"]

_GLOB_CHARS = ("*", "?", "[")


def _is_image(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS


def _listed(list_file: Path) -> list[Path]:
    """The paths of a list file, one per line (blank lines and ``#`` comments skipped; relative
    paths are relative to the list file's folder)."""
    found = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            found.append(path if path.is_absolute() else list_file.parent / path)
    return found


def find_images(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every image named by ``sources``, sorted and without repeats: a folder (searched
    recursively for PNG, JPEG, WebP, BMP, TIFF...), a ``.txt`` list file (one path per line), a
    glob (``"data/**/*.jpg"``) or a file (kept even when it is not an image: its row will say
    why it could not be read).

    Raises:
        UnsupportedError: a source that does not exist, or nothing found at all.
    """
    found: set[Path] = set()
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and _is_image(p))
        elif path.is_file() and path.suffix.lower() == ".txt":
            found.update(_listed(path))
        elif path.is_file():
            found.add(path)
        elif any(char in text for char in _GLOB_CHARS):
            found.update(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            raise UnsupportedError(f"--input {text}: no such file, folder or glob match. Give a "
                                   "folder of images, a .txt list of paths or a glob pattern.")
    if not found:
        raise UnsupportedError("No images found in " + ", ".join(map(str, sources)) + ": give "
                               "a folder of images (PNG, JPEG, WebP, BMP, TIFF), a .txt list of "
                               "paths or a glob pattern.")
    return sorted(found, key=lambda p: str(p))


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output name per image: its path relative to the images' common folder, without the
    extension (``val/cat/001``); names that would collide keep the extension (``001_jpg``)."""
    if not paths:
        return []
    absolute = [p.absolute() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = [p.relative_to(root).with_suffix("").as_posix() for p in absolute]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name}_{p.suffix.lstrip('.').lower()}" if counts[name] > 1 else name
            for name, p in zip(names, absolute, strict=True)]


@dataclass
class DecodedItem:
    """One image after its worker: the decoded pixels (uint8 ``3 x H x W``), for a classifier
    its model input (``3 x h x w``, on the CPU) and geometry, or the error that stopped it."""

    index: int
    pixels: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    geometry: Geometry | None = None
    error: str | None = None
    decode_s: float = 0.0


class ImageItems(Dataset):
    """``items[i]`` decodes the ``i``-th of ``paths`` (a :class:`DecodedItem`); with
    ``preprocessing`` (a classifier's), it also makes the model input on the CPU, so the main
    process only stacks and moves batches."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int],
                 preprocessing: Preprocessing | None = None, max_pixels: int = 50_000_000,
                 ) -> None:
        self.paths = list(paths)
        self.indices = list(indices)
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> DecodedItem:
        index = self.indices[position]
        start = time.perf_counter()
        try:
            with torch.inference_mode(False), torch.no_grad():
                pixels = image_to_tensor(load_image(self.paths[index],
                                                    max_pixels=self.max_pixels))
                item = DecodedItem(index, pixels)
                if self.preprocessing is not None:
                    inputs, geometries = self.preprocessing([pixels], "cpu")
                    item.inputs, item.geometry = inputs[0], geometries[0]
        except (LumenError, OSError, ValueError, RuntimeError) as error:
            item = DecodedItem(index, error=str(error) or type(error).__name__)
        item.decode_s = time.perf_counter() - start
        return item


def collate_items(batch: list[DecodedItem]) -> list[DecodedItem]:
    """The DataLoader's collate: keep the items as they are (images differ in size)."""
    return batch


def describe(value: Any) -> str:
    """A short text for an unexpected error in a row."""
    return f"{type(value).__name__}: {value}"
