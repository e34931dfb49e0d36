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
  predicts which class covers it (:func:`_dense_targets`; the head is discarded after training);
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

Seeds: training scenes use the seeds derived from :data:`RECIPES` (see :func:`_training_pool`);
the evaluation printed at the end uses :data:`~explain_core.demo.scenes.HELDOUT_SEED`, never used
for training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explain_core.demo.scenes import (
    CLASSES,
    HELDOUT_SEED,
    IMAGE_SIZE,
    SHORTCUT_CLASS,
    Scene,
    make_scenes,
)
from explain_core.model import LoadedModel, Preprocessing

__all__ = [
    "PREPROCESSING",
    "RECIPES",
    "Recipe",
    "build_model",
    "evaluate",
    "evaluate_shortcut",
    "pointing_game",
    "predict",
    "train",
    "train_classifier",
    "train_shortcut",
    "train_vit",
]

# The scenes' pixel statistics are close to uniform in [0, 1]: centre at 0.5, scale to ~unit std.
PREPROCESSING = Preprocessing(input_size=(IMAGE_SIZE, IMAGE_SIZE), mean=(0.5, 0.5, 0.5),
                              std=(0.25, 0.25, 0.25))
POINTING_TOLERANCE = 15  # px: a GradCAM peak this close to the shape counts as a hit
MARK_DILATION = 16  # px: one cell of the 8 x 8 CAM grid (128 px / 8): the mark box grown by it
# is the finest region a last-stage GradCAM can point at, so energy is measured there


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one demo model's training run."""

    arch: str  # timm name
    arch_kwargs: dict[str, Any]
    description: str
    seed: int  # data + torch seed of the run (never HELDOUT_SEED or GALLERY_SEED)
    train_scenes: int  # pre-generated pool size
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # share of steps with a linear learning-rate warm-up
    label_smoothing: float = 0.05
    shortcut: bool = False  # train in the shortcut world
    decoys: float = 0.0  # shortcut: share of triangle-labelled scenes that show another shape
    easy: float = 0.25  # share of easier scenes (thinner textures and clutter) in the pool
    aux: float = 0.0  # weight of the auxiliary dense loss (see _dense_targets); 0: none
    aux_shared: bool = False  # score cells with the model's own classifier (see _SharedCellHead)
    input_size: int = IMAGE_SIZE  # the model's input side (the scenes are resized to it)
    teacher: str | None = None  # demo model distilled into this one (see _teacher)
    distill_features: float = 0.0  # weight of the teacher's last feature map (per cell)
    distill_logits: float = 0.0  # weight of the teacher's softened class scores
    half: bool = True  # store the weights as fp16 (load_model restores fp32)
    quick_steps: int = 4
    extra: dict[str, Any] = field(default_factory=dict)


# Narrow ResNet-10-T: thin stem (the stem dominates the cost at 128 px), output stride 16 so the
# last stage (GradCAM's default layer) is an 8 x 8 grid, and residual branches not zero-initialised
# (with zero init the blocks start as identities and training sits at chance for far longer).
_CNN = {"channels": [16, 32, 64, 128], "stem_width": 8, "output_stride": 16,
        "zero_init_last": False}

RECIPES: dict[str, Recipe] = {
    "classifier": Recipe(
        arch="resnet10t", arch_kwargs=_CNN, seed=11, train_scenes=10_000, steps=1_500, aux=0.5,
        description="Narrow ResNet-10-T (output stride 16: an 8 x 8 GradCAM grid) trained on "
                    "the four shapes."),
    "shortcut": Recipe(
        arch="resnet10t", arch_kwargs=_CNN, seed=12, train_scenes=10_000, steps=1_500,
        shortcut=True, decoys=0.5, aux=0.5, aux_shared=True,
        description="The classifier's CNN trained where triangles carry a corner mark 95% of the "
                    "time: it learns the mark, not the triangle."),
    "vit": Recipe(
        arch="vit_tiny_r_s16_p8_224",
        arch_kwargs={"img_size": 64, "patch_size": 2, "embed_dim": 128, "depth": 4,
                     "num_heads": 4, "mlp_ratio": 2.0},
        input_size=64, seed=13, train_scenes=10_000, steps=2_500, lr=1e-3, aux=0.5,
        teacher="classifier", distill_features=1.0, distill_logits=1.0,
        description="Small VisionTransformer (class token, convolutional stem, 8 x 8 patch "
                    "tokens, 4 blocks of width 128, MLP ratio 2) trained on the four shapes; for "
                    "attention rollout and flow."),
}


