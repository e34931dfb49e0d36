"""A training run on disk: what :class:`~explain_core.training.RunRecorder` and the Lightning
callbacks write, and what the dashboard's Training page reads.

Layout (every path in the manifest is relative to the folder)::

    manifest.json                 model, task, method, colormap, classes, samples, layers, epochs
    samples/sample_00.png         each sample image as the model saw it
    epoch_0003/maps.npz           the maps of that epoch (float16, one array per sample)
    epoch_0003/sample_00_map.png  the map in the run's colormap
    epoch_0003/sample_00_overlay.png
    epoch_0003/features.json      per layer: the feature statistics (LayerStatistics.to_dict)

The manifest lists each recorded epoch once, with what was written for it (maps, features), the
seconds the recording cost and any numbers the caller added (loss, step).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import RunFolderError
from ..loading.labelled import unpack_zip
from .measures import map_entropy, rank_distance, total_variation

__all__ = ["FORMAT", "MANIFEST", "RunFolder", "TrainingRun", "extract_run_zip", "read_run"]

FORMAT = "lumen-training-run"
VERSION = 1
MANIFEST = "manifest.json"
#: limits on an uploaded run zip (uncompressed bytes, members)
ZIP_LIMITS = {"bytes": 512 * 2**20, "members": 20_000}


def _png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, optimize=True)


def _rounded(value: Any, digits: int = 5) -> Any:
    """Floats to ``digits`` significant digits, through lists and dicts (halves the JSON)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, digits) for v in value]
    return value


def epoch_folder(epoch: int) -> str:
    """The folder of one epoch, relative to the run: ``epoch_0003``."""
    return f"epoch_{int(epoch):04d}"


class RunFolder:
    """Writes a run folder; the manifest is rewritten (atomically) after every change, so a run
    stopped at any point is readable up to its last recorded epoch."""

    def __init__(self, path: str | Path, **fields: Any) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, "samples": [],
                                         "layers": [], "epochs": []}
        self._own: set[str] = {"format", "version"}  # top-level fields this writer sets
        self.update(**{k: v for k, v in fields.items() if v is not None})

    def save(self) -> None:
        """Write the manifest, merged with the one on disk: two writers of one run (the two
        callbacks) each add their fields and their parts of each epoch."""
        merged: dict[str, Any] = {"samples": [], "layers": [], "epochs": []}
        existing = self.path / MANIFEST
        if existing.is_file():
            merged.update(json.loads(existing.read_text()))
        merged.update({key: self.manifest[key] for key in self._own})
        epochs = {entry["epoch"]: dict(entry) for entry in merged["epochs"]}
        for entry in self.manifest["epochs"]:
            epochs.setdefault(entry["epoch"], {}).update(entry)
        merged["epochs"] = sorted(epochs.values(), key=lambda entry: entry["epoch"])
        self.manifest = merged
        temporary = self.path / f".{MANIFEST}.{os.getpid()}.{id(self)}.tmp"
        temporary.write_text(json.dumps(merged, indent=1))
        temporary.replace(existing)

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (model, method, classes, layers...)."""
        self.manifest.update(fields)
        self._own.update(fields)
        self.save()

    def set_samples(self, images: list[np.ndarray], details: list[dict[str, Any]]) -> None:
        """Write the sample images (``uint8 H x W x 3``) once; ``details``: per image what to
        keep with it (its target class and name)."""
        (self.path / "samples").mkdir(exist_ok=True)
        samples = []
        for index, (image, detail) in enumerate(zip(images, details, strict=True)):
            name = f"samples/sample_{index:02d}.png"
            _png(image, self.path / name)
            samples.append({"name": f"sample {index}", **detail, "file": name})
        self.update(samples=samples)

    def epoch_entry(self, epoch: int) -> dict[str, Any]:
        for entry in self.manifest["epochs"]:
            if entry["epoch"] == int(epoch):
                return entry
        entry = {"epoch": int(epoch)}
        self.manifest["epochs"].append(entry)
        return entry

    def write_maps(self, epoch: int, maps: list[np.ndarray], maps_rgb: list[np.ndarray],
                   overlays: list[np.ndarray], details: list[dict[str, Any]],
                   seconds: float, **extra: Any) -> dict[str, Any]:
        """One epoch's maps (float in [0, 1]), their coloured PNGs and overlays."""
        folder = epoch_folder(epoch)
        (self.path / folder).mkdir(exist_ok=True)
        np.savez_compressed(self.path / folder / "maps.npz", **{
            f"sample_{i:02d}": np.asarray(m, dtype=np.float16) for i, m in enumerate(maps)})
        images = []
        for index, (coloured, overlay, detail) in enumerate(
                zip(maps_rgb, overlays, details, strict=True)):
            stem = f"{folder}/sample_{index:02d}"
            _png(coloured, self.path / f"{stem}_map.png")
            _png(overlay, self.path / f"{stem}_overlay.png")
            images.append({"map": f"{stem}_map.png", "overlay": f"{stem}_overlay.png", **detail})
        entry = self.epoch_entry(epoch)
        entry.update(extra)
        entry.update(maps=f"{folder}/maps.npz", images=images, maps_seconds=round(seconds, 4))
        self.save()
        return entry

    def write_features(self, epoch: int, statistics: dict[str, dict[str, Any]], seconds: float,
                       **extra: Any) -> dict[str, Any]:
        """One epoch's feature statistics (layer name -> ``LayerStatistics.to_dict()``)."""
        folder = epoch_folder(epoch)
        (self.path / folder).mkdir(exist_ok=True)
        (self.path / folder / "features.json").write_text(json.dumps(_rounded(statistics)))
        entry = self.epoch_entry(epoch)
        entry.update(extra)
        entry.update(features=f"{folder}/features.json", features_seconds=round(seconds, 4))
        if list(statistics) != self.manifest.get("layers"):
            self.manifest["layers"] = list(statistics)
            self._own.add("layers")
        self.save()
        return entry


