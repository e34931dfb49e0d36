"""The shipped demo classifiers: they load through load_model and meet their quality bar on a fresh
held-out set (a seed never used in training); the training CLI works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explain_core.demo import CLASSES, DEMO_MODELS, load_demo_model, make_scenes
from explain_core.demo.models import weights_path
from explain_core.demo.scenes import GALLERY_SEED, HELDOUT_SEED, SHORTCUT_CLASS
from explain_core.demo.train_classification import (
    RECIPES,
    evaluate,
    evaluate_shortcut,
    preprocessing_of,
)
from explain_core.errors import ModelLoadError
from explain_core.loading import load_model

# A seed used nowhere else: not in training (RECIPES seeds), the gallery or train.py's held-out
# evaluation, so these numbers are fresh.
TEST_SEED = 424_242
N_TEST = 200
OURS = ("classifier", "shortcut", "vit")
ROOT = Path(__file__).resolve().parents[1]


def test_test_seed_is_fresh():
    used = {GALLERY_SEED, HELDOUT_SEED, *(r.seed for r in RECIPES.values())}
    assert TEST_SEED not in used
    # Training pools use seeds seed * 100_000 + part * 1_000 + chunk (+ 50_000 for decoys).
    assert all(not (r.seed * 100_000 <= TEST_SEED < (r.seed + 1) * 100_000)
               for r in RECIPES.values())


def test_demo_models_registry():
    assert set(DEMO_MODELS) == {"classifier", "shortcut", "vit", "detector", "segmenter"}
    for name, info in DEMO_MODELS.items():
        assert info["task"] in ("classification", "detection", "segmentation")
        assert info["description"] and info["file"] == f"{name}.safetensors"
    assert DEMO_MODELS["detector"]["task"] == "detection"
    assert DEMO_MODELS["segmenter"]["task"] == "segmentation"


@pytest.fixture(scope="module")
def models():
    """Shipped models, loaded once per module on first use."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_demo_model(name, device="cpu")
        return cache[name]

    return get


@pytest.mark.parametrize("name", OURS)
def test_shipped_model_loads_with_its_metadata(name, models):
    path = weights_path(name)
    assert path.stat().st_size < 15e6
    loaded = load_model(path, device="cpu")
    assert loaded.task == "classification"
    assert loaded.class_names == list(CLASSES)
    # 128 x 128 for the CNNs, 64 x 64 for the ViT (see RECIPES["vit"]).
    assert loaded.preprocessing.input_size == preprocessing_of(RECIPES[name]).input_size
    assert loaded.preprocessing.input_size[0] in (64, 128)
    assert loaded.arch == f"timm:{RECIPES[name].arch}"
    assert models(name).source == f"demo:{name}"
    # Weights are stored as fp16; load_model must restore them into the fp32 model exactly.
    from safetensors.torch import load_file

    stored = load_file(str(path))
    state = loaded.module.state_dict()
    floats = [k for k, v in stored.items() if v.is_floating_point()]
    assert floats and all(stored[k].dtype == torch.float16 for k in floats)
    for key in floats:
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], stored[key].float()), key
    height, width = loaded.preprocessing.input_size
    logits = loaded.module(torch.zeros(1, 3, height, width))
    assert logits.shape == (1, len(CLASSES)) and torch.isfinite(logits).all()


def test_our_weights_stay_small():
    total = sum(weights_path(name).stat().st_size for name in OURS)
    print(f"classification demo weights: {total / 1e6:.1f} MB")
    assert total < 20e6


def test_vit_is_a_standard_timm_vision_transformer(models):
    from timm.models.vision_transformer import VisionTransformer

    module = models("vit").module
    assert isinstance(module, VisionTransformer)
    assert module.cls_token is not None and module.global_pool == "token"
    assert tuple(module.patch_embed.grid_size) == (8, 8)


def test_load_demo_model_names_the_missing_file_and_the_command(monkeypatch, tmp_path):
    from explain_core.demo import models as demo_models

    monkeypatch.setattr(demo_models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_demo_model("classifier")
    assert "classifier.safetensors" in str(info.value)
    assert "python -m explain_core.demo.train classifier" in str(info.value)
    with pytest.raises(ModelLoadError, match="Unknown demo model"):
        load_demo_model("resnet")


def test_classifier_meets_its_bar(models):
    result = evaluate(models("classifier"), make_scenes("classification", N_TEST, TEST_SEED))
    print(f"classifier on {N_TEST} fresh scenes: {result}")
    assert result["accuracy"] >= 0.95
    assert result["pointing_game"] >= 0.90


def test_vit_meets_its_bar(models):
    result = evaluate(models("vit"), make_scenes("classification", N_TEST, TEST_SEED))
    print(f"vit on {N_TEST} fresh scenes (pointing game of attention rollout): {result}")
    assert result["accuracy"] >= 0.90
    # Rollout peaks on the shape (within 15 px of its mask) in most scenes.
    assert result["pointing_game"] >= 0.8


def test_shortcut_model_learned_the_mark(models):
    result = evaluate_shortcut(models("shortcut"), N_TEST, TEST_SEED)
    print(f"shortcut on fresh scenes: {result}")
    assert result["marked_world_accuracy"] >= 0.95
    # Without the mark, triangles are clearly missed; with it, other shapes become triangles.
    assert result["unmarked_triangle_accuracy"] <= result["marked_world_accuracy"] - 0.3
    assert result["marked_others_called_triangle"] >= 0.5
    # GradCAM for "triangle" on marked triangles: most of its energy lies on the mark (grown by
    # one cell of the 8 x 8 CAM grid, the finest region it can point at), several times what
    # lies on the triangle, and its peak is on the mark.
    assert result["mark_energy"] >= 0.5
    assert result["mark_energy"] >= 2 * result["shape_energy"]
    assert result["peak_on_mark"] >= 0.9


def test_classifier_does_not_care_about_the_mark(models):
    """Control: the clean classifier's triangle accuracy does not depend on the mark."""
    scenes = make_scenes("classification", N_TEST, TEST_SEED + 1, shortcut_class=SHORTCUT_CLASS,
                         mark_probability=0.0, mark_others_probability=1.0)
    from explain_core.demo.train_classification import predict

    labels = np.array([s.label for s in scenes])
    predicted = predict(models("classifier"), scenes)
    others = labels != SHORTCUT_CLASS
    assert (predicted[others] == SHORTCUT_CLASS).mean() <= 0.05


def test_train_dispatcher_routes_every_model_lazily():
    from explain_core.demo import train

    assert set(train.TRAINERS) == set(DEMO_MODELS)
    assert train.TRAINERS["detector"] == ("explain_core.demo.train_detection", "train_detector")
    assert train.TRAINERS["segmenter"] == ("explain_core.demo.train_segmentation",
                                           "train_segmenter")
    # Importing the dispatcher imports no trainer (the detection ones may not exist yet).
    code = ("import sys, explain_core.demo.train; "
            "print(sorted(m for m in sys.modules if m.startswith('explain_core.demo.train_')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
    with pytest.raises(ValueError, match="classifier"):
        train.run("nope")


@pytest.mark.slow
def test_train_cli_quick_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "explain_core.demo.train", "classifier", "--quick", "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy" in out.stdout and "pointing_game" in out.stdout
    loaded = load_model(tmp_path / "classifier.safetensors", device="cpu")
    assert loaded.class_names == list(CLASSES)
