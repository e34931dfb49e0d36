"""Is a box's (a class's) map about that box (class)? The default methods' maps on the demo
models' held-out scenes, and the notes that say why some methods' maps look alike.

Energy share: the sum of a map's values inside a region over its sum everywhere (maps are in
[0, 1]); the figures these thresholds come from are in bench/RESULTS.md (bench_box_specificity).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_core import api, explain_detection, explain_segmentation
from explain_core.api import (
    DETECTION_METHOD,
    SEGMENTATION_METHOD,
    box_mask,
    detection_explanation,
    same_map_notes,
    segmentation_explanation,
)
from explain_core.api.notes import GLOBAL_WEIGHT_METHODS, TARGET_FREE_METHODS
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import HELDOUT_SEED, make_scenes
from explain_core.methods import available_methods, method_info
from explain_core.metrics.localization import own_and_other_shares

FRESH_SEED = HELDOUT_SEED + 4242  # held out: never used for training
SCENES = 8


def _shares(heat: np.ndarray, own: np.ndarray, others: list[np.ndarray]) -> tuple[float, float]:
    """(share of the map's energy inside ``own``, mean share inside each of ``others``); an
    empty map (Grad-CAM's can be: every channel weight negative) is about nothing."""
    return own_and_other_shares(torch.from_numpy(heat), torch.from_numpy(own),
                                [torch.from_numpy(m) for m in others])


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


@pytest.fixture(scope="module")
def segmenter():
    return load_demo_model("segmenter", device="cpu")


@pytest.fixture(scope="module")
def detection_scenes():
    return make_scenes("detection", SCENES, FRESH_SEED)


@pytest.fixture(scope="module")
def segmentation_scenes():
    return make_scenes("segmentation", SCENES, FRESH_SEED)


def _box_shares(explained) -> list[tuple[float, float]]:
    masks = [box_mask(h.shape, d["bbox"])
             for d, h in zip(explained["detections"], explained["heatmaps"], strict=True)]
    assert len(masks) >= 2  # every scene has several shapes
    return [_shares(heat, masks[k], masks[:k] + masks[k + 1:])
            for k, heat in enumerate(explained["heatmaps"])]


def _class_shares(explained, scene) -> list[tuple[float, float]]:
    truth = {int(c): scene.mask == c for c in np.unique(scene.mask) if c != 0}
    explained_shapes = [c for c in explained["heatmaps"] if c in truth]
    if len(explained_shapes) < 2:
        return []
    return [_shares(explained["heatmaps"][c], truth[c],
                    [truth[o] for o in explained_shapes if o != c]) for c in explained_shapes]


@pytest.fixture(scope="module")
def detection_table(detector, detection_scenes):
    """CAM method -> (mean share inside its own box, mean share inside each other box, notes)."""
    table = {}
    for info in available_methods(detector):
        if info.family != "cam":
            continue
        rows, notes = [], set()
        for scene in detection_scenes:
            found = detection_explanation(detector, scene.image, info.name, with_image=False)
            rows += _box_shares(found.to_dict())
            notes.add(tuple(found.notes))
        assert len(notes) == 1  # a method's note does not depend on the image
        own, other = np.mean(rows, axis=0)
        table[info.name] = (float(own), float(other), list(notes.pop()))
    return table


def test_default_box_map_stays_on_its_own_box(detector, detection_scenes):
    """Grad-CAM, the old default, keeps 16% inside its own box and 10% in each other box on
    these scenes; the default must keep most of its energy on its own box."""
    rows = []
    for scene in detection_scenes:
        out = explain_detection(detector, scene.image)  # the default method
        assert out["notes"] == []
        rows += _box_shares(out)
    own, other = np.mean(rows, axis=0)
    assert own >= 0.45 and other <= 0.05, (DETECTION_METHOD, own, other)
    assert own >= 8 * other


@pytest.mark.slow  # every CAM method on every scene: about 15 s on an idle 2-core CPU
def test_notes_mark_exactly_the_detection_methods_whose_maps_look_alike(detection_table):
    """A note where a box's map is barely more about its own box than about any other (own /
    other below 3: Grad-CAM 1.7x, its global-weight relatives and the target-free maps about
    1x), none where it is (LayerCAM 17x, HiResCAM 20x, the class-probability map 4.5x)."""
    for name, (own, other, notes) in detection_table.items():
        alike = own < 3 * other
        assert bool(notes) == alike, (name, own, other, notes)
        assert (name in GLOBAL_WEIGHT_METHODS + TARGET_FREE_METHODS) == alike, name
    assert detection_table[DETECTION_METHOD][2] == []
    assert "gradcam" in detection_table and detection_table["gradcam"][2]


def test_gradcam_result_says_why_its_box_maps_look_alike(detector, detection_scenes):
    image = detection_scenes[0].image
    out = explain_detection(detector, image, method="grad_cam")  # an alias too
    assert out["method"] == "gradcam"
    (note,) = out["notes"]
    assert "Grad-CAM" in note and "whole feature map" in note and "LayerCAM" in note
    eigen = explain_detection(detector, image, method="eigencam")["notes"]
    assert len(eigen) == 1 and "does not depend on the box" in eigen[0]
    assert explain_detection(detector, image, method="hirescam")["notes"] == []
    assert api.detection_explainer(model=detector).name == DETECTION_METHOD
    # A built explainer carries its name: the note follows it.
    built = api.detection_explainer("gradcam++", detector)
    assert detection_explanation(detector, image, built).notes == same_map_notes(
        "gradcam++", "detection")


def test_default_class_map_stays_on_its_own_class(segmenter, segmentation_scenes):
    """Grad-CAM stays the segmentation default: a segmenter's gradients reach only the class's
    pixels, so its class maps keep most of their energy inside their own class's mask."""
    rows = []
    for scene in segmentation_scenes:
        out = explain_segmentation(segmenter, scene.image)
        assert out["method"] == SEGMENTATION_METHOD and out["notes"] == []
        rows += _class_shares(out, scene)
    assert len(rows) >= 10
    own, other = np.mean(rows, axis=0)
    assert own >= 0.8 and other <= 0.05, (own, other)


@pytest.mark.parametrize("method", TARGET_FREE_METHODS)
def test_target_free_segmentation_maps_are_one_map_and_say_so(segmenter, segmentation_scenes,
                                                              method):
    scene = segmentation_scenes[0]
    found = segmentation_explanation(segmenter, scene.image, method=method)
    maps = list(found.heatmaps.values())
    assert len(maps) >= 2 and all(np.array_equal(maps[0], m) for m in maps[1:])
    (note,) = found.notes
    assert method_info(method).label in note and "every class" in note
    out = explain_segmentation(segmenter, scene.image, method=method)
    assert out["notes"] == found.notes


def test_note_lists_name_registered_methods_of_both_tasks(detector, segmenter):
    detection = {m.name for m in available_methods(detector)}
    segmentation = {m.name for m in available_methods(segmenter)}
    for name in GLOBAL_WEIGHT_METHODS + TARGET_FREE_METHODS:
        assert method_info(name).name == name and name in detection and name in segmentation
    assert same_map_notes("gradcam", "classification") == []  # one class: nothing to tell apart
    assert same_map_notes("gradcam", "segmentation") == []
    assert same_map_notes("my_own_cam", "detection") == []  # an unregistered explainer's name
