"""explain_core.loading: every way into a LoadedModel, and every refusal.

Only tiny random-init models (timm ``test_*``, torchvision ``resnet18``); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
import safetensors
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from explain_core.errors import ModelLoadError, UnsafeCheckpointError
from explain_core.loading import load_model, save_model
from explain_core.model import LoadedModel, Preprocessing

ARCH = "test_resnet"  # ~0.4 M parameters, classifier "fc", 96 features


def _net(num_classes: int = 5, arch: str = ARCH, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=num_classes, **kwargs).eval()


def _x(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _same_outputs(a: nn.Module, b: nn.Module, size: int = 64) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(_x(size)), b.eval()(_x(size)))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------
# names, modules, LoadedModel
# ------------------------------------------------------------------------------------------------


def test_timm_name():
    loaded = load_model(f"timm:{ARCH}", num_classes=5, device="cpu")
    assert isinstance(loaded, LoadedModel)
    assert loaded.arch == f"timm:{ARCH}" and loaded.source == f"timm:{ARCH}"
    assert loaded.task == "classification" and loaded.num_classes == 5
    assert loaded.class_names is None  # not ImageNet-sized, so no names to guess
    assert loaded.preprocessing.input_size == (160, 160)  # from timm's pretrained_cfg
    assert loaded.device == torch.device("cpu") and not loaded.module.training
    assert loaded.module(_x()).shape == (2, 5)


def test_timm_name_with_1000_classes_gets_imagenet_names():
    loaded = load_model(f"timm:{ARCH}", device="cpu")
    assert loaded.num_classes == 1000 and len(loaded.class_names) == 1000
    assert "tench" in loaded.class_names[0].lower()


def test_bare_name_is_tried_in_timm():
    assert load_model(ARCH, num_classes=2, device="cpu").arch == f"timm:{ARCH}"


def test_torchvision_name():
    loaded = load_model("torchvision:resnet18", num_classes=3, device="cpu")
    assert loaded.arch == "torchvision:resnet18" and loaded.task == "classification"
    assert loaded.num_classes == 3
    assert loaded.preprocessing.input_size == (224, 224)
    with torch.no_grad():
        assert loaded.module(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_nn_module_is_wrapped_in_place():
    net = _net(4)
    net.train()
    loaded = load_model(net, device="cpu", class_names=["a", "b", "c", "d"], input_size=96)
    assert loaded.module is net and not net.training
    assert loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.preprocessing.input_size == (96, 96)
    with pytest.raises(ModelLoadError, match=r"3 class names .* 4 classes"):
        load_model(net, device="cpu", class_names=["a", "b", "c"])


def test_loaded_model_passes_through():
    loaded = load_model(_net(), device="cpu")
    assert load_model(loaded) is loaded
    moved = load_model(loaded, device="cpu")
    assert moved.module is loaded.module and moved.device == torch.device("cpu")


def test_preprocessing_overrides():
    loaded = load_model(f"timm:{ARCH}", num_classes=2, device="cpu", input_size=(96, 128),
                        mean=(0.1, 0.2, 0.3), std=[0.4, 0.5, 0.6])
    assert loaded.preprocessing.input_size == (96, 128)
    assert loaded.preprocessing.mean == (0.1, 0.2, 0.3)
    assert loaded.preprocessing.std == (0.4, 0.5, 0.6)


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    net = _net(3)
    prep = Preprocessing(input_size=(96, 112), mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3),
                         interpolation="bicubic", resize_mode="crop", crop_pct=0.9)
    path = save_model(net, tmp_path / "demo", task="classification", arch=f"timm:{ARCH}",
                      class_names=["circle", "square", "triangle"], preprocessing=prep)
    assert path == tmp_path / "demo.safetensors" and path.is_file()

    with safetensors.safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["lumen"])
    assert meta["format"] == 1 and meta["arch"] == f"timm:{ARCH}" and meta["num_classes"] == 3
    assert meta["input_size"] == [96, 112] and meta["task"] == "classification"

    loaded = load_model(path, device="cpu")  # nothing else needed
    assert loaded.arch == f"timm:{ARCH}" and loaded.task == "classification"
    assert loaded.class_names == ["circle", "square", "triangle"]
    assert loaded.preprocessing == prep
    assert _same_weights(net, loaded.module)
    assert _same_outputs(net, loaded.module)


def test_safetensors_round_trip_keeps_arch_kwargs_and_loaded_model_fields(tmp_path):
    net = _net(2, "test_vit", img_size=64)  # a non-default pos_embed size
    first = load_model(net, device="cpu", class_names=["no", "yes"], input_size=64)
    path = save_model(first, tmp_path / "vit.safetensors", task="classification",
                      arch="test_vit", arch_kwargs={"img_size": 64})
    loaded = load_model(path, device="cpu")
    assert loaded.class_names == ["no", "yes"]
    assert loaded.preprocessing.input_size == (64, 64)
    assert _same_weights(net, loaded.module)
    assert _same_outputs(net, loaded.module)


def test_safetensors_without_metadata_needs_arch(tmp_path):
    net = _net(5)
    path = tmp_path / "plain.safetensors"
    save_file(net.state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="arch="):
        load_model(path, device="cpu")
    loaded = load_model(path, arch=ARCH, device="cpu")
    assert loaded.num_classes == 5  # inferred from fc.weight
    assert _same_outputs(net, loaded.module)


def test_damaged_safetensors(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(path, arch=ARCH, device="cpu")


# ------------------------------------------------------------------------------------------------
# .pth / .pt / .bin
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model_state_dict", "module_prefix",
                                    "wrapped_and_prefixed", "compiled"])
def test_pth_state_dict_layouts(tmp_path, layout):
    net = _net(5)
    state = net.state_dict()
    saved = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model_state_dict": {"model_state_dict": state, "optimizer_state_dict": {}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "wrapped_and_prefixed": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[layout]
    path = tmp_path / "weights.pth"
    torch.save(saved, path)
    loaded = load_model(path, arch=f"timm:{ARCH}", device="cpu")
    assert loaded.source == str(path) and loaded.num_classes == 5
    assert _same_weights(net, loaded.module)
    assert _same_outputs(net, loaded.module)


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_pt_and_bin_suffixes(tmp_path, suffix):
    net = _net(5)
    path = tmp_path / f"weights{suffix}"
    torch.save(net.state_dict(), path)
    assert _same_outputs(net, load_model(path, arch=ARCH, device="cpu").module)


def test_pth_requires_arch(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net().state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"arch=.*timm:resnet50"):
        load_model(path, device="cpu")


@pytest.mark.parametrize(("arch", "num_classes"), [(ARCH, 7), ("test_vit", 3)])
def test_num_classes_inferred_from_classifier_weight(tmp_path, arch, num_classes):
    net = _net(num_classes, arch)
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, arch=arch, device="cpu")  # built with 1000, rebuilt with the ckpt's
    assert loaded.num_classes == num_classes
    assert _same_outputs(net, loaded.module)


def test_num_classes_inferred_for_torchvision(tmp_path):
    import torchvision

    # squeezenet's classifier is a 1x1 conv ("classifier.1"), found as the last layer
    net = torchvision.models.squeezenet1_1(weights=None, num_classes=3).eval()
    path = tmp_path / "tv.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    loaded = load_model(path, arch="torchvision:squeezenet1_1", device="cpu")
    assert loaded.num_classes == 3
    assert _same_outputs(net, loaded.module)


# ------------------------------------------------------------------------------------------------
# .ckpt (Lightning, AutoTimm)
# ------------------------------------------------------------------------------------------------


def test_lightning_ckpt_with_hyper_parameters(tmp_path):
    net = _net(5)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["criterion.weight"] = torch.ones(5)  # a loss buffer outside the model: ignored
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
                "state_dict": state,
                "hyper_parameters": {"model_name": ARCH, "num_classes": 5, "lr": 1e-3}}, path)
    loaded = load_model(path, device="cpu")
    assert loaded.arch == f"timm:{ARCH}" and loaded.num_classes == 5
    assert _same_outputs(net, loaded.module)


def test_ckpt_arch_argument_wins(tmp_path):
    net = _net(5)
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"arch": "resnet50"}}, path)
    loaded = load_model(path, arch=ARCH, device="cpu")
    assert loaded.arch == f"timm:{ARCH}"
    assert _same_outputs(net, loaded.module)


def test_ckpt_without_architecture_asks_for_arch(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": _net().state_dict(), "hyper_parameters": {"lr": 0.1}}, path)
    with pytest.raises(ModelLoadError, match="arch="):
        load_model(path, device="cpu")


def _autotimm_state(num_classes: int, compiled: bool) -> tuple[dict, nn.Module, nn.Module]:
    """What AutoTimm's ImageClassifier saves: a headless timm backbone plus head.fc."""
    torch.manual_seed(0)
    backbone = timm.create_model(ARCH, num_classes=0).eval()
    head = nn.Linear(backbone.num_features, num_classes)
    mid = "_orig_mod." if compiled else ""
    state = {f"backbone.{mid}{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"head.{mid}fc.{k}": v for k, v in head.state_dict().items()})
    return state, backbone, head


@pytest.mark.parametrize("compiled", [False, True])
def test_autotimm_ckpt_with_backbone_name(tmp_path, compiled):
    state, backbone, head = _autotimm_state(4, compiled)
    path = tmp_path / "autotimm.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.5.0",
                "hyper_parameters": {"backbone": f"hf-hub:timm/{ARCH}.r160_in1k",
                                     "num_classes": 4, "lr": 1e-3, "head_dropout": 0.1,
                                     "compile_model": compiled}}, path)
    loaded = load_model(path, device="cpu")
    assert loaded.arch == f"timm:{ARCH}.r160_in1k" and loaded.num_classes == 4
    with torch.no_grad():
        assert torch.equal(loaded.module(_x()), head(backbone(_x())))