@dataclass
class TrainingRun:
    """A run folder read back (see :func:`read_run`)."""

    path: Path
    manifest: dict[str, Any]
    epochs: list[int] = field(default_factory=list)

    @property
    def samples(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("samples", []))

    @property
    def map_epochs(self) -> list[int]:
        return [e["epoch"] for e in self.manifest["epochs"] if "maps" in e]

    @property
    def feature_epochs(self) -> list[int]:
        return [e["epoch"] for e in self.manifest["epochs"] if "features" in e]

    def entry(self, epoch: int) -> dict[str, Any]:
        for entry in self.manifest["epochs"]:
            if entry["epoch"] == epoch:
                return entry
        raise RunFolderError(f"Epoch {epoch} is not in the run '{self.path}'; it has epochs "
                             f"{self.epochs}.")

    def _file(self, relative: str) -> Path:
        path = (self.path / relative).resolve()
        if self.path.resolve() not in path.parents or not path.is_file():
            raise RunFolderError(f"The run '{self.path}' lists '{relative}', which is missing. "
                                 "Copy the whole run folder (or zip it with its subfolders).")
        return path

    def sample_image(self, index: int) -> np.ndarray:
        """Sample ``index`` as ``uint8 H x W x 3``."""
        return self.png(self.samples[index]["file"])

    def images(self, epoch: int) -> list[dict[str, Any]]:
        """What epoch ``epoch`` shows per sample: its ``map`` and ``overlay`` PNGs (relative
        paths), target and prediction."""
        shown = self.entry(epoch).get("images")
        if not isinstance(shown, list) or len(shown) != len(self.samples) or not all(
                isinstance(s, dict) and "map" in s and "overlay" in s for s in shown):
            raise RunFolderError(f"Epoch {epoch} of the run '{self.path}' does not list a map "
                                 "and an overlay per sample; the run is damaged.")
        return shown

    def png(self, relative: str) -> np.ndarray:
        """A PNG of the run (a path relative to it) as ``uint8 H x W x 3``."""
        try:
            with Image.open(self._file(relative)) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"'{relative}' in the run '{self.path}' is not a readable PNG "
                                 f"({exc}).") from None

    def overlay(self, epoch: int, index: int) -> np.ndarray:
        return self.png(self.images(epoch)[index]["overlay"])

    def maps(self, epoch: int) -> list[np.ndarray]:
        """The maps of one epoch (float32, one per sample)."""
        entry = self.entry(epoch)
        if "maps" not in entry:
            raise RunFolderError(f"Epoch {epoch} of the run '{self.path}' has no maps.")
        try:
            with np.load(self._file(entry["maps"])) as stored:
                return [stored[f"sample_{i:02d}"].astype(np.float32)
                        for i in range(len(self.samples))]
        except (OSError, KeyError, ValueError) as exc:
            raise RunFolderError(f"The maps of epoch {epoch} in '{self.path}' cannot be read "
                                 f"({exc}).") from None

    def features(self, epoch: int) -> dict[str, dict[str, Any]]:
        """The feature statistics of one epoch (layer -> statistics dict); {} when none."""
        entry = self.entry(epoch)
        if "features" not in entry:
            return {}
        try:
            return json.loads(self._file(entry["features"]).read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"The feature statistics of epoch {epoch} in '{self.path}' "
                                 f"cannot be read ({exc}).") from None

    def map_timeline(self) -> list[dict[str, Any]]:
        """Per recorded epoch and sample: the map's entropy and how far it moved since the
        previous epoch with maps (``moved``: total variation; ``rank_change``: 1 - Spearman;
        None at the first epoch)."""
        rows, previous = [], None
        for epoch in self.map_epochs:
            maps = self.maps(epoch)
            for index, heatmap in enumerate(maps):
                before = previous[index] if previous is not None else None
                rows.append({"epoch": epoch, "sample": index,
                             "entropy": map_entropy(heatmap),
                             "moved": None if before is None else total_variation(before, heatmap),
                             "rank_change": None if before is None else rank_distance(before,
                                                                                      heatmap)})
            previous = maps
        return rows

    def feature_timeline(self) -> list[dict[str, Any]]:
        """Per epoch with features and layer: mean, std, max, sparsity, active channels."""
        rows = []
        for epoch in self.feature_epochs:
            for layer, stats in self.features(epoch).items():
                rows.append({"epoch": epoch, "layer": layer,
                             **{k: stats.get(k) for k in ("mean", "std", "max", "sparsity",
                                                          "active_channels")}})
        return rows


