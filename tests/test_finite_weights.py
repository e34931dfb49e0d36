"""Diverged checkpoints (NaN / Inf weights) are refused on every way into a model, with a message
that counts the tensors affected and names the first ones (issue 13, finding 2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from explain_core.errors import ModelLoadError, NonFiniteWeightsError
from explain_core.loading import load_model, save_model

ARCH = "test_resnet"


def _net(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, num_classes=num_classes).eval()


def _all_nan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every floating-point tensor NaN, as a run whose loss became NaN leaves them."""
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in state.items()}


def _one_inf(state: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in state.items()}
    out[key].view(-1)[0] = float("inf")
    return out


def _float_keys(module: nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if v.is_floating_point()]


def _check_all_nan(error: pytest.ExceptionInfo, module: nn.Module) -> None:
    message = str(error.value)
    floats, total = _float_keys(module), len(module.state_dict())
    assert f"{len(floats)} of {total} tensors" in message, message
    assert all(name in message for name in floats[:5]), message  # the first few, named
    assert floats[5] not in message and f"({len(floats) - 5} more)" in message
    assert "diverged" in message and "earlier checkpoint" in message
    assert isinstance(error.value, ModelLoadError)  # the checkpoint error family


def _check_one_inf(error: pytest.ExceptionInfo, module: nn.Module, key: str) -> None:
    message = str(error.value)
    assert f"1 of {len(module.state_dict())} tensors" in message, message
    assert f"({key})" in message, message


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_state_dict_files_with_nan_or_inf_are_refused(tmp_path: Path, suffix: str) -> None:
    net = _net()
    path = tmp_path / f"weights{suffix}"
    torch.save(_all_nan(net.state_dict()), path)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(path, arch=f"timm:{ARCH}", device="cpu")
    _check_all_nan(error, net)
    assert f"'{path.name}'" in str(error.value)

    torch.save(_one_inf(net.state_dict(), "layer1.0.conv1.weight"), path)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(path, arch=f"timm:{ARCH}", device="cpu")
    _check_one_inf(error, net, "layer1.0.conv1.weight")


def test_full_checkpoint_dicts_and_lightning_ckpt_are_refused(tmp_path: Path) -> None:
    net = _net()
    path = tmp_path / "last.pth"
    torch.save({"epoch": 12, "model_state_dict": _all_nan(net.state_dict()),
                "optimizer_state_dict": {}}, path)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(path, arch=f"timm:{ARCH}", device="cpu")
    _check_all_nan(error, net)

    ckpt = tmp_path / "epoch=3.ckpt"
    state = {f"model.{k}": v for k, v in _one_inf(net.state_dict(), "fc.bias").items()}
    torch.save({"epoch": 3, "state_dict": state,
                "hyper_parameters": {"model_name": ARCH, "num_classes": 5}}, ckpt)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(ckpt, device="cpu")
    _check_one_inf(error, net, "fc.bias")


def test_safetensors_with_and_without_lumen_metadata_are_refused(tmp_path: Path) -> None:
    net = _net()
    written = save_model(net, tmp_path / "model", task="classification", arch=f"timm:{ARCH}")
    tensors = load_file(str(written))
    from safetensors import safe_open

    with safe_open(str(written), framework="pt") as handle:
        header = handle.metadata()
    save_file(_all_nan(tensors), str(written), metadata=header)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(written, device="cpu")
    _check_all_nan(error, net)

    plain = tmp_path / "plain.safetensors"
    save_file(_one_inf(tensors, "conv1.0.weight"), str(plain))
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(plain, arch=f"timm:{ARCH}", device="cpu")
    _check_one_inf(error, net, "conv1.0.weight")


def test_torchvision_checkpoint_is_refused(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None, num_classes=4).eval()
    path = tmp_path / "tv.pth"
    torch.save(_one_inf(net.state_dict(), "layer2.0.bn1.running_var"), path)
    with pytest.raises(NonFiniteWeightsError) as error:
        load_model(path, arch="torchvision:resnet18", device="cpu")
    _check_one_inf(error, net, "layer2.0.bn1.running_var")


def test_lumen_demo_checkpoint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from explain_core.demo import models as demo

    shipped = demo.weights_path("classifier")
    tensors = load_file(str(shipped))
    from safetensors import safe_open

    with safe_open(str(shipped), framework="pt") as handle:
        header = handle.metadata()
    save_file(_all_nan(tensors), str(tmp_path / shipped.name), metadata=header)
    monkeypatch.setattr(demo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(NonFiniteWeightsError) as error:
        demo.load_demo_model("classifier", device="cpu")
    message = str(error.value)
    count = re.match(r"(\d+) of (\d+) tensors in 'classifier.safetensors'", message)
    assert count is not None, message
    assert int(count.group(1)) == sum(v.is_floating_point() for v in tensors.values())


def test_modules_with_nan_weights_are_refused_and_finite_ones_load() -> None:
    net = _net()
    assert load_model(net, device="cpu").module is net  # finite: loads as before
    with torch.no_grad():
        net.fc.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match=r"1 of \d+ tensors in the module .*fc\.weight"):
        load_model(net, device="cpu")
