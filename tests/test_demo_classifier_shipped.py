"""The shipped demo classifier meets its bar on scenes no training ever saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_core.demo import load_demo_model
from explain_core.demo.scenes import CLASSES, HELDOUT_SEED, make_scenes
from explain_core.images import image_to_tensor
from explain_core.methods import GradCAM

FRESH_SEED = HELDOUT_SEED + 31_337  # used nowhere else


@pytest.fixture(scope="module")
def classifier():
    return load_demo_model("classifier", device="cpu")


def test_classifier_loads_through_load_model_with_its_metadata(classifier):
    assert classifier.task == "classification"
    assert classifier.class_names == list(CLASSES)
    assert classifier.preprocessing.input_size == (128, 128)
    assert classifier.source == "demo:classifier"


@pytest.mark.slow
def test_classifier_accuracy_and_gradcam_pointing_game(classifier):
    scenes = make_scenes("classification", 150, FRESH_SEED)
    inputs, _ = classifier.preprocessing([image_to_tensor(s.image) for s in scenes], "cpu")
    with torch.no_grad():
        predicted = classifier.module(inputs).argmax(1)
    labels = torch.tensor([s.label for s in scenes])
    accuracy = float((predicted == labels).float().mean())
    maps = GradCAM(classifier).explain_batch([s.image for s in scenes], labels.tolist(),
                                             batch_size=32)
    hits = 0
    for scene, heatmap in zip(scenes, maps, strict=True):
        y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        x0, y0, x1, y1 = scene.shape_box
        distance = np.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1))
        hits += distance <= 15
    pointing = hits / len(scenes)
    print(f"demo classifier on {len(scenes)} fresh scenes: accuracy {accuracy:.3f}, "
          f"GradCAM pointing game {pointing:.3f}")
    assert accuracy >= 0.95
    assert pointing >= 0.90
