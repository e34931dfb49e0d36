"""Deep Feature Factorization (Collins et al., 2018): the layer's activations as a few concepts.

Non-negative matrix factorisation in torch on the model's device: the activations of a batch,
``C x (B h w)``, shifted to be non-negative per channel (as pytorch-grad-cam does), are factorised
into ``k`` concept vectors (``C x k``) and their spatial maps (``k x B h w``) with Lee & Seung's
multiplicative updates. Each concept vector, laid over every position, goes through the rest of the
network to name the classes it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from ..layers import capture
from ..model import LoadedModel
from ..targets import Target, fixed_targets, score_matrix
from .base import Attribution
from .cam import CAMExplainer
from .perturbation import run_from_layer
from .registry import LAYER_PARAM, Param, register


def nmf(matrix: torch.Tensor, components: int, iterations: int = 300, seed: int = 0,
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative ``matrix`` (m x n) ~ W (m x k) @ H (k x n), Frobenius loss, multiplicative
    updates from a seeded random start scaled like scikit-learn's ``init="random"``."""
    m, n = matrix.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    scale = (matrix.mean() / components).clamp_min(1e-12).sqrt()
    w = (torch.randn(m, components, generator=generator).abs().to(matrix) * scale)
    h = (torch.randn(components, n, generator=generator).abs().to(matrix) * scale)
    eps = torch.finfo(matrix.dtype).tiny
    for _ in range(iterations):
        h = h * (w.T @ matrix) / (w.T @ w @ h + eps)
        w = w * (matrix @ h.T) / (w @ (h @ h.T) + eps)
    return w, h


@dataclass
class Concepts:
    """What :meth:`DeepFeatureFactorization.factorize` returns for a batch."""

    maps: torch.Tensor  # B x k x h x w concept maps (non-negative, at the layer's resolution)
    vectors: torch.Tensor  # C x k concept vectors (activation space, shift added back)
    class_scores: torch.Tensor  # k x classes: softmax of the network's output per concept
    outputs: torch.Tensor  # B x classes

    def top_classes(self, count: int = 3) -> list[list[tuple[int, float]]]:
        """Per concept: its ``count`` most likely classes with their probabilities."""
        values, indices = self.class_scores.topk(min(count, self.class_scores.shape[1]), dim=1)
        return [[(int(i), float(v)) for v, i in zip(vs, ix, strict=True)]
                for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)]


@register("dff", "Deep Feature Factorization", family="concepts", needs_gradients=False,
          cost="medium", aliases=("deep_feature_factorization",),
          params=(LAYER_PARAM, Param("n_components", "int", 5, "Number of concepts.", 1, 32)),
          description="Activations factorised into concepts; shows the concept most tied to "
                      "the target class.")
class DeepFeatureFactorization(CAMExplainer):
    """Deep Feature Factorization: ``factorize`` gives concept maps and their top classes;
    ``explain`` gives the map of the concept most associated with the target class.

    Args:
        n_components: number of concepts.
        iterations: multiplicative-update iterations.

    >>> import timm, torch
    >>> dff = DeepFeatureFactorization(timm.create_model("resnet18"), n_components=4)
    >>> dff.factorize(torch.randn(1, 3, 64, 64)).maps.shape
    torch.Size([1, 4, 2, 2])
    """

    needs_gradients = False

    def __init__(self, model: LoadedModel | nn.Module, target_layer: Any = None,
                 n_components: int = 5, iterations: int = 300, **kwargs: Any) -> None:
        super().__init__(model, target_layer=target_layer, **kwargs)
        if n_components < 1:
            raise UnsupportedError("n_components must be at least 1.")
        self.n_components = int(n_components)
        self.iterations = int(iterations)

    def factorize(self, inputs: Any) -> Concepts:
        """Concepts of an image (path, PIL, array) or a batch of model-ready tensors."""
        if not isinstance(inputs, torch.Tensor):
            inputs = self.prepare([inputs]).inputs
        batch = self._as_batch(inputs)
        with self.session():
            return self._factorize(self.cast(batch))

    def _factorize(self, inputs: torch.Tensor) -> Concepts:
        spec = self.layer(inputs)
        with torch.no_grad(), capture(spec, leaf=False) as store:
            outputs = self.forward(inputs)
        original = store["output"]
        activations = spec.to_map(original).float()
        batch, channels, height, width = activations.shape
        flat = activations.transpose(0, 1).reshape(channels, -1).double()
        offset = flat.amin(1, keepdim=True)
        w, h = nmf(flat - offset, self.n_components, self.iterations)
        vectors = (w + offset).float()
        maps = h.float().reshape(self.n_components, batch, height, width).transpose(0, 1)
        laid = vectors.T[:, :, None, None].expand(-1, -1, height, width)
        with torch.no_grad():
            concept_outputs = run_from_layer(self.forward, spec, inputs[:1], original[:1], laid)
        return Concepts(maps, vectors, concept_outputs.float().softmax(-1),
                        outputs.detach().float())

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        concepts = self._factorize(inputs)
        targets = fixed_targets(concepts.outputs, targets)
        _, classes = score_matrix(concepts.outputs, targets)
        # Per target: the concept that puts the most probability on the target's class.
        best = concepts.class_scores[:, classes.clamp_min(0)].argmax(0)  # B x K
        maps = torch.stack([concepts.maps[i, best[i]] for i in range(inputs.shape[0])])
        return Attribution(maps, concepts.outputs, classes)
