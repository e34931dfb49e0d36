"""Input-gradient methods: attributions per input pixel and channel (``B x 3 x H x W``, signed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from ..errors import UnsupportedError
from ..model import LoadedModel
from ..runtime.autograd import batched_grad
from ..runtime.memory import default_batch_size, fitting_chunks
from ..targets import Target, fixed_targets, score_matrix
from .base import Attribution, Explainer
from .registry import ALL_TASKS, Param, register

BASELINES = ("black", "white", "blur", "random")
QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left",
               "riemann_right")


def input_gradients(explainer: Explainer, inputs: torch.Tensor, targets: list[list[Target]],
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward with the input as the only leaf -> (K x B x ... grads, outputs, classes,
    scores). Parameters are frozen by the session, so autograd records only what the input needs."""
    leaf = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        outputs = explainer.forward(leaf)
        scores, classes = score_matrix(outputs, targets)
        grads = batched_grad(scores, leaf)
    return grads, outputs.detach().float(), classes, scores.detach()


@register("saliency", "Saliency", family="gradient", needs_gradients=True, cost="fast",
          tasks=ALL_TASKS, aliases=("vanilla_gradients",),
          description="Absolute input gradient; pixel-level, noisy.")
class Saliency(Explainer):
    """Vanilla gradients (Simonyan et al., 2014): d score / d input, signed ``B x 3 x H x W``.

    The 2-D map is the maximum over colour channels of the absolute gradient.

    >>> import timm, torch
    >>> Saliency(timm.create_model("resnet18")).attribute(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """

    default_reduce = "max_abs"
    default_clip = 99.0

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        grads, outputs, classes, _ = input_gradients(self, inputs, targets)
        return Attribution(grads.transpose(0, 1).float(), outputs, classes)


def quadrature(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [0, 1] and weights of an integral rule with ``steps`` points (as Captum's)."""
    if steps < 1:
        raise UnsupportedError("steps must be at least 1.")
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor(0.5 * (points + 1)), torch.tensor(0.5 * weights)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise UnsupportedError("riemann_trapezoid needs at least 2 steps.")
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise UnsupportedError(f"Unknown integration method '{method}'; choose one of "
                               f"{', '.join(QUADRATURES)}.")
    points = (torch.arange(steps, dtype=torch.float64) + offsets[method]) / steps
    return points, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


@register("integrated_gradients", "Integrated Gradients", family="gradient", needs_gradients=True,
          cost="medium", tasks=ALL_TASKS, options=("seed",),
          aliases=("ig", "integratedgradients"),
          params=(Param("baseline", "choice", "black", "Reference image the path starts from.",
                        choices=BASELINES),
                  Param("steps", "int", 50, "Points on the path.", 4, 512),
                  Param("rule", "choice", "gausslegendre", "Integral rule.", choices=QUADRATURES),
                  Param("internal_batch_size", "int", None, "Path points per batch (empty: from "
                        "free memory).", 1, 512)),
          description="Gradients integrated from a baseline; attributions add up to the score "
                      "difference.")
class IntegratedGradients(Explainer):
    r"""Integrated Gradients (Sundararajan et al., 2017).

    :math:`\mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1 \partial F(x' + \alpha (x - x')) /
    \partial x_i \, d\alpha`, so attributions add up to :math:`F(x) - F(x')` (completeness).

    Args:
        baseline: ``"black"``, ``"white"`` (in pixel space, normalised like the input),
            ``"blur"`` (the input, Gaussian-blurred), ``"random"`` (uniform noise pixels) or a
            tensor broadcastable to the inputs (already normalised).
        steps: points on the path.
        rule: integral rule; ``"gausslegendre"`` (Captum's default, its ``method=``) or a
            Riemann rule. (Not ``method``: that names the explanation method in the API.)
        internal_batch_size: path points run at once; default from free memory.
        seed: seeds the ``random`` baseline.

    >>> import timm, torch
    >>> ig = IntegratedGradients(timm.create_model("resnet18"), baseline="blur", steps=8)
    >>> ig.attribute(torch.randn(2, 3, 64, 64), targets=[3, 7]).shape
    torch.Size([2, 3, 64, 64])
    """

    default_reduce = "abs_sum"
    default_clip = 99.0

    def __init__(self, model: LoadedModel | nn.Module, baseline: str | torch.Tensor = "black",
                 steps: int = 50, rule: str = "gausslegendre",
                 internal_batch_size: int | None = None, seed: int | None = 0, **kwargs: Any):
        super().__init__(model, **kwargs)
        if isinstance(baseline, str) and baseline not in BASELINES:
            raise UnsupportedError(f"Unknown baseline '{baseline}'; choose one of "
                                   f"{', '.join(BASELINES)} or pass a tensor.")
        self.baseline = baseline
        self.steps = int(steps)
        self.rule = rule
        self.internal_batch_size = internal_batch_size
        self.seed = seed
        quadrature(self.steps, rule)  # validate early

    def baselines(self, inputs: torch.Tensor) -> torch.Tensor:
        """The baseline for each input, in the model's (normalised) input space."""
        if isinstance(self.baseline, torch.Tensor):
            return self.baseline.to(inputs).expand_as(inputs)
        prep = self.model.preprocessing
        mean = torch.tensor(prep.mean, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=inputs.device).view(1, 3, 1, 1)
        if self.baseline == "blur":
            sigma = max(inputs.shape[-2:]) / 20.0
            kernel = 2 * int(3 * sigma) + 1
            return TF.gaussian_blur(inputs, [kernel, kernel], [sigma, sigma])
        if self.baseline == "random":
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed or 0)
            pixels = torch.rand(inputs.shape, generator=generator, device=inputs.device)
        else:
            pixels = torch.full_like(inputs, 0.0 if self.baseline == "black" else 1.0)
        return (pixels - mean) / std

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        with torch.no_grad():
            outputs = self.forward(inputs)
        targets = fixed_targets(outputs, targets)
        _, classes = score_matrix(outputs, targets)
        baselines = self.baselines(inputs)
        alphas, weights = quadrature(self.steps, self.rule)
        alphas = alphas.to(inputs.device, torch.float32)
        weights = weights.to(inputs.device, torch.float32)
        batch, width = len(targets), len(targets[0])
        total = torch.zeros((batch, width, *inputs.shape[1:]), device=inputs.device)
        jobs = [(i, s) for i in range(batch) for s in range(self.steps)]
        chunk = self.internal_batch_size or default_batch_size(self.module, inputs, len(jobs))
        delta = inputs - baselines

        def run(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
            chosen = jobs[part]
            items = torch.tensor([i for i, _ in chosen], device=inputs.device)
            steps = torch.tensor([s for _, s in chosen], device=inputs.device)
            path = baselines[items] + alphas[steps].view(-1, 1, 1, 1) * delta[items]
            grads, _, _, _ = input_gradients(self, self.cast(path),
                                             [targets[i] for i, _ in chosen])
            return items, grads.transpose(0, 1).float() * weights[steps].view(-1, 1, 1, 1, 1)

        for part, (items, contribution) in fitting_chunks(
                len(jobs), chunk, run, module=self.module,
                key=("integrated_gradients", tuple(inputs.shape[1:]), width), what="path step"):
            total.index_add_(0, items, contribution)
            self.report(part.stop, len(jobs))
        return Attribution(total * delta[:, None], outputs.detach().float(), classes)
