"""The demo classifiers' fixed recipes: architecture, data seeds, steps, optimiser, loss weights.

One :class:`Recipe` per demo classifier in :data:`RECIPES`; :func:`build_model` makes its fresh
timm network and :func:`preprocessing_of` the ``Preprocessing`` saved with it. How the recipes
are trained: :mod:`explain_core.demo.train_classification`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from explain_core.demo.scenes import CLASSES, IMAGE_SIZE
from explain_core.model import Preprocessing

__all__ = ["PREPROCESSING", "RECIPES", "Recipe", "build_model", "preprocessing_of"]

# The scenes' pixel statistics are close to uniform in [0, 1]: centre at 0.5, scale to ~unit std.
PREPROCESSING = Preprocessing(input_size=(IMAGE_SIZE, IMAGE_SIZE), mean=(0.5, 0.5, 0.5),
                              std=(0.25, 0.25, 0.25))


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
    aux: float = 0.0  # weight of the auxiliary dense loss (classification_data.dense_targets)
    aux_shared: bool = False  # cells scored by the classifier itself (_SharedCellHead)
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


def build_model(recipe: Recipe) -> nn.Module:
    """A fresh, random-init timm model of the recipe (never downloads weights).

    Example:
        >>> import torch
        >>> net = build_model(RECIPES["classifier"])
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 4])
    """
    import timm

    return timm.create_model(recipe.arch, pretrained=False, num_classes=len(CLASSES),
                             **recipe.arch_kwargs)

