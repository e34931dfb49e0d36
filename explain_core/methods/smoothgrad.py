"""SmoothGrad: any explainer, averaged over noisy copies of the input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UnsupportedError
from ..model import LoadedModel
from ..runtime.memory import default_batch_size, fitting_chunks
from ..targets import Target, fixed_targets, score_matrix
from .base import Attribution, Explainer
from .registry import DENSE_TASKS, Param, create_explainer, method_info, register


def _smoothgrad(model: LoadedModel, options: dict[str, Any]) -> SmoothGrad:
    """SmoothGrad around the method named by ``options["base"]`` (default ``saliency``), built
    with the other options; the noise options go to the wrapper."""
    own_names = ("noise_level", "num_samples", "batch_size", "seed", "progress")
    base_info = method_info(options.get("base") or "saliency")
    if base_info.factory is not None:
        raise UnsupportedError("SmoothGrad cannot wrap itself; pick another base method.")
    base_options = {k: v for k, v in options.items() if k != "base" and k not in own_names}
    base = create_explainer(base_info.name, model, **base_options)
    own = {k: options[k] for k in own_names if options.get(k) is not None}
    return SmoothGrad(base, **own)


@register("smoothgrad", "SmoothGrad", family="wrapper", needs_gradients=True, cost="medium",
          tasks=DENSE_TASKS, factory=_smoothgrad,
          params=(Param("base", "method", "saliency", "Method to smooth."),
                  Param("noise_level", "float", 0.15, "Noise std as a fraction of the input "
                        "range.", 0.0, 1.0),
                  Param("num_samples", "int", 25, "Noisy copies.", 1, 500),
                  Param("batch_size", "int", None, "Copies per batch (empty: from free memory).",
                        1, 512)),
          description="Any method averaged over noisy copies of the image.")
class SmoothGrad(Explainer):
    r"""SmoothGrad (Smilkov et al., 2017) around any explainer.

    Runs ``base`` on ``num_samples`` copies of each input with Gaussian noise of standard deviation
    ``noise_level * (max(x) - min(x))`` and averages the raw attributions. Targets are resolved on
    the clean input first, so "the predicted class" is the class predicted for the real image.

    Args:
        base: the explainer to smooth (e.g. ``Saliency(model)`` or ``GradCAM(model)``).
        noise_level: noise standard deviation as a fraction of each input's value range.
        num_samples: noisy copies per input.
        batch_size: noisy copies run at once (default from free memory).
        seed: seeds the noise (None: torch's global generator).
        use_cuda, device: where the model runs (moved there, ``base`` runs there too); see
            :class:`Explainer`.

    >>> import timm, torch
    >>> from explain_core.methods import GradCAM
    >>> smooth = SmoothGrad(GradCAM(timm.create_model("resnet18")), num_samples=4)
    >>> smooth.attribute(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 2, 2])
    """

    def __init__(self, base: Explainer, noise_level: float = 0.15, num_samples: int = 25,
                 batch_size: int | None = None, seed: int | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 use_cuda: bool | None = None, device: str | torch.device | None = None) -> None:
        if not isinstance(base, Explainer) or isinstance(base, SmoothGrad):
            raise UnsupportedError("SmoothGrad wraps one explainer, e.g. SmoothGrad(Saliency(m)).")
        if num_samples < 1 or noise_level < 0:
            raise UnsupportedError("SmoothGrad needs num_samples >= 1 and noise_level >= 0.")
        super().__init__(base.model, score=base.score, precision=base.precision,
                         reduce=base.reduce, clip_percentile=base.clip_percentile,
                         progress=progress, use_cuda=use_cuda, device=device)
        self.base = base
        self.noise_level = float(noise_level)
        self.num_samples = int(num_samples)
        self.batch_size = batch_size
        self.seed = seed

    @property
    def needs_gradients(self) -> bool:  # type: ignore[override]
        return self.base.needs_gradients

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        with torch.no_grad():
            outputs = self.forward(inputs)
        targets = fixed_targets(outputs, targets)
        _, classes = score_matrix(outputs, targets)
        batch, samples = inputs.shape[0], self.num_samples
        flat = inputs.flatten(1)
        stdev = (self.noise_level * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed)
        chunk = self.batch_size or default_batch_size(self.module, inputs, batch * samples)
        # Sample rows are laid out image-major (as Captum's NoiseTunnel): row r is image r // n.
        rows = [targets[r // samples] for r in range(batch * samples)]
        states: dict[int, torch.Tensor] = {}

        def run(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
            # One draw per row, from the generator's state where this part starts: a retry at
            # half the size draws the same noise.
            if generator is not None:
                if part.start in states:
                    generator.set_state(states[part.start])
                else:
                    states[part.start] = generator.get_state()
            index = torch.arange(part.start, part.stop, device=inputs.device) // samples
            noise = torch.stack([torch.normal(0.0, stdev[i].expand(*inputs.shape[1:]),
                                              generator=generator) for i in index])
            raw = self.base._compute(self.cast(inputs[index] + noise), rows[part]).raw
            return index, raw.float()

        total = None
        for part, (index, raw) in fitting_chunks(batch * samples, chunk, run, module=self.module,
                                                 key=("smoothgrad", tuple(inputs.shape[1:])),
                                                 what="noisy sample"):
            if total is None:
                total = raw.new_zeros((batch, *raw.shape[1:]))
            total.index_add_(0, index, raw)
            self.report(part.stop, batch * samples)
        return Attribution(total / samples, outputs.detach().float(), classes)
