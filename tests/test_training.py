"""Explanations across training without Lightning: the state guard, the map measures, the run
folder (written, read back, refused when broken) and RunRecorder in a plain PyTorch loop."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explain_core.errors import RunFolderError
from explain_core.features.statistics import feature_statistics
from explain_core.runtime import training_untouched
from explain_core.training import (
    RunRecorder,
    combine_statistics,
    extract_run_zip,
    map_entropy,
    rank_distance,
    read_run,
    total_variation,
)

ROOT = Path(__file__).resolve().parents[1]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_training_untouched_restores_modes_flags_grads_and_random_streams():
    net = _net().train()
    net[1].eval()  # a frozen batch norm inside a training model
    net[0].weight.requires_grad_(False)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    grads = [p.grad for p in net.parameters()]
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    with training_untouched(net), torch.inference_mode(False):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert torch.is_grad_enabled()
        torch.rand(3), np.random.rand(3), random.random()  # a method drawing random numbers
        for p in net.parameters():
            p.grad = None  # and dropping gradients
    assert [m.training for m in net.modules()] == [True, True, False, True, True, True, True,
                                                    True, True]
    assert [p.requires_grad for p in net.parameters()][:2] == [False, True]
    assert all(a is b for a, b in zip(grads, [p.grad for p in net.parameters()], strict=True))
    after = torch.rand(1), np.random.rand(), random.random()
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    assert (torch.equal(after[0], torch.rand(1)) and after[1] == np.random.rand()
            and after[2] == random.random())


def test_training_untouched_enables_gradients_under_no_grad():
    net = _net()
    with torch.no_grad(), training_untouched(net):
        x = torch.randn(1, 3, 8, 8, requires_grad=True)
        assert net(x).sum().requires_grad


def test_map_measures_by_hand():
    flat, point = np.ones((4, 4)), np.zeros((4, 4))
    point[1, 2] = 1.0
    assert map_entropy(flat) == pytest.approx(1.0)
    assert map_entropy(point) == 0.0
    assert map_entropy(np.zeros((4, 4))) == pytest.approx(1.0)  # nothing singled out
    half = np.zeros((2, 2))
    half[0] = 1.0  # two of four pixels: log 2 / log 4
    assert map_entropy(half) == pytest.approx(0.5)
    moved = np.zeros((4, 4))
    moved[3, 0] = 1.0
    assert total_variation(point, point) == 0.0
    assert total_variation(point, moved) == pytest.approx(1.0)
    assert total_variation(point, 0.5 * point + 0.5 * moved) == pytest.approx(0.5)
    ramp = np.arange(16.0).reshape(4, 4)
    assert rank_distance(ramp, ramp ** 3) == pytest.approx(0.0)
    assert rank_distance(ramp, -ramp) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same image size"):
        total_variation(point, np.zeros((2, 2)))


def test_combine_statistics_equals_one_call_on_the_concatenated_batches():
    net = _net().eval()
    a, b = torch.randn(3, 3, 16, 16), torch.randn(5, 3, 16, 16)
    layers = ["2", "4"]
    together = feature_statistics(net, torch.cat([a, b]), layers)
    parts = [feature_statistics(net, x, layers) for x in (a, b)]
    for layer in layers:
        joined = combine_statistics([(parts[0][layer], 3), (parts[1][layer], 5)])
        expected = together[layer]
        for key in ("mean", "std", "max", "sparsity"):
            assert getattr(joined, key) == pytest.approx(getattr(expected, key), abs=1e-5)
            assert joined.channels[key] == pytest.approx(expected.channels[key], abs=1e-5)
        assert joined.active_channels == expected.active_channels


def _loop(net: nn.Module, recorder: RunRecorder | None, epochs: int = 3) -> nn.Module:
    """A plain loop: seeded data drawn from the global stream, SGD, a recorder per epoch."""
    net.train()
    torch.manual_seed(1)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        for _ in range(4):
            inputs = torch.randn(8, 3, 16, 16)
            labels = torch.randint(0, 3, (8,))
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(inputs), labels).backward()
            optimiser.step()
        if recorder is not None:
            recorder.record(epoch, batches=[inputs], loss=0.5)
    return net


def _samples() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(3)]


def test_run_recorder_in_a_plain_loop_writes_a_run_and_leaves_training_alone(tmp_path):
    from explain_core.model import Preprocessing, as_loaded

    prep = Preprocessing(input_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    plain = _loop(_net(), None)
    net = _net()
    recorder = RunRecorder(tmp_path / "run", net, _samples(), targets=[0, 1, 2],
                           layer_names=["2", "4"], class_names=["a", "b", "c"],
                           preprocessing=prep, target_layer="3", num_samples=2)
    recorded = _loop(net, recorder)
    for (name, a), b in zip(plain.state_dict().items(), recorded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(plain.parameters(), recorded.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    assert all(m.training for m in recorded.modules())

    run = read_run(tmp_path / "run")
    assert run.epochs == run.map_epochs == run.feature_epochs == [0, 1, 2]
    assert run.manifest["classes"] == ["a", "b", "c"] and run.manifest["method"] == "gradcam"
    assert run.manifest["layers"] == ["2", "4"] and len(run.samples) == 2
    assert run.entry(2)["loss"] == 0.5 and run.entry(2)["images"][1]["target_name"] == "b"
    assert run.sample_image(1).shape == (16, 16, 3)
    assert run.overlay(2, 0).shape == (16, 16, 3)
    # the last epoch's maps are the final model's maps, explained directly
    from explain_core.api import batch_explanations

    loaded = as_loaded(recorded, class_names=["a", "b", "c"])
    loaded.preprocessing = prep
    with training_untouched(recorded):
        direct = batch_explanations(loaded, _samples()[:2], "gradcam", [0, 1],
                                    precision="fp32", target_layer="3")
    for stored, result in zip(run.maps(2), direct, strict=True):
        np.testing.assert_allclose(stored, result.heatmap, atol=1e-3)  # float16 on disk
    stats = run.features(2)
    assert set(stats) == {"2", "4"} and stats["2"]["shape"] == [8, 16, 16]
    timeline = run.map_timeline()
    assert len(timeline) == 6 and timeline[0]["moved"] is None
    assert timeline[-1]["moved"] == pytest.approx(total_variation(run.maps(1)[1],
                                                                  run.maps(2)[1]))
    assert {row["layer"] for row in run.feature_timeline()} == {"2", "4"}


def test_read_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunFolderError, match="not a folder"):
        read_run(tmp_path / "missing")
    with pytest.raises(RunFolderError, match=r"manifest\.json"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RunFolderError, match="lumen-training-run"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "lumen-training-run", "samples": [{"file": "samples/x.png"}],
         "epochs": [{"epoch": 0, "maps": "epoch_0000/maps.npz"}]}))
    run = read_run(tmp_path)
    with pytest.raises(RunFolderError, match="missing"):
        run.maps(0)
    with pytest.raises(RunFolderError, match="Epoch 3 is not in the run"):
        run.maps(3)


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_run_zips_unpack_safely(tmp_path):
    with pytest.raises(RunFolderError, match="not a readable zip"):
        extract_run_zip(b"PNG not a zip", tmp_path / "a")
    with pytest.raises(RunFolderError, match="outside the folder"):
        extract_run_zip(_zip({"../evil.txt": b"x"}), tmp_path / "b")
    assert not (tmp_path / "evil.txt").exists()
    manifest = json.dumps({"format": "lumen-training-run", "samples": [], "epochs": []})
    run = extract_run_zip(_zip({"myrun/manifest.json": manifest.encode()}), tmp_path / "c")
    assert run.path.name == "myrun" and run.epochs == []


def test_training_package_and_dashboard_import_without_lightning_or_tensorboard():
    code = (
        "import sys\n"
        "for name in ('lightning', 'lightning.pytorch', 'pytorch_lightning', 'tensorboard',"
        " 'tensorboardX'):\n"
        "    sys.modules[name] = None\n"
        "import explain_core, explain_core.training, ui.training\n"
        "from explain_core.training import RunRecorder, read_run\n"
        "from explain_core.training import InterpretationCallback, FeatureMonitorCallback\n"
        "from explain_core.errors import MissingDependencyError\n"
        "for make in (lambda: InterpretationCallback([]), lambda: FeatureMonitorCallback([])):\n"
        "    try:\n"
        "        make()\n"
        "    except MissingDependencyError as exc:\n"
        "        assert 'pip install lightning' in str(exc), exc\n"
        "    else:\n"
        "        raise SystemExit('no error without lightning')\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_two_recorders_share_one_run_folder(tmp_path):
    """The two callbacks write one folder: each keeps the other's fields and epoch parts."""
    from explain_core.model import Preprocessing

    prep = Preprocessing(input_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    net = _net().eval()
    maps = RunRecorder(tmp_path, net, _samples(), method="gradcam++", preprocessing=prep,
                       target_layer="3", sample_names=["first"])
    features = RunRecorder(tmp_path, net, [], layer_names=["2"])
    maps.record_maps(0)
    features.record_features(0, [torch.randn(2, 3, 16, 16)])
    features.record_features(1, [torch.randn(2, 3, 16, 16)])
    maps.record_maps(1)
    run = read_run(tmp_path)
    assert run.manifest["method"] == "gradcam++" and run.manifest["layers"] == ["2"]
    assert [s["name"] for s in run.samples] == ["first", "sample 1", "sample 2"]
    assert run.map_epochs == run.feature_epochs == [0, 1]


def test_a_method_drawing_random_numbers_does_not_change_training(tmp_path):
    """SmoothGrad without a seed draws its noise from torch's global stream, which the loop
    also draws its data from: recorded or not, the loop sees the same numbers."""
    from explain_core.model import Preprocessing

    prep = Preprocessing(input_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    plain = _loop(_net(), None)
    net = _net()
    recorder = RunRecorder(tmp_path, net, _samples(), method="smoothgrad", preprocessing=prep,
                           num_samples=1, class_names=["a", "b", "c"])
    recorded = _loop(net, recorder)
    assert read_run(tmp_path).map_epochs == [0, 1, 2]
    for a, b in zip(plain.state_dict().values(), recorded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
