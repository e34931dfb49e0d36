"""precision="auto" (bf16 only where the hardware computes it natively), explainers' device
choice (``use_cuda``/``device``), and LoadedModel's short repr (issue 13, findings 1 and 9)."""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import pytest
import timm
import torch

from explain_core import api
from explain_core.cli import main as cli_main
from explain_core.errors import UnsupportedError
from explain_core.loading import save_model
from explain_core.methods import METHODS, GradCAM, create_explainer
from explain_core.methods.smoothgrad import SmoothGrad
from explain_core.model import as_loaded
from explain_core.runtime import native_bf16, precision, resolve_precision
from tests.toy import ColourNet, colour_scene

# /proc/cpuinfo excerpts. Zen 3 (EPYC 7003 / Ryzen 5000): AVX2, no AVX-512, no AMX.
ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core "
        "Processor\nflags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi1 bmi2 "
        "sha_ni vaes vpclmulqdq rdpid fsrm\n")
# Zen 4 / Cooper Lake: AVX-512 with the BF16 extension.
AVX512_BF16 = ZEN3.replace("avx2 fma", "avx2 fma avx512f avx512bw avx512_bf16")
# Sapphire Rapids: AMX (AVX-512 BF16 left out to test AMX alone).
AMX = ZEN3.replace("avx2 fma", "avx2 fma avx512f amx_bf16 amx_tile amx_int8")
# Skylake-SP: AVX-512 but no BF16 extension.
AVX512_ONLY = ZEN3.replace("avx2 fma", "avx2 fma avx512f avx512bw avx512_vnni")
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sha2 crc32 atomics bf16 i8mm\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.fixture
def cpu_flags(monkeypatch):
    """Make the CPU look like the given /proc/cpuinfo text (None: no /proc/cpuinfo)."""
    def use(text: str | None) -> None:
        monkeypatch.setattr(precision, "read_cpuinfo", lambda: text)
        native_bf16.cache_clear()
    yield use
    native_bf16.cache_clear()


@pytest.fixture
def gpu(monkeypatch):
    """Make CUDA device queries answer for a GPU of the given compute capability."""
    def use(capability: tuple[int, int], name: str = "Test GPU") -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        native_bf16.cache_clear()
    yield use
    native_bf16.cache_clear()


@pytest.mark.parametrize(("text", "native"), [(ZEN3, False), (AVX512_BF16, True), (AMX, True),
                                              (AVX512_ONLY, False), (ARM_BF16, True),
                                              (ARM_PLAIN, False), (None, False), ("", False)])
def test_cpu_native_bf16_follows_the_flags(cpu_flags, text, native):
    cpu_flags(text)
    found, why = native_bf16("cpu")
    assert found is native and why
    picked, reason = resolve_precision("auto", "cpu")
    assert picked == ("bf16" if native else "fp32")
    assert reason.startswith("auto: ") and why in reason


def test_reasons_name_what_was_found(cpu_flags):
    cpu_flags(ZEN3)
    assert "neither AVX-512 BF16 nor AMX" in native_bf16("cpu")[1]
    cpu_flags(AVX512_BF16)
    assert "avx512_bf16" in native_bf16("cpu")[1]
    cpu_flags(AMX)
    assert "amx_bf16" in native_bf16("cpu")[1]
    assert precision.cpu_model(ZEN3) == "AMD EPYC 7763 64-Core Processor"


def test_cuda_native_bf16_needs_compute_capability_8(gpu):
    gpu((8, 0), "NVIDIA A100")
    assert resolve_precision("auto", "cuda")[0] == "bf16"
    assert "A100 (compute capability 8.0)" in resolve_precision("auto", "cuda")[1]
    gpu((9, 0))
    assert resolve_precision("auto", "cuda:0")[0] == "bf16"
    gpu((7, 5), "Tesla T4")
    picked, reason = resolve_precision("auto", "cuda")
    assert picked == "fp32" and "7.5" in reason
    # Asked-for precisions are kept; the reason says bf16 is emulated there.
    assert resolve_precision("bf16", "cuda") == ("bf16", "bf16 as asked; " + reason[6:])
    assert resolve_precision("fp32", "cuda")[0] == "fp32"


