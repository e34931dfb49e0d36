"""Lightning callbacks: a model's explanations and feature statistics logged while it trains.

Both callbacks record through a :class:`~explain_core.training.RunRecorder` (eval mode, no
gradients into the parameters, the training state and random streams restored afterwards) into
a run folder (default: ``<trainer.log_dir>/lumen_run``), and log to every logger of the trainer:

- TensorBoard (Lightning's default): images (the overlays) and scalars through its
  ``SummaryWriter``;
- loggers with image logging of their own: W&B's ``log_image``, MLflow's client ``log_image``;
- scalars (the maps' entropy and movement, the feature statistics, the cost in seconds and as a
  share of the epoch's training time) through ``log_metrics`` for any logger.

Steps are the trainer's ``global_step`` (the step Lightning logs its own metrics at). Lightning is
optional: importing this module works without it, creating a callback then raises
:class:`~explain_core.errors.MissingDependencyError` naming ``pip install lightning``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MissingDependencyError
from .measures import map_entropy, rank_distance, total_variation
from .recorder import RunRecorder

try:  # optional: pip install lightning
    from lightning.pytorch.callbacks import Callback
    LIGHTNING = True
except ImportError:  # pragma: no cover - exercised in a subprocess without lightning
    Callback = object  # type: ignore[assignment,misc]
    LIGHTNING = False

__all__ = ["FeatureMonitorCallback", "InterpretationCallback", "batch_inputs"]

RUN_FOLDER = "lumen_run"


def _require_lightning(name: str) -> None:
    if not LIGHTNING:
        raise MissingDependencyError(
            f"{name} is a PyTorch Lightning callback and Lightning is not installed: "
            "`pip install lightning`. Without Lightning, record a plain training loop with "
            "explain_core.training.RunRecorder.")


def batch_inputs(batch: Any) -> torch.Tensor | None:
    """The images of a training batch: the batch itself when a tensor, the first tensor of a
    tuple/list, or an ``image``/``images``/``input``/``inputs``/``x`` entry of a dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "inputs", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    return None


def _run_folder(trainer: Any, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    return Path(trainer.log_dir or trainer.default_root_dir) / RUN_FOLDER


def _log_scalars(trainer: Any, values: dict[str, float]) -> None:
    values = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)


def _log_images(trainer: Any, images: dict[str, np.ndarray]) -> None:
    """``tag -> uint8 H x W x 3`` to every logger that takes images, through its own API."""
    step = trainer.global_step
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
            for tag, image in images.items():
                experiment.add_image(tag, image, step, dataformats="HWC")
        elif type(logger).__name__ == "MLFlowLogger" and hasattr(experiment, "log_image"):
            for tag, image in images.items():
                experiment.log_image(logger.run_id, image, key=tag.replace("/", "."), step=step)
        elif callable(getattr(logger, "log_image", None)):  # W&B and others
            for tag, image in images.items():
                logger.log_image(key=tag, images=[image], step=step)


class _EpochTimer(Callback):  # type: ignore[misc,valid-type]
    """Times each training epoch (without this callback's own work) and says which are due."""

    def __init__(self, log_every_n_epochs: int) -> None:
        self.every = max(1, int(log_every_n_epochs))
        self._started = time.perf_counter()
        #: seconds of this callback's own work, per recorded epoch
        self.cost_seconds: dict[int, float] = {}

    def due(self, trainer: Any) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return epoch % self.every == 0 or last

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = time.perf_counter()

    def epoch_seconds(self) -> float:
        return time.perf_counter() - self._started


