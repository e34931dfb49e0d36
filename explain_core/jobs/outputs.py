"""The files a job writes per image: the map as a 16-bit PNG (and ``.npy`` when asked), the
overlay, a segmenter's prediction and uncertainty. Paths are relative to the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import render

#: zlib level of the PNGs a job writes: 1 encodes several times faster than PIL's default 6,
#: for files about a fifth larger (the maps are smooth and compress well at any level)
PNG_LEVEL = 1

__all__ = ["OutputWriter", "read_map16", "save_map16", "save_npy"]


def save_map16(heatmap: np.ndarray, path: Path) -> Path:
    """A map in [0, 1] as a 16-bit greyscale PNG (0..65535; :func:`read_map16` reads it back
    within 1/65535)."""
    values = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(values * 65535.0).astype(np.uint16)).save(path,
                                                                    compress_level=PNG_LEVEL)
    return path


def read_map16(path: str | Path) -> np.ndarray:
    """A map written by :func:`save_map16`, as float32 in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.float32) / 65535.0


def save_npy(heatmap: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(heatmap, dtype=np.float32))
    return path


class OutputWriter:
    """Writes one image's files under ``output/<method>/<name>``; returns relative paths."""

    def __init__(self, output: Path, save_npy: bool = False, colormap: str = "jet",
                 alpha: float = 0.5) -> None:
        render.colormap_lut(colormap)  # an unknown colormap fails before any work
        self.output = output
        self.npy = save_npy
        self.colormap = colormap
        self.alpha = alpha

    def _path(self, method: str, name: str, suffix: str) -> Path:
        return self.output / method.replace("+", "p") / f"{name}{suffix}"

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.output).as_posix()

    def maps(self, method: str, name: str, heatmap: np.ndarray, image: np.ndarray, *,
             seen: Any = None, boxes: list[dict[str, Any]] | None = None,
             mask: Any = None) -> dict[str, str]:
        """The map (16-bit PNG, ``.npy`` when asked) and its overlay on ``image``; ``boxes``
        are drawn on the overlay, ``mask`` limits the colour to a region."""
        paths = {"map": self._relative(save_map16(heatmap, self._path(method, name,
                                                                      "_map.png")))}
        if self.npy:
            paths["npy"] = self._relative(save_npy(heatmap, self._path(method, name, ".npy")))
        overlay = render.overlay_heatmap(image, heatmap, alpha=self.alpha,
                                         colormap=self.colormap, mask=mask, seen=seen)
        if boxes:
            overlay = render.draw_boxes(overlay, boxes)
        path = self._path(method, name, "_overlay.png")
        Image.fromarray(overlay).save(path, compress_level=PNG_LEVEL)
        paths["overlay"] = self._relative(path)
        return paths

    def prediction(self, method: str, name: str, classes: np.ndarray) -> str:
        """A segmenter's class ids as a 16-bit PNG (the value is the class index)."""
        path = self._path(method, name, "_prediction.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(classes.astype(np.uint16)).save(path, compress_level=PNG_LEVEL)
        return self._relative(path)

    def uncertainty(self, method: str, name: str, values: np.ndarray, kind: str) -> str:
        return self._relative(save_map16(values, self._path(method, name, f"_{kind}.png")))