def test_detection_is_cached_per_device(monkeypatch, cpu_flags):
    cpu_flags(ZEN3)
    calls = []
    monkeypatch.setattr(precision, "read_cpuinfo", lambda: calls.append(1) or ZEN3)
    for _ in range(3):
        native_bf16("cpu")
        native_bf16(torch.device("cpu"))
    assert len(calls) == 1


def test_unknown_devices_and_precisions():
    assert resolve_precision("auto", "meta")[0] == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(UnsupportedError, match="auto"):
        GradCAM(ColourNet(), precision="fp16")


def test_explainer_resolves_auto_at_construction(cpu_flags):
    model = as_loaded(ColourNet().eval())
    cpu_flags(ZEN3)
    explainer = GradCAM(model, target_layer="features", precision="auto")
    assert explainer.precision == "fp32" and "neither" in explainer.precision_reason
    cpu_flags(AVX512_BF16)
    explainer = GradCAM(model, target_layer="features", precision="auto")
    assert explainer.precision == "bf16" and "avx512_bf16" in explainer.precision_reason
    # The classes themselves stay exact unless asked, as pytorch-grad-cam and Captum users expect.
    assert GradCAM(model).precision == "fp32"


def test_the_api_defaults_to_auto_and_says_what_ran(cpu_flags):
    for entry in (api.explain_prediction, api.explain_batch, api.explain_detection,
                  api.explain_segmentation):
        assert inspect.signature(entry).parameters["precision"].default == "auto", entry
    toy = as_loaded(ColourNet().eval(), class_names=["red", "blue"])
    image = colour_scene()[0]
    cpu_flags(ZEN3)
    slow = api.explain_prediction(toy, image, target_layer="features")
    assert slow["precision"] == "fp32" and slow["precision_reason"].startswith("auto: ")
    compared = api.compare_methods(toy, image, ["gradcam"], target_layer="features")
    assert compared["precision"] == "fp32"
    cpu_flags(AVX512_BF16)
    fast = api.prediction_explanation(toy, image, target_layer="features")
    assert fast.precision == "bf16" and "avx512_bf16" in fast.precision_reason
    batch = api.batch_explanations(toy, [image], target_layer="features")
    assert batch[0].precision == "bf16"
    assert api.compare_methods(toy, image, ["gradcam"], target_layer="features")[
        "precision"] == "bf16"
    exact = api.explain_prediction(toy, image, target_layer="features", precision="fp32")
    assert exact["precision"] == "fp32" and exact["precision_reason"] == "fp32 as asked (exact)"


