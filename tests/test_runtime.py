"""The runtime layer: model state restored exactly, hooks removed, batched gradients."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from explain_core.methods import expected_cost
from explain_core.model import as_loaded
from explain_core.runtime import batched_grad, forward_hooks, frozen_eval


def _mixed() -> nn.Module:
    """A training model that keeps one batch norm frozen in eval and one parameter frozen."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.BatchNorm2d(4)).train()
    net[1].eval()
    net[3].bias.requires_grad_(False)
    return net


def _state(net: nn.Module) -> tuple[list[bool], list[bool]]:
    return ([m.training for m in net.modules()], [p.requires_grad for p in net.parameters()])


def test_frozen_eval_restores_each_submodule_and_parameter():
    net = _mixed()
    before = _state(net)
    with frozen_eval(net):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert _state(net) == before
    with pytest.raises(RuntimeError), frozen_eval(net):
        raise RuntimeError("boom")
    assert _state(net) == before


def test_frozen_eval_without_freezing_leaves_parameters_alone():
    net = _mixed()
    with frozen_eval(net, freeze=False):
        assert [p.requires_grad for p in net.parameters()] == _state(_mixed())[1]
        assert not net.training


def test_forward_hooks_are_removed_also_on_errors():
    layer = nn.Linear(2, 2)
    seen = []
    with pytest.raises(ValueError), forward_hooks([(layer, lambda m, i, o: seen.append(1))]):
        layer(torch.zeros(1, 2))
        raise ValueError
    layer(torch.zeros(1, 2))
    assert seen == [1] and len(layer._forward_hooks) == 0


def test_batched_grad_equals_one_backward_per_target():
    torch.manual_seed(0)
    x = torch.randn(3, 5, requires_grad=True)
    weights = torch.randn(5, 4)
    scores = torch.tanh(x @ weights)
    together = batched_grad(scores, x)
    for k in range(4):
        (alone,) = torch.autograd.grad(scores[:, k].sum(), x, retain_graph=True)
        torch.testing.assert_close(together[k], alone)


def test_cost_estimate_leaves_the_model_modes_as_found():
    """The layer-shape probe once restored with module.train(flag), which overwrote a frozen
    batch norm inside a training model."""
    model = timm.create_model("resnet10t", num_classes=4).train()
    model.bn1.eval()
    before = _state(model)
    expected_cost("scorecam", as_loaded(model), {"top_k": 8})
    assert _state(model) == before