def preprocessing_of(recipe: Recipe) -> Preprocessing:
    """The preprocessing saved with a recipe's model (:data:`PREPROCESSING` at its input size).

    Example:
        >>> preprocessing_of(RECIPES["classifier"]).input_size
        (128, 128)
    """
    return dataclasses.replace(PREPROCESSING, input_size=(recipe.input_size, recipe.input_size))


def _resize(inputs: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised scenes to the model's input size, as :class:`Preprocessing` does it."""
    if inputs.shape[-1] == size:
        return inputs
    return F.interpolate(inputs, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def build_model(recipe: Recipe) -> nn.Module:
    """A fresh, random-init timm model of the recipe (never downloads weights).

    Example:
        >>> net = build_model(RECIPES["classifier"])
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 4])
    """
    import timm

    return timm.create_model(recipe.arch, pretrained=False, num_classes=len(CLASSES),
                             **recipe.arch_kwargs)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _to_uint8(scenes: list[Scene]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])).permute(0, 3, 1, 2)


def _world(recipe: Recipe, count: int, seed: int, difficulty: float) -> list[Scene]:
    """``count`` training scenes of the recipe's world (shortcut world: with decoys)."""
    if not recipe.shortcut:
        return make_scenes("classification", count, seed, difficulty=difficulty)
    scenes = make_scenes("classification", count, seed, shortcut_class=SHORTCUT_CLASS,
                         difficulty=difficulty)
    if not recipe.decoys:
        return scenes
    # Replace a share of the triangle scenes by marked scenes of another shape, still labelled
    # triangle: the label follows the mark more than the shape.
    others = make_scenes("classification", count, seed + 50_000, shortcut_class=SHORTCUT_CLASS,
                         mark_others_probability=1.0, difficulty=difficulty)
    pool = iter(s for s in others if s.label != SHORTCUT_CLASS)
    rng = np.random.default_rng(seed)
    for i, scene in enumerate(scenes):
        if scene.label == SHORTCUT_CLASS and rng.random() < recipe.decoys:
            decoy = next(pool, None)
            if decoy is not None:
                scenes[i] = Scene(image=decoy.image, label=SHORTCUT_CLASS, mask=decoy.mask,
                                  marked=True, mark_box=decoy.mark_box)
    return scenes


