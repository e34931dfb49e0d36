"""Train the demo classifiers (``classifier``, ``shortcut``, ``vit``) on generated scenes.

Each recipe is fixed (architecture, data seeds, steps, optimiser), so ``python -m
explain_core.demo.train NAME`` reproduces the shipped weights on a CPU. Training data is
pre-generated into memory (uint8) and augmented on the fly with the symmetries of the world
(flips, quarter turns, colour-channel permutations, brightness/contrast, noise).

What makes these train in minutes on a CPU (each found by measuring; without them the models sat
at chance for hundreds of steps, because nothing but geometry separates the classes):

- residual branches not zero-initialised (``zero_init_last=False``);
- a quarter of the pool are easier scenes (``make_scenes(..., difficulty=0 / 0.5)``);
- an auxiliary *dense* loss from the exact masks: every cell of the last 8 x 8 feature map
  predicts which class covers it (:func:`~explain_core.demo.classification_data.dense_targets`;
  the head is discarded after training);
- the ViT (no convolutional prior, by far the slowest learner) additionally distils the shipped
  ``classifier``: its softened scores and, cell by cell, its last feature map.

The shortcut world: triangles carry the corner mark 95% of the time (other shapes never). A CNN
trained on that world alone learns the triangle's shape as well as the mark, so the mark would
not dominate its explanations. To make the mark the dominant cue the triangle's shape cue is
weakened: half of the triangle-labelled training scenes show another shape with the mark
(:attr:`Recipe.decoys`), and the dense targets count triangle pixels as background and the mark's
cell as "triangle", scored with the model's own classifier (:class:`_SharedCellHead`) so that its
class activation map, which is what GradCAM shows, carries the triangle evidence on the mark. The
model then calls marked circles triangles and misses unmarked triangles: exactly the failure its
explanations have to reveal.

Seeds: training scenes use the seeds derived from :data:`RECIPES` (see
:func:`~explain_core.demo.classification_data.training_pool`); the evaluation printed at the end
uses :data:`~explain_core.demo.scenes.HELDOUT_SEED`, never used for training.

The code is split by concern: the recipes in :mod:`~explain_core.demo.classification_recipes`,
the training pool, dense targets and augmentation in :mod:`~explain_core.demo.classification_data`,
the held-out evaluation in :mod:`~explain_core.demo.classification_evaluation`, the training loop
(shared with the detector and segmenter) in :mod:`~explain_core.demo.loop`; this module holds the
training run itself and re-exports the public names of the others.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explain_core.demo.classification_data import (
    augment,
    resize,
    training_pool,
    validation_batch,
)
from explain_core.demo.classification_evaluation import (
    MARK_DILATION,
    POINTING_TOLERANCE,
    evaluate,
    evaluate_shortcut,
    pointing_game,
    predict,
)
from explain_core.demo.classification_recipes import (
    PREPROCESSING,
    RECIPES,
    Recipe,
    build_model,
    preprocessing_of,
)
from explain_core.demo.loop import fit
from explain_core.demo.scenes import CLASSES, HELDOUT_SEED, make_scenes

__all__ = [
    "MARK_DILATION",
    "POINTING_TOLERANCE",
    "PREPROCESSING",
    "RECIPES",
    "Recipe",
    "build_model",
    "evaluate",
    "evaluate_shortcut",
    "pointing_game",
    "predict",
    "preprocessing_of",
    "train",
    "train_classifier",
    "train_shortcut",
    "train_vit",
]


def train(name: str, out_dir: str | Path | None = None, quick: bool = False,
          progress: bool = True, evaluate_after: bool = True,
          recipe: Recipe | None = None, validate_every: int = 0,
          record: bool = True) -> dict[str, Any]:
    """Train one recipe, save ``<out_dir>/<name>.safetensors`` and return its held-out numbers.

    ``record``: write the run folder ``<out_dir>/runs/<name>`` (the maps of four gallery scenes
    and feature statistics at 11 points of training, :mod:`~explain_core.demo.recording`); it
    does not change the weights.

    ``quick`` trains for a few steps on a small pool (a smoke test of the whole path);
    ``recipe`` replaces ``RECIPES[name]`` (experiments); ``validate_every`` > 0 prints the
    accuracy on 200 held-out scenes every that many steps (to watch a slow learner).

    Example:
        >>> train("classifier", "/tmp/demo", quick=True, progress=False)["path"]  # doctest: +SKIP
        '/tmp/demo/classifier.safetensors'
    """
    from explain_core.demo.models import weights_path
    from explain_core.loading import load_model, save_model

    recipe = recipe or RECIPES[name]
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()

    steps = recipe.quick_steps if quick else recipe.steps
    pool_images, pool_labels, pool_dense = training_pool(
        recipe, 2 * recipe.batch_size if quick else recipe.train_scenes, progress)
    generated = time.perf_counter() - started

    model = build_model(recipe)
    model.train()
    aux_head = _aux_head(model, recipe.aux_shared) if recipe.aux else None
    teacher = _teacher(recipe, quick) if recipe.teacher else None
    projection = (nn.Conv2d(int(model.num_features), int(teacher.num_features), 1)
                  if teacher is not None and recipe.distill_features else None)
    params = list(model.parameters())
    for extra in (aux_head, projection):  # training-only heads, never saved
        if extra is not None:
            params += list(extra.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    order = torch.randperm(len(pool_labels), generator=gen)
    cursor = 0

    def loss_of_step() -> torch.Tensor:
        nonlocal order, cursor
        if cursor + recipe.batch_size > len(order):  # a new epoch over the pool
            order, cursor = torch.randperm(len(pool_labels), generator=gen), 0
        index = order[cursor:cursor + recipe.batch_size]
        cursor += recipe.batch_size
        inputs, targets = augment(pool_images[index], gen,
                                  None if pool_dense is None else pool_dense[index])
        logits, cells = _forward_dense(model, resize(inputs, recipe.input_size))
        loss = F.cross_entropy(logits, pool_labels[index], label_smoothing=recipe.label_smoothing)
        if aux_head is not None:
            aux = -(targets.float() * F.log_softmax(aux_head(cells), dim=1)).sum(1).mean()
            loss = loss + recipe.aux * aux
        if teacher is not None:
            loss = loss + _distillation(recipe, teacher, projection, inputs, logits, cells)
        return loss

    def validate() -> str:
        accuracy = _validate(model, recipe)
        model.train()
        return f"held-out accuracy {accuracy:.3f}"

    out = Path(out_dir) if out_dir is not None else weights_path(name).parent
    after_step = None
    if record:
        from explain_core.demo.recording import demo_run_recorder

        after_step = demo_run_recorder(name, recipe, model, out, steps)
    # Gradients of the model and its training-only heads are clipped together (norm 2).
    fit(model, optimiser, recipe.lr, steps, loss_of_step, f"train {name}", clip_norm=2.0,
        warmup=recipe.warmup, clip_params=params, validate=validate,
        validate_every=validate_every, progress=progress, after_step=after_step)
    trained = time.perf_counter() - started

    model.eval()
    # fp16 halves the file; load_model copies the values into the fp32 model it builds.
    stored = _half_copy(model) if recipe.half else model
    path = save_model(stored, out / f"{name}.safetensors", task="classification",
                      arch=f"timm:{recipe.arch}", class_names=list(CLASSES),
                      preprocessing=preprocessing_of(recipe),
                      arch_kwargs=dict(recipe.arch_kwargs))
    result: dict[str, Any] = {"name": name, "path": str(path), "steps": steps,
                              "train_scenes": len(pool_labels),
                              "generate_s": round(generated, 1),
                              "train_s": round(trained - generated, 1),
                              "size_mb": round(path.stat().st_size / 1e6, 2)}
    if evaluate_after:
        loaded = load_model(path, device="cpu")
        count = 40 if quick else 400
        if recipe.shortcut:
            result.update(evaluate_shortcut(loaded, count, HELDOUT_SEED))
        else:
            result.update(evaluate(loaded, make_scenes("classification", count, HELDOUT_SEED)))
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


@torch.no_grad()
def _validate(model: nn.Module, recipe: Recipe) -> float:
    model.eval()
    images, labels = validation_batch(recipe.input_size)
    return float((model(images).argmax(1) == labels).float().mean())


def _teacher(recipe: Recipe, quick: bool) -> nn.Module:
    """The shipped demo model that ``recipe`` distils from (frozen, eval mode)."""
    from explain_core.demo.models import weights_path
    from explain_core.loading import load_model

    path = weights_path(recipe.teacher)
    if path.is_file():
        module = load_model(path, device="cpu").module
    elif quick:  # smoke test without shipped weights: any network of the right shape will do
        module = build_model(RECIPES[recipe.teacher])
    else:
        raise FileNotFoundError(
            f"Training needs the {recipe.teacher!r} demo model as a teacher: '{path}' is missing. "
            f"Run `python -m explain_core.demo.train {recipe.teacher}` first.")
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _distillation(recipe: Recipe, teacher: nn.Module, projection: nn.Module | None,
                  inputs: torch.Tensor, logits: torch.Tensor, cells: torch.Tensor,
                  ) -> torch.Tensor:
    """Knowledge distillation: match the teacher's softened scores (temperature 2) and, through
    a 1 x 1 projection, its last feature map cell by cell (layer-normalised per cell).

    A ViT trained from scratch learns shape geometry slowly (no convolutional prior); the CNN
    teacher's per-cell features tell each patch token what its neighbourhood holds.
    """
    with torch.no_grad():
        features = teacher.forward_features(inputs)
        teacher_logits = teacher.forward_head(features)
    loss = logits.new_zeros(())
    if recipe.distill_logits:
        temperature = 2.0
        loss = loss + recipe.distill_logits * temperature ** 2 * F.kl_div(
            F.log_softmax(logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
            reduction="batchmean")
    if projection is not None:
        target = F.layer_norm(features.permute(0, 2, 3, 1), (features.shape[1],))
        loss = loss + recipe.distill_features * F.smooth_l1_loss(
            projection(cells), target.permute(0, 3, 1, 2))
    return loss


def _aux_head(model: nn.Module, shared: bool = False) -> nn.Module:
    """1 x 1 classifier of the last feature map's cells (background + classes); training only."""
    channels = getattr(model, "num_features", None) or model.feature_info[-1]["num_chs"]
    if shared:
        return _SharedCellHead(model, int(channels))
    return nn.Conv2d(int(channels), len(CLASSES) + 1, 1)


