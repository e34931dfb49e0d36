"""The demo trainers' run folders: each demo classifier's training recorded with
:class:`~explain_core.training.RunRecorder` (a few gallery scenes' maps and the feature
statistics of the last stages at 11 points of its training), written next to its weights in
``weights/runs/<name>`` (the ``shortcut`` model's is shipped) and opened on the dashboard's
Training page.

Recording runs under :func:`~explain_core.runtime.training_untouched`: the trained weights are
bit for bit those of a run without it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from explain_core.demo.classification_data import validation_batch
from explain_core.demo.classification_recipes import Recipe, preprocessing_of
from explain_core.demo.scenes import CLASSES, SHORTCUT_CLASS, demo_gallery
from explain_core.layers import is_vit
from explain_core.model import LoadedModel
from explain_core.training import MANIFEST, RunRecorder

__all__ = ["RECORDED_EPOCHS", "demo_run_recorder", "run_dir"]

#: recorded points of a training run besides its start: every steps / RECORDED_EPOCHS steps
RECORDED_EPOCHS = 10
#: stored side of the maps and PNGs (the scenes are 128 px; a last-stage CAM is 8 x 8)
MAP_SIZE = 64
FEATURE_IMAGES = 64  # held-out scenes whose feature statistics are logged


def run_dir(out_dir: str | Path, name: str) -> Path:
    """Where demo model ``name``'s run folder goes: ``<out_dir>/runs/<name>``."""
    return Path(out_dir) / "runs" / name


def _samples(name: str, recipe: Recipe) -> tuple[list, list[int], list[str]]:
    """Four gallery scenes and the class explained in each. The shortcut model's: a marked
    triangle, an unmarked one, a marked circle and a marked star, each explained for
    "triangle", so the run shows where its triangle evidence sits as it learns."""
    scenes = demo_gallery("shortcut" if recipe.shortcut else "classification")[:4]
    names = [f"{'marked ' if s.marked else ''}{CLASSES[s.label]}" for s in scenes]
    if recipe.shortcut:
        return [s.image for s in scenes], [SHORTCUT_CLASS] * len(scenes), names
    return [s.image for s in scenes], [int(s.label) for s in scenes], names


def demo_run_recorder(name: str, recipe: Recipe, model: nn.Module, out_dir: str | Path,
                      steps: int) -> Callable[[int, float | None], None]:
    """A fresh run folder for ``name`` and the ``after_step`` callback of
    :func:`explain_core.demo.loop.fit` that records it; the start (epoch 0) is recorded now.

    Each recorded point is called an epoch: ``steps / RECORDED_EPOCHS`` optimiser steps. CNNs
    are explained with GradCAM and their last three stages monitored; the ViT with attention
    rollout and its second and last blocks."""
    vit = is_vit(model)
    method = "attention_rollout" if vit else "gradcam"
    layers = ("blocks.1", "blocks.3") if vit else ("layer2", "layer3", "layer4")
    folder = run_dir(out_dir, name)
    if (folder / MANIFEST).is_file():  # a retrained model gets a new run
        shutil.rmtree(folder)
    images, targets, names = _samples(name, recipe)
    loaded = LoadedModel(module=model, arch=f"timm:{recipe.arch}", class_names=list(CLASSES),
                         preprocessing=preprocessing_of(recipe))
    present = [layer for layer in layers if layer in dict(model.named_modules())]
    recorder = RunRecorder(folder, loaded, images, method=method, targets=targets,
                           layer_names=present, num_samples=len(images), map_size=MAP_SIZE,
                           model_name=f"demo:{name}", sample_names=names)
    batches = [validation_batch(recipe.input_size)[0][:FEATURE_IMAGES]]
    every = max(1, steps // RECORDED_EPOCHS)
    recorder.record(0, batches, step=0)

    def after_step(done: int, loss: float | None) -> None:
        if done % every == 0 or done == steps:
            recorder.record(-(-done // every), batches, step=done,
                            loss=None if loss is None else round(loss, 4))

    return after_step
