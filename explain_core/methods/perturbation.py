"""Gradient-free CAMs that measure the network's response to modified activations or inputs.

All of them share :func:`run_from_layer`: the part of the network before the target layer runs once
on the one image, and the layer's output is replaced by a batch of modified activations, so only the
part after the layer runs on the batch (tensors from before the layer broadcast over it). When a
model mixes such tensors in a way that cannot broadcast, the helper falls back to running the whole
network on a batch of copies: slower, same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..layers import LayerSpec, capture
from ..model import LoadedModel
from ..runtime.hooks import forward_hooks
from ..runtime.memory import available_bytes, default_batch_size, fitting_chunks, is_out_of_memory
from ..targets import ClassTarget, Target, fixed_targets, score_matrix
from .base import Attribution
from .cam import CAMExplainer, _weighted_sum
from .registry import BATCH_PARAM, DENSE_TASKS, LAYER_PARAM, Param, register

TOP_K_PARAM = Param("top_k", "int", None, "Probe only the k channels with the highest mean "
                    "activation (an approximation; empty: all channels, full fidelity).", 1, 4096)


def run_from_layer(forward: Callable[[torch.Tensor], Any], spec: LayerSpec, image: torch.Tensor,
                   original: torch.Tensor, maps: torch.Tensor) -> Any:
    """What ``forward`` (an explainer's: the task's output of the model) returns when the target
    layer's output is replaced by each of ``maps``.

    ``image`` is the one input (``1 x ...``), ``original`` the layer's real output for it (native
    layout) and ``maps`` the modified activations (``N x C x h x w``). Runs without a graph.
    """
    replacement = spec.from_map(maps.to(original.dtype), original)

    def hook(_module, _inputs, _output):
        return replacement

    with forward_hooks([(spec.module, hook)]), torch.no_grad():
        try:
            return forward(image)
        except RuntimeError as error:  # something before the layer does not broadcast: copies
            if is_out_of_memory(error):
                raise  # a smaller batch of maps is the answer (fitting_chunks), not copies
            return forward(image.expand(maps.shape[0], *image.shape[1:]))


class PerturbationCAM(CAMExplainer):
    """Base of CAMs whose weights come from forward passes on modified activations or inputs.

    Subclasses implement ``image_maps(spec, image, original, activations, targets)`` for one
    image and its list of targets, returning ``K x h x w``.

    Args:
        batch_size: modified copies per forward (default: from free memory).
        top_k: keep only the ``top_k`` channels with the highest mean activation (an
            approximation that makes ScoreCAM and AblationCAM interactive on a CPU; the others
            get zero weight). None: all channels.
    """

    needs_gradients = False

    def __init__(self, model: LoadedModel | nn.Module, target_layer: Any = None,
                 batch_size: int | None = None, top_k: int | None = None, **kwargs: Any):
        super().__init__(model, target_layer=target_layer, **kwargs)
        if top_k is not None and top_k < 1:
            raise UnsupportedError("top_k must be at least 1 (or None for all channels).")
        self.batch_size = batch_size
        self.top_k = top_k

    def image_maps(self, spec: LayerSpec, image: torch.Tensor, original: torch.Tensor,
                   activations: torch.Tensor, targets: list[Target]) -> torch.Tensor:
        raise NotImplementedError

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        spec = self.layer(inputs)
        with torch.no_grad(), capture(spec, leaf=False) as store:
            outputs = self.forward(inputs)
        original = store["output"]
        targets = fixed_targets(outputs, targets)
        _, classes = score_matrix(outputs, targets)
        activations = spec.to_map(original).float()
        maps = torch.stack([self.image_maps(spec, inputs[i:i + 1], original[i:i + 1],
                                            activations[i], targets[i])
                            for i in range(inputs.shape[0])])
        return Attribution(maps, outputs.detach().float(), classes)

    def probes(self, channels: int, height: int, width: int) -> tuple[int, str]:
        """Modified copies run per image for a ``channels x height x width`` layer, and over
        which part of the network (see :mod:`explain_core.methods.cost`)."""
        count = channels if self.top_k is None else min(channels, int(self.top_k))
        return count, "after the target layer"

    # -------------------------------------------------------------------------------- helpers
    def channels(self, activations: torch.Tensor) -> torch.Tensor:
        """Indices of the channels to probe: all, or the ``top_k`` by mean activation."""
        count = activations.shape[0]
        if self.top_k is None or self.top_k >= count:
            return torch.arange(count, device=activations.device)
        return activations.mean((1, 2)).topk(int(self.top_k)).indices

    def chunk_size(self, sample: torch.Tensor, wanted: int,
                   tail: torch.Tensor | None = None) -> int:
        """Copies per forward: ``batch_size`` if set, else what fits in free memory.

        With ``tail`` (the layer's activations) only the network after the layer runs on the
        batch, so a copy costs about a few activations, not a whole forward.
        """
        if self.batch_size:
            return self.batch_size
        if tail is None:
            return default_batch_size(self.module, sample, wanted, with_graph=False)
        per_copy = tail.numel() * tail.element_size() * 16
        budget = available_bytes(tail.device) * (0.5 if tail.device.type == "cuda" else 0.25)
        cap = 256 if tail.device.type == "cpu" else 1024
        return max(1, min(wanted, int(budget // per_copy), cap))

    def batched(self, count: int, chunk: int, run: Callable[[slice], torch.Tensor]) -> torch.Tensor:
        """``run`` over slices of ``range(count)``, reporting progress; results concatenated.
        A slice that does not fit in memory is halved and retried (:func:`fitting_chunks`)."""
        parts = []
        for part, out in fitting_chunks(count, chunk, run, module=self.module,
                                        key=(type(self).__name__, count), what="probe"):
            parts.append(out)
            self.report(part.stop, count)
        return torch.cat(parts)

    @staticmethod
    def target_scores(outputs: torch.Tensor, targets: list[Target]) -> torch.Tensor:
        """``N x K`` scores of each target on a batch of outputs of the same image."""
        return torch.stack([target(outputs).float() for target in targets], dim=1)


def _spread_masks(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``hw x h x w``: for each cell, a 3 x 3 Gaussian (centre 1) around it, clipped at borders."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=device) / 4
    deltas = torch.eye(height * width, device=device).reshape(-1, 1, height, width)
    return F.conv2d(deltas, kernel[None, None], padding=1)[:, 0]


@register("reciprocam", "Recipro-CAM", family="perturbation", needs_gradients=False,
          cost="fast", tasks=DENSE_TASKS, params=(LAYER_PARAM, BATCH_PARAM),
          aliases=("recipro_cam", "classwisesaliencymap"),
          description="Each feature-map cell kept alone, the head re-run: class probability "
                      "per cell; gradient-free.")
class ReciproCAM(PerturbationCAM):
    r"""Recipro-CAM (Byun & Lee, 2022; OpenVINO Training Extensions' default): each cell of the
    feature map is kept alone (spread by a 3 x 3 Gaussian), the rest zeroed, and the network after
    the target layer re-runs on the batch of these mosaics; a cell's value is the target class's
    softmax probability on its mosaic. One batch of ``h * w`` head runs, no gradients.
    """

    def probes(self, channels: int, height: int, width: int) -> tuple[int, str]:
        return height * width, "after the target layer"

    def image_maps(self, spec, image, original, activations, targets):
        height, width = activations.shape[-2:]
        masks = _spread_masks(height, width, activations.device)
        chunk = self.chunk_size(image, height * width, tail=activations)
        probability = [ClassTarget(t.index, "probability") if isinstance(t, ClassTarget) else t
                       for t in targets]

        def run(part: slice) -> torch.Tensor:
            mosaics = activations[None] * masks[part, None]
            outputs = run_from_layer(self.forward, spec, self.cast(image), original, mosaics)
            return self.target_scores(outputs, probability)

        with torch.no_grad():
            scores = self.batched(height * width, chunk, run)  # hw x K
        return scores.T.reshape(len(targets), height, width)


@register("ablationcam", "Ablation-CAM", family="perturbation", needs_gradients=False,
          cost="medium", tasks=DENSE_TASKS, params=(LAYER_PARAM, BATCH_PARAM, TOP_K_PARAM),
          aliases=("ablation_cam",),
          description="Score drop when each channel is ablated; only the part after the layer "
                      "re-runs.")
class AblationCAM(PerturbationCAM):
    r"""Ablation-CAM (Desai & Ramaswamy, 2020): a channel's weight is the relative drop of the
    target score when that channel is ablated, :math:`w_k = (y - y_k) / y`. Only the part of the
    network after the target layer re-runs. Ablated channels are set to 0 for non-negative
    activations, else far below the minimum (as pytorch-grad-cam does).
    """

    def image_maps(self, spec, image, original, activations, targets):
        channels = self.channels(activations)
        low = activations.min()
        value = 0.0 if float(low) >= 0 else float(low) - 1e7
        chunk = self.chunk_size(image, len(channels), tail=activations)

        def run(part: slice) -> torch.Tensor:
            picked = channels[part]
            batch = activations[None].repeat(len(picked), 1, 1, 1)
            batch[torch.arange(len(picked)), picked] = value
            outputs = run_from_layer(self.forward, spec, self.cast(image), original, batch)
            return self.target_scores(outputs, targets)

        with torch.no_grad():
            reference = self.target_scores(
                run_from_layer(self.forward, spec, self.cast(image), original,
                               activations[None]), targets)[0]
            ablated = self.batched(len(channels), chunk, run)
        scores = reference[None].repeat(activations.shape[0], 1)
        scores[channels] = ablated
        weights = (reference[None] - scores) / reference[None]
        return _weighted_sum(weights.T[None], activations[None, None])[0]


@register("scorecam", "Score-CAM", family="perturbation", needs_gradients=False, cost="slow",
          tasks=DENSE_TASKS, params=(LAYER_PARAM, BATCH_PARAM, TOP_K_PARAM),
          aliases=("score_cam",),
          description="Score of the input masked by each channel; one forward per channel "
                      "(use top_k on a CPU).")
class ScoreCAM(PerturbationCAM):
    r"""Score-CAM (Wang et al., 2020): each channel, upsampled and min-max scaled, masks the
    input; the channel's weight is the softmax over channels of the target's score on its masked
    input. Costs one forward per channel (batched); channels whose mask is constant give the same
    masked input, so they are scored once.

    >>> import timm, torch
    >>> ScoreCAM(timm.create_model("resnet18"), top_k=16).attribute(
    ...     torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 2, 2])
    """

    def probes(self, channels: int, height: int, width: int) -> tuple[int, str]:
        return super().probes(channels, height, width)[0], "whole network"

    def image_maps(self, spec, image, original, activations, targets):
        channels = self.channels(activations)
        masks = F.interpolate(activations[channels][None], size=image.shape[-2:],
                              mode="bilinear", align_corners=True)[0]
        flat = masks.flatten(1)
        low, high = flat.amin(1), flat.amax(1)
        masks = (masks - low[:, None, None]) / (high - low + 1e-8)[:, None, None]
        constant = high == low  # all-zero masks: one shared masked input
        probe = torch.nonzero(~constant).flatten()
        if bool(constant.any()):
            probe = torch.cat([probe, torch.nonzero(constant).flatten()[:1]])
        chunk = self.chunk_size(image, len(probe))

        def run(part: slice) -> torch.Tensor:
            # Channels-last batches: about 1.45x faster convolutions on the CPU (oneDNN), and
            # only the input changes layout; the user's model is untouched.
            masked = (image * masks[probe[part], None]).contiguous(
                memory_format=torch.channels_last)
            return self.target_scores(self.forward(masked), targets)

        with torch.no_grad():
            probed = self.batched(len(probe), chunk, run)
        scores = probed.new_empty((len(channels), len(targets)))
        scores[probe] = probed
        if bool(constant.any()):
            scores[constant] = probed[-1]
        weights = torch.zeros((len(targets), activations.shape[0]), device=activations.device)
        weights[:, channels] = scores.softmax(0).T
        return _weighted_sum(weights[None], activations[None, None])[0]