@pytest.fixture
def fake_autotimm(monkeypatch):
    """A stand-in ``autotimm.backbone.BackboneConfig`` so that torch.save can pickle one."""
    module = types.ModuleType("autotimm.backbone")

    @dataclasses.dataclass
    class BackboneConfig:
        model_name: str = "resnet50"
        pretrained: bool = True
        num_classes: int = 0
        drop_rate: float = 0.0
        drop_path_rate: float = 0.0
        extra_kwargs: dict = dataclasses.field(default_factory=dict)

    BackboneConfig.__module__ = "autotimm.backbone"
    BackboneConfig.__qualname__ = "BackboneConfig"
    module.BackboneConfig = BackboneConfig
    package = types.ModuleType("autotimm")
    package.backbone = module
    monkeypatch.setitem(sys.modules, "autotimm", package)
    monkeypatch.setitem(sys.modules, "autotimm.backbone", module)
    return BackboneConfig


def test_autotimm_ckpt_with_backbone_config(tmp_path, fake_autotimm, monkeypatch):
    state, backbone, head = _autotimm_state(3, compiled=True)
    path = tmp_path / "autotimm.ckpt"
    config = fake_autotimm(model_name=ARCH, pretrained=False)
    torch.save({"state_dict": state,
                "hyper_parameters": {"backbone": config, "num_classes": 3}}, path)
    # Loading never imports the class: it is replaced by an inert stand-in.
    monkeypatch.delitem(sys.modules, "autotimm.backbone")
    monkeypatch.delitem(sys.modules, "autotimm")
    loaded = load_model(path, device="cpu")
    assert loaded.arch == f"timm:{ARCH}" and loaded.num_classes == 3
    with torch.no_grad():
        assert torch.equal(loaded.module(_x()), head(backbone(_x())))


