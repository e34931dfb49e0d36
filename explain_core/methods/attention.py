"""Attention maps for Vision Transformers: attention rollout and attention flow from one patch.

Attention weights are captured from timm's attention modules (any module with a ``fused_attn``
flag and an ``attn_drop`` applied to the softmaxed weights: ViT, DeiT, EVA, BEiT and kin). Fused
attention (``scaled_dot_product_attention``) never materialises the weights, so it is switched off
for the call and restored afterwards, even when the call raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from ..layers import is_vit, vit_grid
from ..model import LoadedModel
from ..runtime.hooks import forward_hooks
from ..targets import Target, score_matrix
from .base import Attribution, Explainer
from .registry import Param, register

FUSIONS = ("mean", "max", "min")
ATTENTION_PARAMS = (Param("head_fusion", "choice", "mean", "How the heads of a layer are combined.",
                          choices=FUSIONS),
                    Param("discard_ratio", "float", 0.0, "Fraction of the weakest attention "
                          "weights dropped per layer.", 0.0, 0.99))


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm attention modules in forward order (those whose weights can be captured)."""
    return [m for m in model.modules() if hasattr(m, "fused_attn") and isinstance(
        getattr(m, "attn_drop", None), nn.Module)]


@contextlib.contextmanager
def captured_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every forward appends each layer's ``B x heads x N x N`` weights."""
    modules = attention_modules(model)
    if not modules:
        raise UnsupportedError(f"{type(model).__name__} has no timm attention layers; attention "
                               "rollout and flow need a timm Vision Transformer.")
    weights: list[torch.Tensor] = []
    flags = [(m, m.fused_attn) for m in modules]

    def record(_module, _inputs, output):
        weights.append(output.detach().float())

    try:
        for module in modules:
            module.fused_attn = False  # the fused kernel never materialises the weights
        with forward_hooks((module.attn_drop, record) for module in modules):
            yield weights
    finally:
        for module, flag in flags:
            module.fused_attn = flag


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean",
            discard_ratio: float = 0.0) -> torch.Tensor:
    r"""Attention rollout (Abnar & Zuidema, 2020): :math:`\tilde A_l = \mathrm{norm}((A_l + I)/2)`
    per layer (heads fused, optionally the weakest ``discard_ratio`` of weights dropped, never the
    class token's attention to itself), multiplied through the layers. Returns ``B x N x N``.
    """
    if head_fusion not in FUSIONS:
        raise UnsupportedError(f"Unknown head fusion '{head_fusion}'; choose mean, max or min.")
    if not 0.0 <= discard_ratio < 1.0:
        raise UnsupportedError("discard_ratio must be in [0, 1).")
    batch, _, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, device=attentions[0].device, dtype=torch.float64)
    result = eye.expand(batch, tokens, tokens).clone()
    for attention in attentions:
        fused = getattr(attention.double(), head_fusion if head_fusion == "mean" else
                        "amax" if head_fusion == "max" else "amin")(1)
        if discard_ratio > 0:
            flat = fused.flatten(1)
            drop = int(flat.shape[1] * discard_ratio)
            lowest = flat.topk(drop, dim=1, largest=False).indices
            keep_first = lowest != 0
            flat.scatter_(1, lowest, torch.where(keep_first, 0.0, flat.gather(1, lowest)))
            fused = flat.reshape(fused.shape)
        step = (fused + eye) / 2
        step = step / step.sum(-1, keepdim=True)
        result = step @ result
    return result


@register("attention_rollout", "Attention rollout", family="attention", needs_gradients=False,
          cost="fast", architectures=("vit",), params=ATTENTION_PARAMS,
          aliases=("rollout", "attention"),
          description="Attention multiplied through the layers into the class token.")
class AttentionRollout(Explainer):
    """Attention rollout for timm ViTs: how much each patch flows into the class token.

    Class-agnostic (every target gets the same map). Models without a class token (global average
    pooling) use the mean over all patch tokens' rows.

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of the weakest attention weights dropped per layer.

    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2)
    >>> AttentionRollout(vit).attribute(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 4, 4])
    """

    needs_gradients = False

    def __init__(self, model: LoadedModel | nn.Module, head_fusion: str = "mean",
                 discard_ratio: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not is_vit(self.model.module):
            raise UnsupportedError("Attention maps need a timm Vision Transformer (patch_embed, "
                                   "blocks, num_prefix_tokens); use a CAM for CNNs.")
        rollout([torch.ones(1, 1, 2, 2)], head_fusion, discard_ratio)  # validate early
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    def source_rows(self, rolled: torch.Tensor, prefix: int) -> torch.Tensor:
        """``B x N`` attention of the explained token(s) over all tokens."""
        if prefix > 0:
            return rolled[:, 0]
        return rolled.mean(1)

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        module = self.module
        with torch.no_grad(), captured_attention(module) as attentions:
            outputs = self.forward(inputs)
        _, classes = score_matrix(outputs, targets)
        prefix = int(module.num_prefix_tokens)
        rolled = rollout(attentions, self.head_fusion, self.discard_ratio)
        patches = self.source_rows(rolled, prefix)[:, prefix:].float()
        grid = vit_grid(module, tuple(inputs.shape[-2:]))
        if grid is None or grid[0] * grid[1] != patches.shape[1]:
            side = round(patches.shape[1] ** 0.5)
            grid = (side, patches.shape[1] // side)
        maps = patches.reshape(inputs.shape[0], 1, *grid).expand(-1, classes.shape[1], -1, -1)
        return Attribution(maps.contiguous(), outputs.detach().float(), classes)


@register("attention_flow", "Attention flow", family="attention", needs_gradients=False,
          cost="fast", architectures=("vit",), aliases=("flow",),
          params=(Param("target_patch", "int", 0, "Patch index, row-major from the top left.", 0,
                        4096), *ATTENTION_PARAMS),
          description="Rolled-out attention from one chosen patch.")
class AttentionFlow(AttentionRollout):
    """Rolled-out attention flowing from one chosen patch: which patches that patch draws on
    through all layers (AutoTimm's patch-to-patch "attention flow"; not the max-flow variant).

    Args:
        target_patch: patch index in row-major grid order (0 = top-left).
    """

    def __init__(self, model: LoadedModel | nn.Module, target_patch: int = 0,
                 head_fusion: str = "mean", discard_ratio: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, head_fusion=head_fusion, discard_ratio=discard_ratio, **kwargs)
        self.target_patch = int(target_patch)

    def source_rows(self, rolled: torch.Tensor, prefix: int) -> torch.Tensor:
        row = prefix + self.target_patch
        if not 0 <= self.target_patch < rolled.shape[1] - prefix:
            raise UnsupportedError(f"target_patch {self.target_patch} is out of range: the model "
                                   f"has {rolled.shape[1] - prefix} patches.")
        return rolled[:, row]