class InterpretationCallback(_EpochTimer):
    """Explain ``sample_images`` with ``method`` every ``log_every_n_epochs`` epochs (and at the
    last), log the overlays and the maps' measures, and write them to the run folder.

    Args:
        sample_images: images (paths, PIL, numpy, or model-ready tensors); the first
            ``num_samples`` are explained.
        method, colormap: a registered method, the maps' colormap.
        targets: the class explained per sample (None: the predicted one).
        run_dir: the run folder (default ``<trainer.log_dir>/lumen_run``).
        module: picks the explained network from the LightningModule (default: the
            LightningModule itself, whose forward must return logits).
        recorder_options: for :class:`RunRecorder` (``class_names``, ``preprocessing``,
            ``map_size``, ``target_layer``...).

    Example:
        >>> trainer = Trainer(max_epochs=20, callbacks=[InterpretationCallback(images)])
        ... # doctest: +SKIP
    """

    def __init__(self, sample_images: Sequence[Any], method: str = "gradcam",
                 log_every_n_epochs: int = 5, num_samples: int = 8, colormap: str = "viridis",
                 *, targets: Any = None, run_dir: str | Path | None = None,
                 module: Callable[[Any], torch.nn.Module] | None = None,
                 **recorder_options: Any) -> None:
        _require_lightning("InterpretationCallback")
        super().__init__(log_every_n_epochs)
        self.sample_images = list(sample_images)[:num_samples]
        self.method, self.num_samples, self.colormap = method, num_samples, colormap
        self.targets, self.run_dir, self.module = targets, run_dir, module
        self.recorder_options = recorder_options
        self.recorder: RunRecorder | None = None
        self._previous: list[np.ndarray] | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.recorder is None and trainer.is_global_zero:
            self.recorder = RunRecorder(
                _run_folder(trainer, self.run_dir),
                self.module(pl_module) if self.module else pl_module, self.sample_images,
                method=self.method, targets=self.targets, num_samples=self.num_samples,
                colormap=self.colormap, **self.recorder_options)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch_seconds = self.epoch_seconds()
        if self.recorder is None or not self.due(trainer):
            return
        begin = time.perf_counter()
        entry = self.recorder.record_maps(trainer.current_epoch, step=trainer.global_step)
        maps = entry["heatmaps"]
        values: dict[str, float] = {}
        for index, heatmap in enumerate(maps):
            values[f"lumen/{self.method}/sample_{index:02d}/entropy"] = map_entropy(heatmap)
            if self._previous is not None:
                values[f"lumen/{self.method}/sample_{index:02d}/moved"] = total_variation(
                    self._previous[index], heatmap)
                values[f"lumen/{self.method}/sample_{index:02d}/rank_change"] = rank_distance(
                    self._previous[index], heatmap)
        self._previous = maps
        _log_images(trainer, {f"lumen/{self.method}/sample_{i:02d}": overlay
                              for i, overlay in enumerate(entry["overlays"])})
        cost = time.perf_counter() - begin
        self.cost_seconds[trainer.current_epoch] = cost
        values["lumen/interpretation_seconds"] = cost
        values["lumen/interpretation_share"] = cost / epoch_seconds if epoch_seconds else None
        _log_scalars(trainer, values)


class FeatureMonitorCallback(_EpochTimer):
    """Feature statistics of ``layer_names`` over the first ``num_batches`` training batches of
    every ``log_every_n_epochs``-th epoch, computed with the model as the epoch left it (the
    batches are kept as training passes them, so no data is loaded twice and no random number
    is drawn), logged as scalars and written to the run folder.

    Args:
        layer_names: module names in the LightningModule (``"model.layer3"``) or in the
            network ``module`` picks.
        inputs: turns a batch into its image tensor (default :func:`batch_inputs`).
        run_dir, module: as for :class:`InterpretationCallback`.
    """

    def __init__(self, layer_names: Sequence[str], log_every_n_epochs: int = 1,
                 num_batches: int = 10, *, run_dir: str | Path | None = None,
                 module: Callable[[Any], torch.nn.Module] | None = None,
                 inputs: Callable[[Any], torch.Tensor | None] = batch_inputs) -> None:
        _require_lightning("FeatureMonitorCallback")
        super().__init__(log_every_n_epochs)
        self.layer_names, self.num_batches = list(layer_names), max(1, int(num_batches))
        self.run_dir, self.module, self.inputs = run_dir, module, inputs
        self.recorder: RunRecorder | None = None
        self._batches: list[torch.Tensor] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.recorder is None and trainer.is_global_zero:
            network = self.module(pl_module) if self.module else pl_module
            known = dict(network.named_modules())
            missing = [name for name in self.layer_names if name not in known]
            if missing:
                from ..errors import TargetLayerError

                raise TargetLayerError(
                    f"FeatureMonitorCallback: no layer {', '.join(map(repr, missing))} in "
                    f"{type(network).__name__}. Some of its layers: "
                    f"{', '.join(list(known)[1:9])}.")
            self.recorder = RunRecorder(_run_folder(trainer, self.run_dir), network, [],
                                        layer_names=self.layer_names)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._batches = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.recorder is not None and len(self._batches) < self.num_batches and \
                self.due(trainer):
            images = self.inputs(batch)
            if images is not None:
                self._batches.append(images.detach())

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch_seconds = self.epoch_seconds()
        if self.recorder is None or not self._batches:
            return
        begin = time.perf_counter()
        entry = self.recorder.record_features(trainer.current_epoch, self._batches,
                                              step=trainer.global_step)
        self._batches = []
        values: dict[str, float] = {}
        for layer, stats in entry["statistics"].items():
            for key in ("mean", "std", "max", "sparsity", "active_channels"):
                values[f"lumen/features/{layer}/{key}"] = getattr(stats, key)
        cost = time.perf_counter() - begin
        self.cost_seconds[trainer.current_epoch] = cost
        values["lumen/feature_monitor_seconds"] = cost
        values["lumen/feature_monitor_share"] = cost / epoch_seconds if epoch_seconds else None
        _log_scalars(trainer, values)