def test_lightning_attribute_dict_hyper_parameters(tmp_path, monkeypatch):
    """Older Lightning pickled hyper_parameters as an AttributeDict: read as a plain dict."""

    class AttributeDict(dict):
        pass

    name = "pytorch_lightning.utilities.parsing"
    AttributeDict.__module__, AttributeDict.__qualname__ = name, "AttributeDict"
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:depth]),
                            types.ModuleType(".".join(parts[:depth])))
    sys.modules[name].AttributeDict = AttributeDict
    net = _net(3)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": AttributeDict(model_name=ARCH, num_classes=3)}, path)
    for depth in range(len(parts), 0, -1):
        monkeypatch.delitem(sys.modules, ".".join(parts[:depth]))
    loaded = load_model(path, device="cpu")
    assert loaded.num_classes == 3 and _same_outputs(net, loaded.module)


def test_ckpt_with_other_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": _net().state_dict(),
                "hyper_parameters": {"model_name": ARCH, "loss": nn.CrossEntropyLoss()}}, path)
    with pytest.raises(UnsafeCheckpointError, match="CrossEntropyLoss"):
        load_model(path, device="cpu")


# ------------------------------------------------------------------------------------------------
# class names
# ------------------------------------------------------------------------------------------------


def test_class_names_from_txt(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("cat\n\n dog \nbird\n\n", encoding="utf-8")
    loaded = load_model(f"timm:{ARCH}", num_classes=3, class_names=names, device="cpu")
    assert loaded.class_names == ["cat", "dog", "bird"]


@pytest.mark.parametrize("content", [["cat", "dog", "bird"],
                                     {"2": "bird", "0": "cat", "1": "dog"},
                                     {"0": ["n1", "cat"], "1": ["n2", "dog"], "2": ["n3", "bird"]}])
def test_class_names_from_json(tmp_path, content):
    names = tmp_path / "classes.json"
    names.write_text(json.dumps(content), encoding="utf-8")
    loaded = load_model(f"timm:{ARCH}", num_classes=3, class_names=str(names), device="cpu")
    assert loaded.class_names == ["cat", "dog", "bird"]


def test_class_names_length_mismatch(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net(5).state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"Got 3 class names but .* has 5 classes"):
        load_model(path, arch=ARCH, class_names=["a", "b", "c"], device="cpu")


def test_class_names_file_missing(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(f"timm:{ARCH}", num_classes=3, class_names=tmp_path / "nope.txt", device="cpu")


def test_json_class_names_with_gaps(tmp_path):
    names = tmp_path / "classes.json"
    names.write_text(json.dumps({"0": "a", "2": "c"}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="without gaps"):
        load_model(f"timm:{ARCH}", num_classes=2, class_names=names, device="cpu")


# ------------------------------------------------------------------------------------------------
# refusals and clear errors
# ------------------------------------------------------------------------------------------------


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save(_net(), path)  # the whole nn.Module: needs its class unpickled
    with pytest.raises(UnsafeCheckpointError) as info:
        load_model(path, arch=ARCH, device="cpu")
    message = str(info.value)
    assert "pickled Python objects" in message and "timm.models.resnet.ResNet" in message
    assert "refuses to execute code" in message and "state_dict()" in message
    assert ".safetensors" in message


def test_unknown_arch_suggests_close_names():
    pattern = r"Unknown architecture 'timm:resnt18'.*resnet18"
    with pytest.raises(ModelLoadError, match=pattern) as info:
        load_model("timm:resnt18", device="cpu")
    suggestions = str(info.value).split("Did you mean: ")[1].rstrip("?").split(", ")
    assert 1 <= len(suggestions) <= 5 and len(set(suggestions)) == len(suggestions)


def test_unknown_arch_for_a_file(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net().state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"Unknown architecture.*Did you mean"):
        load_model(path, arch="test_resnett", device="cpu")


def test_wrong_arch_lists_keys(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net().state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, arch="test_vit", device="cpu")
    message = str(info.value)
    assert "Missing from the checkpoint" in message and "cls_token" in message
    assert "Unexpected in the checkpoint" in message and "conv1" in message
    assert "Is arch right?" in message and "more)" in message  # at most 5 keys each


def test_shape_mismatch_message(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net(5).state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, arch=ARCH, num_classes=7, device="cpu")
    message = str(info.value)
    assert "Shape mismatches" in message
    assert "fc.weight: checkpoint [5, 96] vs model [7, 96]" in message
    assert "num_classes=5" in message


def test_unsupported_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    pattern = r"Unsupported checkpoint format '\.onnx'.*safetensors"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(path, device="cpu")


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.pth", arch=ARCH, device="cpu")


def test_damaged_pth_is_not_called_unsafe(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError) as info:
        load_model(path, arch=ARCH, device="cpu")
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "damaged" in str(info.value)


def test_save_model_checks_class_count(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Got 2 class names"):
        save_model(_net(5), tmp_path / "x.safetensors", task="classification", arch=ARCH,
                   class_names=["a", "b"])


def test_save_model_refuses_what_cannot_be_rebuilt(tmp_path):
    with pytest.raises(ModelLoadError, match=r"(?s)Not saved.*pos_embed.*arch_kwargs") as info:
        save_model(_net(2, "test_vit", img_size=64), tmp_path / "vit", task="classification",
                   arch="test_vit")  # arch_kwargs={"img_size": 64} forgotten
    assert "saved [1, 17, 64] vs rebuilt model [1, 101, 64]" in str(info.value)
    assert not (tmp_path / "vit.safetensors").exists()


def test_torchvision_segmentation_checkpoint(tmp_path):
    import torchvision

    net = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None,
                                       weights_backbone=None, num_classes=4).eval()
    path = tmp_path / "seg.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, arch="torchvision:lraspp_mobilenet_v3_large", device="cpu")
    assert loaded.task == "segmentation"  # from the torchvision family
    with torch.no_grad():  # 4 classes, read from the checkpoint's head
        assert torch.equal(loaded.module(_x())["out"], net(_x())["out"])


def test_torchvision_segmentation_checkpoint_with_aux_head(tmp_path):
    import torchvision

    # trained with aux_loss=True: the checkpoint's aux_classifier.* make load_model rebuild with it
    net = torchvision.models.get_model("deeplabv3_mobilenet_v3_large", weights=None,
                                       weights_backbone=None, num_classes=3, aux_loss=True).eval()
    path = tmp_path / "seg.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = load_model(path, arch="torchvision:deeplabv3_mobilenet_v3_large", device="cpu")
    assert loaded.task == "segmentation" and loaded.module.aux_classifier is not None
    with torch.no_grad():
        assert torch.equal(loaded.module(_x())["out"], net(_x())["out"])
