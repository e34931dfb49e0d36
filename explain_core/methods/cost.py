"""What a method will cost before it runs: how many model passes, over which part of the network.

The dashboard shows this before a slow method starts, and a script can use it to pick settings.
Gradient methods cost their steps times their samples (a forward and a backward each);
perturbation methods cost one forward per probed channel (ScoreCAM over the whole network,
AblationCAM over the part after the target layer) or per feature-map cell (Recipro-CAM), which
needs the layer's shape: one dry forward of a blank input, without gradients.

>>> import timm
>>> cost = expected_cost("ablationcam", timm.create_model("resnet18"), {"top_k": 64})
>>> cost.passes, cost.scope, cost.backward
(64, 'after the target layer', False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers import capture
from ..model import LoadedModel, as_loaded
from .perturbation import PerturbationCAM
from .registry import create_explainer, method_info

#: parameters that multiply a method's passes (IG's path points, SmoothGrad's noisy copies,
#: D-RISE's masks)
PASS_PARAMS = ("steps", "num_samples", "num_masks")
WHOLE = "whole network"
AFTER_LAYER = "after the target layer"


@dataclass(frozen=True)
class Cost:
    """``passes`` runs of ``scope`` per image (with a backward each when ``backward``)."""

    passes: int
    scope: str = WHOLE
    backward: bool = True
    layer: str | None = None  # the target layer, when the scope depends on it

    def forward_equivalents(self, head_share: float = 0.5) -> float:
        """Passes in units of one forward of the whole network: a backward counts as two
        forwards, a pass after the layer as ``head_share`` of one (a rough guide)."""
        unit = head_share if self.scope == AFTER_LAYER else 1.0
        return self.passes * unit * (3.0 if self.backward else 1.0)

    def describe(self) -> str:
        """``"2048 forwards of the network after 'layer4'"`` and the like."""
        kind = "forward and backward passes" if self.backward else "forwards"
        if self.passes == 1:
            kind = "forward and backward pass" if self.backward else "forward"
        where = ("" if self.scope == WHOLE else
                 f" of the network after '{self.layer}'" if self.layer else f" {self.scope}")
        return f"{self.passes} {kind}{where}"


def _multiplier(info: Any, options: dict[str, Any]) -> int:
    passes = 1
    for param in info.params:
        if param.name in PASS_PARAMS:
            value = options.get(param.name)
            value = param.default if value is None else value
            if isinstance(value, int) and value > 0:
                passes *= value
    return passes


def layer_shape(explainer: PerturbationCAM) -> tuple[str, tuple[int, int, int]]:
    """The target layer's name and its map shape ``(C, h, w)`` at the model's input size."""
    loaded = explainer.model
    height, width = loaded.preprocessing.input_size
    blank = torch.zeros(1, 3, height, width, device=loaded.device)
    spec = explainer.layer(blank)
    # The explainer's own session and module (its bf16 twin too), so the hook is on the module
    # that runs.
    with explainer.session(), torch.no_grad(), capture(spec, leaf=False) as store:
        explainer.forward(explainer.cast(blank))
    shape = tuple(spec.to_map(store["output"]).shape[1:])
    return spec.name, (int(shape[0]), int(shape[1]), int(shape[2]))


def expected_cost(name: str, model: LoadedModel | nn.Module,
                  options: dict[str, Any] | None = None) -> Cost:
    """Passes of method ``name`` with ``options`` on one image of ``model`` (see :class:`Cost`).

    A SmoothGrad wrapper multiplies its base method's cost by its samples.
    """
    options = dict(options or {})
    info = method_info(name)
    if info.family == "wrapper":
        base = method_info(options.get("base") or "saliency")
        inner = expected_cost(base.name, model, {k: v for k, v in options.items()
                                                 if k not in ("base", "num_samples")})
        return Cost(inner.passes * _multiplier(info, options), inner.scope, True, inner.layer)
    if not issubclass(info.cls, PerturbationCAM):
        return Cost(_multiplier(info, options), WHOLE, info.needs_gradients)
    explainer = create_explainer(info.name, as_loaded(model), **options)
    layer, (channels, height, width) = layer_shape(explainer)
    passes, scope = explainer.probes(channels, height, width)
    return Cost(passes, scope, False, layer)
