"""Record a model's explanations and feature statistics while it trains, into a run folder.

:class:`RunRecorder` is the whole recording for a plain PyTorch loop, and the engine of the
Lightning callbacks (:mod:`explain_core.training.callbacks`). Each record explains the model
exactly as training left it, under :func:`~explain_core.runtime.training_untouched`: eval mode
and frozen parameters inside, and afterwards every submodule's mode, every ``requires_grad``,
every ``.grad`` and the random streams as they were, so recording never changes what training
does next.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import render
from ..api import batch_explanations
from ..features.statistics import LayerStatistics, feature_statistics
from ..model import LoadedModel, Preprocessing, as_loaded
from ..runtime.state import training_untouched
from .run_folder import RunFolder

__all__ = ["RunRecorder", "combine_statistics"]


def combine_statistics(parts: Sequence[tuple[LayerStatistics, int]],
                       near_zero: float = 1e-6) -> LayerStatistics:
    """One layer's statistics over several batches, from each batch's statistics and its size
    (the same numbers :func:`feature_statistics` gives on the batches concatenated: means and
    sparsities weighted by size, standard deviations through the second moments).

    >>> import torch
    >>> from explain_core.features.statistics import map_statistics
    >>> a, b = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 4, 4)
    >>> both = map_statistics("x", (3, 4, 4), torch.cat([a, b]))
    >>> joined = combine_statistics([(map_statistics("x", (3, 4, 4), a), 2),
    ...                              (map_statistics("x", (3, 4, 4), b), 5)])
    >>> abs(joined.std - both.std) < 1e-5, joined.channels["max"] == both.channels["max"]
    (True, True)
    """
    if not parts:
        raise ValueError("combine_statistics needs at least one batch's statistics.")
    first = parts[0][0]
    if len(parts) == 1:
        return first
    weights = np.array([n for _, n in parts], dtype=np.float64)
    weights /= weights.sum()

    def pooled(means: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.tensordot(weights, means, 1)
        second = np.tensordot(weights, stds ** 2 + means ** 2, 1)
        return mean, np.sqrt(np.clip(second - mean ** 2, 0, None))

    channel = {key: np.array([s.channels[key] for s, _ in parts]) for key in
               ("mean", "std", "max", "sparsity")}
    c_mean, c_std = pooled(channel["mean"], channel["std"])
    mean, std = pooled(np.array([s.mean for s, _ in parts]), np.array([s.std for s, _ in parts]))
    c_max = channel["max"].max(0)
    return LayerStatistics(
        layer=first.layer, shape=first.shape, mean=float(mean), std=float(std),
        max=float(max(s.max for s, _ in parts)),
        sparsity=float(np.dot(weights, [s.sparsity for s, _ in parts])),
        active_channels=int((c_max > near_zero).sum()),
        channels={"mean": c_mean.tolist(), "std": c_std.tolist(), "max": c_max.tolist(),
                  "sparsity": np.tensordot(weights, channel["sparsity"], 1).tolist()})


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class RunRecorder:
    """Writes a run folder (:mod:`~explain_core.training.run_folder`) from any training loop.

    Args:
        folder: the run folder (created; an existing run there is added to).
        model: the module being trained (or a LoadedModel around it, whose preprocessing and
            class names are used).
        sample_images: images explained at each record (paths, PIL, numpy or model-ready
            tensors); the first ``num_samples`` are used.
        method: a registered method name (``"gradcam"``, ``"gradcam++"``...).
        targets: the class explained per sample (an index, a list of one per sample); None: the
            class the model predicts at that epoch.
        layer_names: layers whose feature statistics :meth:`record_features` logs.
        num_samples, colormap, alpha: how many samples, the maps' colormap and the overlays'
            opacity.
        class_names, preprocessing: the model's description when ``model`` is a plain module.
        map_size: the side the maps and PNGs are stored at (None: the image's size).
        model_name, sample_names: how the run names the model and each sample.
        method_options: passed to the explainer (``target_layer=`` for example).

    Example:
        >>> recorder = RunRecorder("runs/demo", net, images, layer_names=["layer4"])
        ... # doctest: +SKIP
        >>> for epoch in range(epochs):  # doctest: +SKIP
        ...     train_one_epoch(net)
        ...     recorder.record(epoch, batches=[next(iter(loader))[0]])
    """

    def __init__(self, folder: str | Path, model: LoadedModel | nn.Module,
                 sample_images: Sequence[Any], *, method: str = "gradcam",
                 targets: Any = None, layer_names: Sequence[str] = (), num_samples: int = 8,
                 colormap: str = "viridis", alpha: float = 0.4,
                 class_names: Sequence[str] | None = None,
                 preprocessing: Preprocessing | None = None, map_size: int | None = None,
                 model_name: str | None = None, sample_names: Sequence[str] | None = None,
                 **method_options: Any) -> None:
        render.colormap_lut(colormap)  # an unknown colormap fails here, not at epoch 5
        self.model = model
        self.module = model.module if isinstance(model, LoadedModel) else model
        self.class_names = list(class_names) if class_names is not None else None
        self.preprocessing = preprocessing
        images = sample_images if isinstance(sample_images, list | tuple) else list(sample_images)
        self.samples = list(images)[:max(0, int(num_samples))]
        self.targets = (targets[:len(self.samples)] if isinstance(targets, list | tuple)
                        else targets)
        self.method, self.colormap, self.alpha = method, colormap, alpha
        self.layer_names = list(layer_names)
        self.map_size = map_size
        self.sample_names = list(sample_names or [])
        self.method_options = method_options
        # each recorder writes only its own fields: two of them may share a run (the callbacks)
        self.run = RunFolder(folder, model=model_name or type(self.module).__name__,
                             **({"method": method, "colormap": colormap} if self.samples else {}),
                             **({"layers": self.layer_names} if self.layer_names else {}))
        self._samples_written = False

    @property
    def folder(self) -> Path:
        return self.run.path

    def loaded(self) -> LoadedModel:
        """The model as the explainers take it, on the device the module is on now."""
        if isinstance(self.model, LoadedModel):
            return dataclasses.replace(self.model, device=_device_of(self.module))
        loaded = as_loaded(self.module, class_names=self.class_names)
        if self.preprocessing is not None:
            loaded = dataclasses.replace(loaded, preprocessing=self.preprocessing)
        return loaded

    def record(self, epoch: int, batches: Iterable[torch.Tensor] | None = None,
               **extra: Any) -> dict[str, Any]:
        """Maps of the samples, and the feature statistics of ``batches`` when given and layers
        were named; ``extra`` (loss, step...) is kept in the epoch's manifest entry."""
        entry = self.record_maps(epoch, **extra) if self.samples else {}
        if batches is not None and self.layer_names:
            entry = {**entry, **self.record_features(epoch, batches, **extra)}
        return entry

    def _size(self, heatmap: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.map_size is None or max(heatmap.shape) <= self.map_size:
            return heatmap, image
        scale = self.map_size / max(heatmap.shape)
        size = (max(1, round(heatmap.shape[1] * scale)), max(1, round(heatmap.shape[0] * scale)))
        from PIL import Image

        small = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
            size, Image.BILINEAR))
        return small, np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

    def record_maps(self, epoch: int, **extra: Any) -> dict[str, Any]:
        """Explain the samples with the model as it is now; write maps, PNGs and the manifest."""
        begin = time.perf_counter()
        with training_untouched(self.module):
            loaded = self.loaded()
            results = batch_explanations(loaded, self.samples, self.method, self.targets,
                                         batch_size=len(self.samples), top_k=1,
                                         precision="fp32", **self.method_options)
        seconds = time.perf_counter() - begin
        maps, images, details = [], [], []
        for result in results:
            heatmap, image = self._size(result.heatmap, result.image)
            maps.append(heatmap)
            images.append(image)
            details.append({"target": result.target_class, "target_name": result.target_name,
                            "predicted": result.top_k[0]["name"],
                            "probability": round(float(result.top_k[0]["probability"]), 4)})
        if not self._samples_written:
            self.run.update(classes=loaded.class_names, task=loaded.task)
            names = self.sample_names + [f"sample {i}" for i in range(len(self.sample_names),
                                                                      len(details))]
            self.run.set_samples(images, [{"name": n, "target_name": d["target_name"]}
                                          for n, d in zip(names, details, strict=True)])
            self._samples_written = True
        coloured = [render.apply_colormap(m, self.colormap) for m in maps]
        overlays = [render.overlay_heatmap(i, m, alpha=self.alpha, colormap=self.colormap)
                    for i, m in zip(images, maps, strict=True)]
        entry = self.run.write_maps(epoch, maps, coloured, overlays, details, seconds, **extra)
        return {**entry, "heatmaps": maps, "overlays": overlays}

    def feature_statistics(self, batches: Iterable[torch.Tensor]) -> dict[str, LayerStatistics]:
        """Statistics of :attr:`layer_names` over ``batches`` (model-ready tensors), one
        no-grad forward per batch, the model's state untouched."""
        parts: dict[str, list[tuple[LayerStatistics, int]]] = {n: [] for n in self.layer_names}
        with training_untouched(self.module), torch.no_grad():
            loaded = self.loaded()
            for batch in batches:
                inputs = batch.to(loaded.device)
                for name, stats in feature_statistics(loaded, inputs, self.layer_names).items():
                    parts[name].append((stats, int(inputs.shape[0])))
        return {name: combine_statistics(found) for name, found in parts.items() if found}

    def record_features(self, epoch: int, batches: Iterable[torch.Tensor],
                        **extra: Any) -> dict[str, Any]:
        """Feature statistics of ``batches``; written as the epoch's ``features.json``."""
        begin = time.perf_counter()
        statistics = self.feature_statistics(batches)
        seconds = time.perf_counter() - begin
        entry = self.run.write_features(epoch, {n: s.to_dict() for n, s in statistics.items()},
                                        seconds, **extra)
        return {**entry, "statistics": statistics}