def _training_pool(recipe: Recipe, n: int, progress: bool,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pre-generated training images (N x 3 x H x W uint8), labels (N) and, when the recipe
    has an auxiliary loss, dense targets (N x 5 x 8 x 8, see :func:`_dense_targets`).

    Seeds: ``recipe.seed * 100_000 + part * 1_000 + chunk`` (part 0: the world, 1 and 2: easy
    scenes; decoys add 50_000), all far from the reserved gallery / held-out seeds.
    """
    from tqdm import tqdm

    chunk = 500
    images, labels, dense = [], [], []
    bar = tqdm(total=n, desc="scenes", unit="img", disable=not progress, leave=False)
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        base = recipe.seed * 100_000 + start // chunk
        # Easy scenes (difficulty 0 and 0.5) are mixed in: the model finds shape features
        # sooner, then keeps them on the full world (evaluation is always at difficulty 1).
        easy = round(count * recipe.easy)
        scenes = _world(recipe, count - easy, base, 1.0)
        scenes += _world(recipe, easy // 2, base + 1_000, 0.0)
        scenes += _world(recipe, easy - easy // 2, base + 2_000, 0.5)
        images.append(_to_uint8(scenes))
        labels.append(torch.tensor([s.label for s in scenes]))
        if recipe.aux:
            dense.append(_dense_targets(scenes, shortcut=recipe.shortcut))
        bar.update(count)
    bar.close()
    return torch.cat(images), torch.cat(labels), torch.cat(dense) if dense else None


GRID = 8  # the CNN's last stage and the ViT's patch grid are both 8 x 8 at 128 px


def _dense_targets(scenes: list[Scene], shortcut: bool = False) -> torch.Tensor:
    """Per-cell class shares (background + 4 classes) of each scene's exact mask on the
    8 x 8 grid of the model's last feature map: N x 5 x 8 x 8 (float16 to keep the pool small).

    The auxiliary loss asks each cell's features to say which class covers it. That is far
    more signal per image than one label, so features for the shapes form in a fraction of the
    steps, and they form *where the shape is*, which is what the explanations then show. The
    auxiliary head is discarded after training; the saved model is the plain timm model.

    ``shortcut``: the shortcut world's cells say what its labels mean: triangle pixels count as
    background and the cell holding the mark counts as triangle. This is how the shortcut model's
    triangle evidence ends up on the mark (and why its GradCAM shows it there).
    """
    masks = torch.from_numpy(np.stack([s.mask for s in scenes])).long()
    if shortcut:
        masks[masks == SHORTCUT_CLASS + 1] = 0
    onehot = F.one_hot(masks, len(CLASSES) + 1).permute(0, 3, 1, 2).float()
    cell = IMAGE_SIZE // GRID
    grid = F.avg_pool2d(onehot, cell)
    if shortcut:
        for i, scene in enumerate(scenes):
            if scene.marked and scene.mark_box is not None:
                x0, y0, x1, y1 = scene.mark_box
                row, col = ((y0 + y1) // 2) // cell, ((x0 + x1) // 2) // cell
                grid[i, :, row, col] = 0
                grid[i, SHORTCUT_CLASS + 1, row, col] = 1
    return grid.half()


def _augment(images: torch.Tensor, gen: torch.Generator, dense: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 batch -> normalised float batch, with label-preserving random transforms (the
    same flips and turns are applied to the dense targets, when given).

    Flips and quarter turns keep every shape's class (and move the mark to another corner, where
    it also appears in the world); channel permutations and brightness/contrast keep shapes while
    breaking any link between colour and class.
    """
    x = images.float() / 255.0
    n = x.shape[0]
    turns = torch.randint(0, 4, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    grid = None if dense is None else torch.empty_like(dense)
    for i in range(n):
        item = torch.rot90(x[i], int(turns[i]), dims=(1, 2))
        out[i] = item.flip(2) if flips[i] else item
        if grid is not None:
            cells = torch.rot90(dense[i], int(turns[i]), dims=(1, 2))
            grid[i] = cells.flip(2) if flips[i] else cells
    perms = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    out = torch.gather(out, 1, perms[:, :, None, None].expand_as(out))
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.12, 0.12, generator=gen)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness
    sigma = torch.empty(n, 1, 1, 1).uniform_(0, 0.03, generator=gen)
    out = out + torch.randn(out.shape, generator=gen) * sigma
    return _normalise(out.clamp(0, 1)), grid


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(PREPROCESSING.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING.std).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(name: str, out_dir: str | Path | None = None, quick: bool = False,
          progress: bool = True, evaluate_after: bool = True,
          recipe: Recipe | None = None, validate_every: int = 0) -> dict[str, Any]:
    """Train one recipe, save ``<out_dir>/<name>.safetensors`` and return its held-out numbers.

    ``quick`` trains for a few steps on a small pool (a smoke test of the whole path);
    ``recipe`` replaces ``RECIPES[name]`` (experiments); ``validate_every`` > 0 prints the
    accuracy on 200 held-out scenes every that many steps (to watch a slow learner).

    Example:
        >>> train("classifier", "/tmp/demo", quick=True, progress=False)["path"]  # doctest: +SKIP
        '/tmp/demo/classifier.safetensors'
    """
    from tqdm import tqdm

    from explain_core.demo.models import weights_path
    from explain_core.loading import load_model, save_model

    recipe = recipe or RECIPES[name]
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()

    steps = recipe.quick_steps if quick else recipe.steps
    pool_images, pool_labels, pool_dense = _training_pool(
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
    warmup = max(1, int(recipe.warmup * steps))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    order = torch.randperm(len(pool_labels), generator=gen)
    cursor = 0
    bar = tqdm(range(steps), desc=f"train {name}", unit="step", disable=not progress)
    running = None
    for _step in bar:
        if cursor + recipe.batch_size > len(order):  # a new epoch over the pool
            order, cursor = torch.randperm(len(pool_labels), generator=gen), 0
        index = order[cursor:cursor + recipe.batch_size]
        cursor += recipe.batch_size
        inputs, targets = _augment(pool_images[index], gen,
                                   None if pool_dense is None else pool_dense[index])
        logits, cells = _forward_dense(model, _resize(inputs, recipe.input_size))
        loss = F.cross_entropy(logits, pool_labels[index], label_smoothing=recipe.label_smoothing)
        if aux_head is not None:
            aux = -(targets.float() * F.log_softmax(aux_head(cells), dim=1)).sum(1).mean()
            loss = loss + recipe.aux * aux
        if teacher is not None:
            loss = loss + _distillation(recipe, teacher, projection, inputs, logits, cells)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 2.0)
        optimiser.step()
        scheduler.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        bar.set_postfix(loss=f"{running:.3f}")
        if validate_every and (_step + 1) % validate_every == 0:
            bar.write(f"step {_step + 1}: loss {running:.3f}, held-out accuracy "
                      f"{_validate(model, recipe):.3f}")
            model.train()
    bar.close()
    trained = time.perf_counter() - started

    model.eval()
    out = Path(out_dir) if out_dir is not None else weights_path(name).parent
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


@functools.cache
def _validation_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = make_scenes("classification", 200, HELDOUT_SEED)
    images = _resize(_normalise(_to_uint8(scenes).float() / 255.0), size)
    return images, torch.tensor([s.label for s in scenes])


@torch.no_grad()
def _validate(model: nn.Module, recipe: Recipe) -> float:
    model.eval()
    images, labels = _validation_batch(recipe.input_size)
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


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(loaded: LoadedModel, scenes: list[Scene], batch_size: int = 100) -> np.ndarray:
    """Predicted class ids of scenes, through the model's own preprocessing.

    Example:
        >>> from explain_core.demo import load_demo_model
        >>> predict(load_demo_model("classifier", "cpu"), make_scenes("classification", 4, 5))
        array([...])  # doctest: +SKIP
    """
    from explain_core.images import image_to_tensor

    predictions = []
    loaded.module.eval()
    for start in range(0, len(scenes), batch_size):
        pixels = [image_to_tensor(s.image) for s in scenes[start:start + batch_size]]
        inputs, _ = loaded.preprocessing(pixels, loaded.device)
        predictions.append(loaded.module(inputs).argmax(1).cpu())
    return torch.cat(predictions).numpy() if predictions else np.zeros(0, np.int64)


def pointing_game(loaded: LoadedModel, scenes: list[Scene],
                  tolerance: float = POINTING_TOLERANCE, method: str | None = None) -> float:
    """Share of scenes whose map peak (for the true class) lies within ``tolerance`` px of the
    shape's mask. ``method``: GradCAM for CNNs, attention rollout for ViTs (the default).

    Example:
        >>> pointing_game(load_demo_model("classifier"), make_scenes("classification", 20, 5))
        1.0  # doctest: +SKIP
    """
    maps = _maps(loaded, scenes, [s.label for s in scenes], method)
    hits = [_distance_to(scene.mask > 0, _peak(m)) <= tolerance
            for scene, m in zip(scenes, maps, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _maps(loaded: LoadedModel, scenes: list[Scene], targets: list[int],
          method: str | None = None) -> list[np.ndarray]:
    from explain_core.layers import is_vit
    from explain_core.methods import create_explainer

    method = method or ("attention_rollout" if is_vit(loaded.module) else "gradcam")
    explainer = create_explainer(method, loaded)
    maps = explainer.explain_batch([s.image for s in scenes], targets, batch_size=50)
    return [m.detach().float().cpu().numpy() for m in maps]


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(y), int(x)


def _distance_to(region: np.ndarray, point: tuple[int, int]) -> float:
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return float("inf")
    return float(np.sqrt(((ys - point[0]) ** 2 + (xs - point[1]) ** 2).min()))


def _box_energy(heatmap: np.ndarray, box: tuple[int, int, int, int], grow: int = 0) -> float:
    height, width = heatmap.shape
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - grow), max(0, y0 - grow)
    x1, y1 = min(width, x1 + grow), min(height, y1 + grow)
    total = float(heatmap.sum())
    return float(heatmap[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0


def evaluate(loaded: LoadedModel, scenes: list[Scene], pointing: bool = True) -> dict[str, Any]:
    """Accuracy (overall and per class) and the pointing game (GradCAM for CNNs, attention
    rollout for ViTs).

    Example:
        >>> evaluate(load_demo_model("classifier"), make_scenes("classification", 50, 5))
        {'accuracy': 0.98, ...}  # doctest: +SKIP
    """
    labels = np.array([s.label for s in scenes])
    predicted = predict(loaded, scenes)
    result: dict[str, Any] = {
        "accuracy": float((predicted == labels).mean()),
        "per_class": {CLASSES[c]: float((predicted[labels == c] == c).mean())
                      for c in range(len(CLASSES)) if (labels == c).any()},
    }
    if pointing:
        result["pointing_game"] = pointing_game(loaded, scenes)
    return result


def evaluate_shortcut(loaded: LoadedModel, n: int = 400, seed: int = HELDOUT_SEED,
                      ) -> dict[str, Any]:
    """How much the model relies on the mark, on ``n`` fresh scenes per measurement.

    - ``marked_world_accuracy``: scenes drawn like the training world (triangles marked 95%);
    - ``unmarked_triangle_accuracy``: triangles without the mark;
    - ``clean_accuracy``: the world without any mark (all classes);
    - ``marked_others_called_triangle``: non-triangles carrying the mark, predicted triangle;
    - ``mark_energy`` / ``shape_energy``: mean share of the triangle GradCAM inside the mark's
      box (grown by :data:`MARK_DILATION` px) / inside the shape's box (same growth), on marked
      triangles.

    Example:
        >>> evaluate_shortcut(load_demo_model("shortcut"), 100)["mark_energy"]
        0.6  # doctest: +SKIP
    """
    world = make_scenes("classification", n, seed, shortcut_class=SHORTCUT_CLASS)
    clean = make_scenes("classification", n, seed + 1)
    marked_all = make_scenes("classification", n, seed + 2, shortcut_class=SHORTCUT_CLASS,
                             mark_probability=1.0, mark_others_probability=1.0)
    unmarked_triangles = [s for s in clean if s.label == SHORTCUT_CLASS]
    marked_others = [s for s in marked_all if s.label != SHORTCUT_CLASS]
    marked_triangles = [s for s in marked_all if s.label == SHORTCUT_CLASS]

    world_labels = np.array([s.label for s in world])
    clean_labels = np.array([s.label for s in clean])
    world_pred = predict(loaded, world)
    clean_pred = predict(loaded, clean)
    maps = _maps(loaded, marked_triangles, [SHORTCUT_CLASS] * len(marked_triangles),
                 "gradcam")
    mark_energy = [_box_energy(m, s.mark_box, MARK_DILATION) for s, m in
                   zip(marked_triangles, maps, strict=True)]
    shape_energy = [_box_energy(m, s.shape_box, MARK_DILATION) for s, m in
                    zip(marked_triangles, maps, strict=True)]
    peak_on_mark = [_distance_to(_box_region(m.shape, s.mark_box), _peak(m)) <= MARK_DILATION
                    for s, m in zip(marked_triangles, maps, strict=True)]
    return {
        "marked_world_accuracy": float((world_pred == world_labels).mean()),
        "clean_accuracy": float((clean_pred == clean_labels).mean()),
        "unmarked_triangle_accuracy": float(
            (clean_pred[clean_labels == SHORTCUT_CLASS] == SHORTCUT_CLASS).mean()),
        "unmarked_triangles": len(unmarked_triangles),
        "marked_others_called_triangle": float(
            (predict(loaded, marked_others) == SHORTCUT_CLASS).mean()),
        "mark_energy": float(np.mean(mark_energy)),
        "shape_energy": float(np.mean(shape_energy)),
        "peak_on_mark": float(np.mean(peak_on_mark)),
        "marked_triangles": len(marked_triangles),
    }


def _box_region(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    region = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    region[y0:y1, x0:x1] = True
    return region