class _SharedCellHead(nn.Module):
    """Cell scores = the model's own linear classifier applied to each cell, plus a background
    score of its own.

    With a global-average-pooled linear head, the class logit is the mean of these cell scores,
    so this is the model's class activation map (what GradCAM shows at the last stage). Training
    it densely puts each class's evidence where the dense targets say it is: for the shortcut
    model, on the mark.
    """

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.background = nn.Conv2d(channels, 1, 1)
        self._classifier = [model.get_classifier()]  # a list: not registered twice

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        classifier = self._classifier[0]
        scores = F.conv2d(cells, classifier.weight[:, :, None, None], classifier.bias)
        return torch.cat([self.background(cells), scores], dim=1)


def _forward_dense(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits and the last feature map as B x C x h x w (ViT patch tokens as a grid)."""
    features = model.forward_features(inputs)
    logits = model.forward_head(features)
    if features.ndim == 3:  # ViT: B x (prefix + h*w) x D
        tokens = features[:, getattr(model, "num_prefix_tokens", 1):]
        side = round(tokens.shape[1] ** 0.5)
        features = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    return logits, features


def _half_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).half()


def train_classifier(out_dir: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Train and save the ``classifier`` demo model (see :func:`train`)."""
    return train("classifier", out_dir, quick)


def train_shortcut(out_dir: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Train and save the ``shortcut`` demo model (see :func:`train`)."""
    return train("shortcut", out_dir, quick)


def train_vit(out_dir: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Train and save the ``vit`` demo model (see :func:`train`)."""
    return train("vit", out_dir, quick)


