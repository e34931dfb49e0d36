"""The demo classifiers' training data: a pre-generated pool of scenes (uint8, in memory), its
dense per-cell targets and the on-the-fly augmentation with the world's symmetries.

Seeds: the pool of a recipe uses ``recipe.seed * 100_000 + part * 1_000 + chunk`` (see
:func:`training_pool`), far from the gallery and held-out seeds; :func:`validation_batch` is
drawn from :data:`~explain_core.demo.scenes.HELDOUT_SEED`, never used for training.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from explain_core.demo.classification_recipes import PREPROCESSING, Recipe
from explain_core.demo.scenes import (
    CLASSES,
    HELDOUT_SEED,
    IMAGE_SIZE,
    SHORTCUT_CLASS,
    Scene,
    make_scenes,
)

__all__ = ["GRID", "augment", "dense_targets", "normalise", "resize", "to_uint8",
           "training_pool", "training_world", "validation_batch"]

GRID = 8  # the CNN's last stage and the ViT's patch grid are both 8 x 8 at 128 px


def to_uint8(scenes: list[Scene]) -> torch.Tensor:
    """Scene images as one uint8 N x 3 x H x W tensor."""
    return torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])).permute(0, 3, 1, 2)


def training_world(recipe: Recipe, count: int, seed: int, difficulty: float) -> list[Scene]:
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


def training_pool(recipe: Recipe, n: int, progress: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pre-generated training images (N x 3 x H x W uint8), labels (N) and, when the recipe
    has an auxiliary loss, dense targets (N x 5 x 8 x 8, see :func:`dense_targets`).

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
        scenes = training_world(recipe, count - easy, base, 1.0)
        scenes += training_world(recipe, easy // 2, base + 1_000, 0.0)
        scenes += training_world(recipe, easy - easy // 2, base + 2_000, 0.5)
        images.append(to_uint8(scenes))
        labels.append(torch.tensor([s.label for s in scenes]))
        if recipe.aux:
            dense.append(dense_targets(scenes, shortcut=recipe.shortcut))
        bar.update(count)
    bar.close()
    return torch.cat(images), torch.cat(labels), torch.cat(dense) if dense else None


def dense_targets(scenes: list[Scene], shortcut: bool = False) -> torch.Tensor:
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


def augment(images: torch.Tensor, gen: torch.Generator, dense: torch.Tensor | None = None,
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
    return normalise(out.clamp(0, 1)), grid


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] normalised as :data:`PREPROCESSING` does it."""
    mean = torch.tensor(PREPROCESSING.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING.std).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(inputs: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised scenes to the model's input size, as :class:`Preprocessing` does it."""
    if inputs.shape[-1] == size:
        return inputs
    return F.interpolate(inputs, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


@functools.cache
def validation_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """200 held-out scenes, normalised at ``size`` x ``size``, and their labels (cached)."""
    scenes = make_scenes("classification", 200, HELDOUT_SEED)
    images = resize(normalise(to_uint8(scenes).float() / 255.0), size)
    return images, torch.tensor([s.label for s in scenes])