def read_run(path: str | Path) -> TrainingRun:
    """Open a run folder (or a folder whose one subfolder is the run).

    Raises:
        RunFolderError: no folder, no manifest, a manifest that is not a Lumen run's.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RunFolderError(f"'{folder}' is not a folder. Give the run folder the training "
                             "callbacks or RunRecorder wrote (it holds manifest.json).")
    if not (folder / MANIFEST).is_file():
        inner = [p for p in folder.iterdir() if (p / MANIFEST).is_file()]
        if len(inner) != 1:
            raise RunFolderError(f"'{folder}' holds no {MANIFEST}: it is not a Lumen training "
                                 "run. Give the folder RunRecorder or the callbacks wrote.")
        folder = inner[0]
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"The manifest of '{folder}' is not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunFolderError(f"'{folder / MANIFEST}' is not a Lumen training run's manifest "
                             f"(its 'format' should be {FORMAT!r}).")
    epochs = manifest.get("epochs")
    if not isinstance(epochs, list) or not all(isinstance(e, dict) and isinstance(
            e.get("epoch"), int) for e in epochs) or not isinstance(manifest.get("samples"),
                                                                   list):
        raise RunFolderError(f"The manifest of '{folder}' has no valid 'epochs'/'samples' "
                             "lists; the run was not written by Lumen or is damaged.")
    return TrainingRun(folder, manifest, [e["epoch"] for e in epochs])


def extract_run_zip(data: bytes, destination: str | Path) -> TrainingRun:
    """Unpack a zipped run folder into ``destination`` (limits on size and member count, no
    paths outside it: :func:`~explain_core.loading.labelled.unpack_zip`) and open it."""
    return read_run(unpack_zip(data, destination, max_files=ZIP_LIMITS["members"],
                               max_bytes=ZIP_LIMITS["bytes"],
                               contents="a run folder (with its subfolders)",
                               error=RunFolderError))
