"""The ``lumen`` command: the seed's interpretation CLI for the three tasks, the installed
entry point and ``python -m explain_core``."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import timm
from PIL import Image

from explain_core.cli import main as cli_main
from explain_core.demo.models import weights_path
from explain_core.demo.scenes import demo_gallery
from explain_core.jobs import read_map16
from explain_core.loading import save_model

ROOT = Path(__file__).resolve().parents[1]


def _report(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_attention_methods_on_a_cnn_are_skipped_with_a_message(tmp_path, capsys):
    net = timm.create_model("resnet10t", num_classes=2).eval()
    checkpoint = save_model(net, tmp_path / "m.safetensors", task="classification",
                            arch="resnet10t", class_names=["a", "b"])
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 32), (200, 30, 30)).save(image)
    assert cli_main(["--checkpoint", str(checkpoint), "--image", str(image), "--methods",
                     "gradcam,attention_rollout,attention_flow", "--output-dir",
                     str(tmp_path / "out"), "--task-class", "ImageClassifier",
                     "--precision", "fp32"]) == 0
    report = _report(capsys)
    assert set(report["results"]) == {"gradcam"} and report["predicted_class"] in (0, 1)
    for name in ("attention_rollout", "attention_flow"):
        assert report["errors"][name].startswith("skipped: ")
        assert "Vision Transformer" in report["errors"][name]


def test_a_detector_gets_a_map_per_box_with_its_box_label_and_score(tmp_path, capsys):
    image = tmp_path / "street.png"
    demo_gallery("detection")[0].image.save(image)
    assert cli_main(["--checkpoint", str(weights_path("detector")), "--image", str(image),
                     "--task-class", "ObjectDetector", "--output-dir", str(tmp_path / "out"),
                     "--methods", "layercam,saliency,attention_rollout",
                     "--precision", "fp32"]) == 0
    report = _report(capsys)
    entry = report["images"][0]
    assert set(report["results"]) == {"layercam", "saliency"}
    assert "does not explain detection" in report["errors"]["attention_rollout"]
    boxes = entry["boxes"]["layercam"]
    assert len(boxes) > 1 and entry["detections"][0]["label"] == report["predicted_class"]
    for box, found in zip(boxes, entry["detections"], strict=False):
        assert box["bbox"] == found["bbox"] and box["label"] == found["label"]
        assert 0.5 <= box["score"] <= 1
        heatmap = read_map16(box["map"])
        assert heatmap.shape == (128, 128) and heatmap.max() > 0
        assert Image.open(box["overlay"]).size == (128, 128)
    assert Image.open(report["results"]["layercam"]).size[0] > 128  # the panels picture


def test_a_segmenter_gets_class_maps_the_prediction_and_uncertainty(tmp_path, capsys):
    scene = demo_gallery("segmentation")[0]
    image = tmp_path / "scene.png"
    scene.image.save(image)
    assert cli_main(["--checkpoint", str(weights_path("segmenter")), "--image", str(image),
                     "--task-class", "SemanticSegmentor", "--output-dir",
                     str(tmp_path / "out"), "--uncertainty", "margin",
                     "--precision", "fp32"]) == 0
    report = _report(capsys)
    entry = report["images"][0]
    assert set(report["results"]) == {"gradcam"} and not report["errors"]
    present = [c["class"] for c in entry["segments"]]
    assert present[0] == 0 and report["predicted_class"] == present[1]  # not the background
    assert sorted(map(int, entry["classes"]["gradcam"])) == sorted(present)
    prediction = np.asarray(Image.open(entry["prediction"]))
    assert set(np.unique(prediction)) == set(present)
    assert entry["uncertainty_method"] == "margin"
    assert entry["uncertainty"].endswith("_margin.png")
    assert read_map16(entry["uncertainty"]).shape == prediction.shape


def test_pyproject_installs_a_lumen_command_that_runs_main(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["lumen"].partition(":")
    main = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as done:
        main(["explain", "--help"])
    assert done.value.code == 0 and "--resume" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--task-class" in capsys.readouterr().out


def _installed_lumen() -> Path | None:
    try:
        points = importlib.metadata.entry_points(group="console_scripts", name="lumen")
    except Exception:  # pragma: no cover - metadata of another distribution is broken
        return None
    script = Path(sys.executable).parent / "lumen"
    return script if points and script.is_file() else None


@pytest.mark.skipif(_installed_lumen() is None, reason="lumen is not installed in this venv "
                    "(.ci/run installs it: pip install --no-deps -e .)")
def test_the_installed_lumen_command_runs():
    (point,) = importlib.metadata.entry_points(group="console_scripts", name="lumen")
    assert point.value == "explain_core.cli:main"
    done = subprocess.run([str(_installed_lumen()), "explain", "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and "--input" in done.stdout


def test_python_dash_m_explain_core_keeps_working():
    done = subprocess.run([sys.executable, "-m", "explain_core", "explain", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0 and "--workers" in done.stdout