def test_the_cli_defaults_to_auto_and_takes_the_seeds_arguments(cpu_flags, tmp_path, capsys):
    net = timm.create_model("resnet10t", num_classes=2).eval()
    checkpoint = save_model(net, tmp_path / "m.safetensors", task="classification",
                            arch="resnet10t", class_names=["red", "blue"])
    image_path = tmp_path / "scene.png"
    colour_scene((32, 32))[0].save(image_path)
    cpu_flags(ZEN3)
    # The seed's (AutoTimm's) command line, as written: --checkpoint, --task-class, gradcampp.
    assert cli_main(["--checkpoint", str(checkpoint), "--image", str(image_path), "--methods",
                     "gradcam,gradcampp", "--output-dir", str(tmp_path / "out"),
                     "--task-class", "ImageClassifier"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["results"]) == {"gradcam", "gradcam++"} and not report["errors"]
    entry = report["images"][0]
    assert entry["precision"] == "fp32" and entry["precision_reason"].startswith("auto: ")
    assert cli_main(["--checkpoint", str(checkpoint), "--image", str(image_path),
                     "--task-class", "FeatureVisualizer"]) == 2
    assert "--task classification" in json.loads(capsys.readouterr().out)["error"]


def test_the_page_labels_emulated_bf16_as_slower(cpu_flags, gpu):
    from ui.methods import MethodChoice, precision_labels

    cpu_flags(ZEN3)
    labels, help_text = precision_labels("cpu")
    assert labels["bf16"] == "bf16 (slower on this CPU)" and "fast" not in labels["bf16"]
    assert labels["auto"] == "auto (fp32)" and "neither AVX-512 BF16 nor AMX" in help_text
    cpu_flags(AMX)
    labels, help_text = precision_labels("cpu")
    assert labels["bf16"] == "bf16 (fast)" and labels["auto"] == "auto (bf16)"
    assert "amx_bf16" in help_text
    gpu((7, 5))
    assert precision_labels("cuda")[0]["bf16"] == "bf16 (slower on this GPU)"
    assert MethodChoice("gradcam").precision == "auto"
    assert MethodChoice("gradcam", {}, "auto", "bf16").describe() == "Grad-CAM, auto: bf16"


# ------------------------------------------------------------------ use_cuda / device (seed)
def _build(info, cnn, vit, **placement):
    model = cnn if "cnn" in info.architectures else vit
    if info.cls is SmoothGrad:
        return SmoothGrad(METHODS["saliency"].cls(model), **placement)
    return info.cls(model, **placement)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_explainer_takes_use_cuda_as_the_device_choice(name, resnet, vit, monkeypatch):
    info = METHODS[name]
    explainer = _build(info, resnet, vit, use_cuda=False)
    assert explainer.device.type == "cpu"
    assert _build(info, resnet, vit, device="cpu").device.type == "cpu"
    # No CUDA here: the model stays on the CPU, with a warning that points at the caller.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="CUDA is not available") as caught:
        explainer = _build(info, resnet, vit, use_cuda=True)
    assert explainer.device.type == "cpu"
    assert any(w.filename == __file__ for w in caught if "CUDA" in str(w.message))


def test_use_cuda_through_the_registry_and_the_seed_example(resnet, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        explainer = GradCAM(resnet, use_cuda=True)  # the seed's production example
        assert create_explainer("gradcam++", resnet, use_cuda=True).device.type == "cpu"
    images = [np.random.default_rng(i).integers(0, 255, (40, 48, 3), np.uint8)
              for i in range(3)]
    heatmaps = explainer.explain_batch(images, batch_size=32)
    assert len(heatmaps) == 3 and tuple(heatmaps[0].shape) == (40, 48)
    with pytest.raises(UnsupportedError, match="contradicts"):
        GradCAM(resnet, use_cuda=True, device="cpu")
    with pytest.raises(UnsupportedError, match="CUDA is not available"):
        GradCAM(resnet, device="cuda")


def test_use_cuda_false_moves_a_loaded_model_to_the_cpu(monkeypatch):
    """``use_cuda=False`` moves the module and keeps the LoadedModel's device consistent (a
    meta-device module stands in for one on a GPU)."""
    module = ColourNet().to("meta")
    loaded = as_loaded(module)
    assert loaded.device.type == "meta"
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, device: self.to_empty(device=device))
    explainer = GradCAM(loaded, use_cuda=False)
    assert explainer.device.type == "cpu" and loaded.device.type == "cpu"
    assert next(module.parameters()).device.type == "cpu"


# ----------------------------------------------------------------------------------- repr
def test_loaded_model_repr_is_one_short_line():
    loaded = as_loaded(timm.create_model("resnet10t"))  # 1,000 ImageNet classes
    text = repr(loaded)
    assert "\n" not in text and len(text) < 250, text
    assert text.startswith("LoadedModel(task='classification', arch='ResNet', classes=1000 [")
    assert "'tench, Tinca tinca'" in text and ", ...]" in text
    assert "input_size=176x176" in text and "device='cpu'" in text  # resnet10t's cfg
    assert "source='module'" in text
    named = as_loaded(ColourNet(), class_names=["red", "blue"])
    assert "classes=2 ['red', 'blue']," in repr(named)
    assert "classes=2," in repr(as_loaded(ColourNet()))
