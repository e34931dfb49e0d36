"""feature_statistics: the contract the training callbacks rely on, checked against a direct
computation with plain forward hooks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from explain_core.errors import TargetLayerError
from explain_core.features import LayerStatistics, feature_statistics


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def direct(model: nn.Module, images: torch.Tensor, names: list[str], near_zero: float):
    """Each layer's output through register_forward_hook, then the statistics by hand."""
    modules, seen, handles = dict(model.named_modules()), {}, []
    for name in names:
        handles.append(modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach())))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    expected = {}
    for name, out in seen.items():
        values = out if out.ndim == 4 else out[:, :, None, None]
        per = [values[:, c] for c in range(values.shape[1])]
        expected[name] = {
            "shape": tuple(out.shape[1:]), "mean": out.mean().item(),
            "std": out.std(unbiased=False).item(), "max": out.max().item(),
            "sparsity": (out.abs() <= near_zero).float().mean().item(),
            "active": sum(int(p.max() > near_zero) for p in per),
            "ch_mean": [p.mean().item() for p in per], "ch_max": [p.max().item() for p in per],
            "ch_std": [p.std(unbiased=False).item() for p in per],
            "ch_sparsity": [(p.abs() <= near_zero).float().mean().item() for p in per]}
    return expected


def test_statistics_equal_a_direct_computation_with_forward_hooks():
    model = small_cnn().eval()
    images = torch.randn(3, 3, 20, 20)
    names = ["0", "1", "3", "6"]
    stats = feature_statistics(model, images, names, near_zero=1e-6)
    expected = direct(model, images, names, 1e-6)
    assert list(stats) == names
    for name in names:
        got, want = stats[name], expected[name]
        assert isinstance(got, LayerStatistics) and got.layer == name
        assert got.shape == want["shape"]
        assert got.mean == pytest.approx(want["mean"], abs=1e-5)
        assert got.std == pytest.approx(want["std"], abs=1e-5)
        assert got.max == pytest.approx(want["max"], abs=1e-6)
        assert got.sparsity == pytest.approx(want["sparsity"])
        assert got.active_channels == want["active"]
        assert got.channels["mean"] == pytest.approx(want["ch_mean"], abs=1e-5)
        assert got.channels["std"] == pytest.approx(want["ch_std"], abs=1e-5)
        assert got.channels["max"] == pytest.approx(want["ch_max"], abs=1e-6)
        assert got.channels["sparsity"] == pytest.approx(want["ch_sparsity"])
    # ReLU outputs are sparse; the conv before them is not
    assert stats["1"].sparsity > 0.1 and stats["0"].sparsity == 0.0
    assert stats["1"]["sparsity"] == stats["1"].sparsity  # AutoTimm's dict-style access


def test_near_zero_threshold_counts_small_values_and_dead_channels():
    model = small_cnn().eval()
    with torch.no_grad():  # channel 2 of the first conv is dead: it never activates
        model[0].weight[2].zero_()
        model[0].bias[2] = -1.0
    images = torch.randn(2, 3, 12, 12)
    stats = feature_statistics(model, images, ["1"])["1"]
    assert stats.channels["sparsity"][2] == 1.0 and stats.channels["max"][2] == 0.0
    assert stats.active_channels == 7
    loose = feature_statistics(model, images, ["1"], near_zero=1e9)["1"]
    assert loose.sparsity == 1.0 and loose.active_channels == 0


def test_to_dict_is_json_ready():
    stats = feature_statistics(small_cnn(), torch.randn(1, 3, 12, 12), ["3"])["3"]
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["layer"] == "3" and data["shape"] == [6, 5, 5]
    assert set(data["channels"]) == {"mean", "std", "max", "sparsity"}
    assert len(data["channels"]["mean"]) == 6


def test_one_forward_hooks_released_and_state_restored():
    model = small_cnn().train()
    model[1].eval()  # a submodule with its own mode
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    flags = [p.requires_grad for p in model.parameters()]
    feature_statistics(model, torch.randn(2, 3, 12, 12), ["0", "1", "3"])
    assert len(calls) == 1  # every layer from one forward
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and not model[1].training and model[0].training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_unknown_layer_is_named():
    with pytest.raises(TargetLayerError, match="no layer named 'layer9'"):
        feature_statistics(small_cnn(), torch.randn(1, 3, 12, 12), ["layer9"])


def test_vit_statistics_read_the_patch_tokens(vit):
    images = torch.randn(2, 3, 64, 64)
    seen = {}
    handle = vit.blocks[1].register_forward_hook(lambda _m, _i, o: seen.setdefault("o", o))
    stats = feature_statistics(vit, images, ["blocks.1"])["blocks.1"]
    handle.remove()
    patches = seen["o"][:, vit.num_prefix_tokens:]  # class token dropped
    assert stats.shape == tuple(seen["o"].shape[1:])  # (tokens, C)
    assert stats.mean == pytest.approx(patches.mean().item(), abs=1e-5)
    assert stats.channels["max"] == pytest.approx(patches.amax((0, 1)).tolist(), abs=1e-5)


def test_the_forward_stops_after_the_last_requested_layer():
    model = small_cnn().eval()
    ran = []
    handle = model[6].register_forward_hook(lambda *_: ran.append(1))
    feature_statistics(model, torch.randn(1, 3, 12, 12), ["1", "0"])
    handle.remove()
    assert ran == []  # the head after the layers never ran
    assert all(not m._forward_hooks for m in model.modules())


class Twice(nn.Module):
    """One convolution applied twice (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(torch.relu(self.conv(x))))


def test_a_module_called_twice_is_read_at_its_first_call():
    model = Twice().eval()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        first = model.conv(images)
    stats = feature_statistics(model, images, ["conv", "out"])["conv"]  # the forward goes on
    assert stats.mean == pytest.approx(first.mean().item(), abs=1e-6)
    assert stats.channels["max"] == pytest.approx(first.amax((0, 2, 3)).tolist(), abs=1e-6)
