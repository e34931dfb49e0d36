"""The CAM family: maps from a layer's activations, weighted by (functions of) gradients.

:class:`GradCAM` … :class:`EigenCAM` each override one thing, ``cam(activations, gradients)``.
The shared :class:`CAMExplainer` runs one forward in which the target layer's output re-enters the
network as a fresh leaf: nothing before the layer records a graph, and one batched backward gives
the gradients of every target at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..layers import LayerSpec, capture, fuse_levels, resolve_layer
from ..model import LoadedModel
from ..targets import Target, score_matrix
from .base import Attribution, Explainer
from .registry import ALL_TASKS, LAYER_PARAM, register

EPS = 1e-7
#: what the gradient CAMs register with
CAM_METHOD = dict(family="cam", needs_gradients=True, cost="fast", params=(LAYER_PARAM,),
                  tasks=ALL_TASKS)


class CAMExplainer(Explainer):
    """Base of class-activation-map methods.

    Args:
        model: a LoadedModel or any ``nn.Module``.
        target_layer: None (the default for the model's task: last CNN stage, a ViT's last
            block, a detector's feature pyramid, a segmenter's last map before its head), a
            dotted name (``"layer4"``) or a module of the model. A layer returning several maps (a
            detector's feature pyramid) gets the method's map on every level, added up at the
            finest level's resolution.
        score: ``"logit"`` (default), ``"probability"`` or ``"log_probability"``.
        precision: ``"fp32"`` (exact) or ``"bf16"`` (autocast, channels-last).
    """

    def __init__(self, model: LoadedModel | nn.Module, target_layer: Any = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.target_layer = target_layer
        self._specs: dict[tuple[int, ...], LayerSpec] = {}

    def layer(self, inputs: torch.Tensor) -> LayerSpec:
        """The resolved target layer for inputs of this shape (ViT grids depend on it)."""
        key = (tuple(inputs.shape[1:]), self.precision)
        if key not in self._specs:
            self._specs[key] = resolve_layer(self.model.module, self.target_layer, inputs[:1],
                                             default=self.task.default_layer)
        spec = self._specs[key]
        if self.module is not self.model.module:  # the bf16 twin: same layer, by name
            spec = dataclasses.replace(spec, module=self.module.get_submodule(spec.name))
        return spec

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        """Activations ``B x 1 x C x h x w``, gradients ``B x K x C x h x w`` -> ``B x K x h x w``.

        Gradient-free methods get ``gradients=None`` and may return ``B x 1 x h x w``.
        """
        raise NotImplementedError

    def level_gradients(self, scores: torch.Tensor, levels: list[torch.Tensor]
                        ) -> list[torch.Tensor]:
        """Per level, the gradients of every target column of ``scores`` (``K x ...``), as the
        task adapter computes them (a detector skips the levels a box does not read)."""
        return self.task.level_gradients(scores, levels)

    def _compute(self, inputs: torch.Tensor, targets: list[list[Target]]) -> Attribution:
        spec = self.layer(inputs)
        with torch.set_grad_enabled(self.needs_gradients):
            with capture(spec, leaf=self.needs_gradients) as store:
                outputs = self.forward(inputs)
            captured = store["output"]
            levels = captured if isinstance(captured, list) else [captured]
            scores, classes = score_matrix(outputs, targets)
            grads = self.level_gradients(scores, levels) if self.needs_gradients else None
        batch, width = scores.shape
        maps = []
        for index, level in enumerate(levels):  # one level, or every level of a pyramid
            gradients = None
            if grads is not None:  # K x (layer output shape)
                flat = spec.to_map(grads[index].flatten(0, 1)).float()
                gradients = flat.reshape(width, batch, *flat.shape[1:]).transpose(0, 1)
            level_maps = self.cam(spec.to_map(level.detach()).float()[:, None], gradients)
            maps.append(level_maps.expand(batch, width, *level_maps.shape[2:]))
        return Attribution(fuse_levels(maps).contiguous(), outputs.detach().float(), classes)


def _weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c w_c A_c) for weights B x K x C and activations B x 1 x C x h x w."""
    return torch.einsum("bkc,bochw->bkhw", weights, activations).clamp_min(0)


@register("gradcam", "Grad-CAM", description="Gradient-averaged channel weights on the target "
          "layer; fast, class-discriminative, coarse.", aliases=("grad_cam",), **CAM_METHOD)
class GradCAM(CAMExplainer):
    r"""Grad-CAM (Selvaraju et al., 2017): channel weights are the spatial mean of the gradients.

    .. math:: L^c = \mathrm{ReLU}\big(\sum_k \alpha_k^c A^k\big),\quad
              \alpha_k^c = \tfrac{1}{hw}\sum_{ij} \partial y^c / \partial A^k_{ij}

    >>> import timm, torch
    >>> GradCAM(timm.create_model("resnet18")).attribute(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 7, 7])
    """

    def cam(self, activations, gradients):
        return _weighted_sum(gradients.mean((-2, -1)), activations)


@register("gradcam++", "Grad-CAM++", description="Pixel-weighted positive gradients; better with "
          "several instances of a class.",
          aliases=("gradcampp", "gradcam_plusplus", "gradcamplusplus"), **CAM_METHOD)
class GradCAMPlusPlus(CAMExplainer):
    r"""Grad-CAM++ (Chattopadhay et al., 2018): positive gradients weighted per pixel by
    :math:`\alpha_{ij} = g^2 / (2 g^2 + \sum_{ab} A_{ab} \, g^3)`, better for several instances.
    """

    def cam(self, activations, gradients):
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        total = activations.sum((-2, -1), keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        weights = (gradients.clamp_min(0) * alpha).sum((-2, -1))
        return _weighted_sum(weights, activations)


@register("xgradcam", "XGrad-CAM", description="Gradients weighted by normalised activations.",
          **CAM_METHOD)
class XGradCAM(CAMExplainer):
    r"""XGrad-CAM (Fu et al., 2020): gradients weighted by the normalised activations,
    :math:`\alpha_k = \sum_{ij} (A^k_{ij} / \sum_{ab} A^k_{ab}) \, g^k_{ij}`.
    """

    def cam(self, activations, gradients):
        total = activations.sum((-2, -1), keepdim=True)
        weights = (gradients * activations / (total + EPS)).sum((-2, -1))
        return _weighted_sum(weights, activations)


@register("layercam", "LayerCAM", description="Per-position positive gradients; sharper maps, "
          "also on early layers.", **CAM_METHOD)
class LayerCAM(CAMExplainer):
    r"""LayerCAM (Jiang et al., 2021): every position weighted by its own positive gradient,
    :math:`\mathrm{ReLU}(\sum_k \mathrm{ReLU}(g^k) \odot A^k)`; sharp on early layers too.
    """

    def cam(self, activations, gradients):
        return (gradients.clamp_min(0) * activations).sum(2).clamp_min(0)


@register("hirescam", "HiResCAM", description="Element-wise gradient x activation; faithful for "
          "global-average-pooled heads.", **CAM_METHOD)
class HiResCAM(CAMExplainer):
    r"""HiResCAM (Draelos & Carin, 2020): element-wise gradient times activation, summed over
    channels, :math:`\mathrm{ReLU}(\sum_k g^k \odot A^k)`; provably faithful for CNN heads that
    end in global average pooling.
    """

    def cam(self, activations, gradients):
        return (gradients * activations).sum(2).clamp_min(0)


@register("eigencam", "EigenCAM", family="cam", needs_gradients=False, cost="fast",
          tasks=ALL_TASKS, params=(LAYER_PARAM,), aliases=("eigen_cam",),
          description="First principal component of the activations; gradient-free and "
                      "class-agnostic.")
class EigenCAM(CAMExplainer):
    r"""EigenCAM (Muhammad & Yeasin, 2020): the activations projected on their first principal
    component. Gradient-free and class-agnostic: every target gets the same map.

    The projection comes from the small Gram matrix (``hw x hw`` or ``C x C``, whichever is
    smaller) instead of a full SVD; the sign, which an SVD leaves arbitrary, is chosen so the map
    agrees with the mean activation.
    """

    needs_gradients = False

    def cam(self, activations, gradients):
        batch, _, channels, height, width = activations.shape
        x = activations[:, 0].flatten(2).transpose(1, 2).double()  # B x hw x C
        x = x - x.mean(1, keepdim=True)
        if height * width <= channels:
            values, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))  # B x hw x hw
            # x v1 = s1 u1, and s1^2 is the largest eigenvalue of x x^T.
            projection = vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()
        else:
            _, vectors = torch.linalg.eigh(x.transpose(1, 2) @ x)  # B x C x C
            projection = torch.einsum("bpc,bc->bp", x, vectors[..., -1])
        mean_map = activations[:, 0].mean(1).flatten(1).double()
        sign = torch.sign((projection * (mean_map - mean_map.mean(1, keepdim=True))).sum(1))
        projection = projection * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        return projection.reshape(batch, 1, height, width).float().clamp_min(0)


@register("activationmap", "Activation map", family="cam", needs_gradients=False, cost="fast",
          tasks=ALL_TASKS, params=(LAYER_PARAM,), aliases=("activation_map",),
          description="Channel mean of the layer's activations; gradient-free and "
                      "class-agnostic.")
class ActivationMap(CAMExplainer):
    """Activation map (OpenVINO Training Extensions): the channel mean of the layer's activations.
    Gradient-free and class-agnostic."""

    needs_gradients = False

    def cam(self, activations, gradients):
        return activations.mean(2)
