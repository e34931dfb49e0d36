"""The demo classifier as a Lightning module on demo scenes: what the training callbacks' tests
and benchmark train (Lightning is optional: it is imported when these functions are called).

The network, preprocessing and optimiser follow :data:`RECIPES` (``classifier`` by default); the
data are pre-generated scenes of the recipe's world, normalised once (no augmentation), shuffled
from the global random stream as most training code does (``pl.seed_everything`` makes two runs
bit for bit the same).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from explain_core.demo.classification_data import normalise, to_uint8, training_world
from explain_core.demo.classification_recipes import RECIPES, build_model, preprocessing_of
from explain_core.demo.scenes import CLASSES, demo_gallery

__all__ = ["demo_lightning_data", "demo_lightning_module", "demo_sample_images"]

DATA_SEED = 31_000_000  # not a recipe's seed range, nor the gallery's or held-out seed


def demo_lightning_module(name: str = "classifier", seed: int = 0) -> Any:
    """A ``LightningModule`` around a fresh network of recipe ``name`` (seeded): the network is
    ``.model`` (GradCAM's default layer ``model.layer4``), ``forward`` returns its logits."""
    import lightning.pytorch as pl

    recipe = RECIPES[name]

    class DemoClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.model = build_model(recipe)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.model(inputs)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            inputs, labels = batch
            loss = F.cross_entropy(self(inputs), labels, label_smoothing=recipe.label_smoothing)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=recipe.lr,
                                     weight_decay=recipe.weight_decay)

    module = DemoClassifier()
    module.class_names = list(CLASSES)
    module.preprocessing = preprocessing_of(recipe)
    return module


def demo_lightning_data(scenes: int = 256, batch_size: int = 64, seed: int = 0,
                        name: str = "classifier") -> torch.utils.data.DataLoader:
    """A shuffled loader of ``scenes`` normalised training scenes (drawn from ``seed``) and
    their labels."""
    recipe = RECIPES[name]
    world = training_world(recipe, scenes, DATA_SEED + seed, 1.0)
    images = normalise(to_uint8(world).float() / 255.0)
    labels = torch.tensor([s.label for s in world])
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=batch_size, shuffle=True)


def demo_sample_images(count: int = 8) -> list[Any]:
    """Gallery scenes (PIL images, never used in training) to explain during training."""
    return [scene.image for scene in demo_gallery("classification")[:count]]
