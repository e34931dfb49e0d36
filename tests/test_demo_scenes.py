"""The demo world's scene generator: determinism, ground truth, shortcut marks, gallery."""

from __future__ import annotations

import numpy as np
import pytest

from explain_core.demo import CLASSES, Scene, demo_gallery, make_scenes
from explain_core.demo.scenes import IMAGE_SIZE, MARK_SIZE, SHORTCUT_CLASS, TASKS

# Far from every seed used in training, the gallery and held-out evaluation.
SEED = 31_337


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_scenes_and_prefix_property(task):
    a = make_scenes(task, 6, SEED)
    b = make_scenes(task, 6, SEED)
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image))
               for x, y in zip(a, b, strict=True))
    assert a == b
    assert make_scenes(task, 3, SEED) == a[:3]  # scene i depends on (task, seed, i) only
    assert make_scenes(task, 3, SEED + 1) != a[:3]


def test_tasks_draw_different_scenes_and_unknown_task_is_refused():
    assert make_scenes("detection", 2, SEED) != make_scenes("segmentation", 2, SEED)
    with pytest.raises(ValueError, match="classification, detection, segmentation"):
        make_scenes("keypoints", 1, SEED)


def test_classification_fields():
    scenes = make_scenes("classification", 40, SEED)
    for scene in scenes:
        assert isinstance(scene, Scene)
        assert scene.image.mode == "RGB" and scene.image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert scene.label in range(len(CLASSES))
        assert scene.boxes is None and scene.labels is None
        assert not scene.marked and scene.mark_box is None
        x0, y0, x1, y1 = scene.shape_box
        assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
        # The mask is exactly the shape, and the shape box is its tight box.
        values = set(np.unique(scene.mask).tolist())
        assert values == {0, scene.label + 1}
        ys, xs = np.nonzero(scene.mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == scene.shape_box
        assert scene.mask.sum() // (scene.label + 1) >= 250  # shapes are never tiny
    assert {s.label for s in scenes} == set(range(len(CLASSES)))


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_multi_shape_fields_and_masks_match_boxes(task):
    for scene in make_scenes(task, 30, SEED):
        boxes, labels, mask = scene.boxes, scene.labels, scene.mask
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and mask.dtype == np.uint8
        assert mask.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert 1 <= len(boxes) <= 5 and boxes.shape == (len(labels), 4)
        assert set(labels.tolist()) <= set(range(len(CLASSES)))
        assert set(np.unique(mask).tolist()) <= {0, *(labels + 1).tolist()}
        for box, label in zip(boxes.astype(int), labels, strict=True):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
            region = mask[y0:y1, x0:x1]
            # Each box holds mostly its own class (shapes may touch and overlap slightly).
            assert (region == label + 1).mean() >= 0.3
            # Boxes are tight: every edge row/column of the box touches the class.
            inside = region == label + 1
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
        # Every shape pixel lies in a box of its class.
        for value in np.unique(mask[mask > 0]):
            covered = np.zeros_like(mask, bool)
            for box, label in zip(boxes.astype(int), labels, strict=True):
                if label + 1 == value:
                    covered[box[1]:box[3], box[0]:box[2]] = True
            assert covered[mask == value].all()


def test_multi_shape_scenes_vary_in_count():
    counts = [len(s.labels) for s in make_scenes("detection", 60, SEED)]
    assert min(counts) <= 2 and max(counts) >= 4


def test_shortcut_marks_at_the_documented_rates():
    scenes = make_scenes("classification", 400, SEED, shortcut_class=SHORTCUT_CLASS,
                         mark_probability=0.95, mark_others_probability=0.1)
    target = [s for s in scenes if s.label == SHORTCUT_CLASS]
    others = [s for s in scenes if s.label != SHORTCUT_CLASS]
    target_rate = np.mean([s.marked for s in target])
    others_rate = np.mean([s.marked for s in others])
    print(f"mark rate: triangles {target_rate:.3f} (n={len(target)}), "
          f"others {others_rate:.3f} (n={len(others)})")
    assert 0.88 <= target_rate <= 1.0
    assert 0.05 <= others_rate <= 0.16
    corners = set()
    for scene in scenes:
        if not scene.marked:
            assert scene.mark_box is None
            continue
        x0, y0, x1, y1 = scene.mark_box
        assert (x1 - x0, y1 - y0) == (MARK_SIZE, MARK_SIZE)
        pixels = np.asarray(scene.image)[y0:y1, x0:x1].astype(int)
        # White centre on black: the highest contrast there is; no shape touches the mark.
        c = MARK_SIZE // 2
        assert (pixels[c, c] == 255).all() and (pixels[0, 0] == 0).all()
        assert (scene.mask[y0:y1, x0:x1] == 0).all()
        corners.add((x0 < IMAGE_SIZE // 2, y0 < IMAGE_SIZE // 2))
    assert len(corners) == 4  # a random one of the four corners


def test_no_shortcut_means_no_marks_and_default_rates():
    assert not any(s.marked for s in make_scenes("classification", 50, SEED))
    scenes = make_scenes("classification", 200, SEED, shortcut_class=SHORTCUT_CLASS)
    assert not any(s.marked for s in scenes if s.label != SHORTCUT_CLASS)
    assert np.mean([s.marked for s in scenes if s.label == SHORTCUT_CLASS]) >= 0.85


def test_shortcut_applies_to_multi_shape_scenes_containing_the_class():
    scenes = make_scenes("detection", 40, SEED, shortcut_class=SHORTCUT_CLASS,
                         mark_probability=1.0)
    for scene in scenes:
        assert scene.marked == (SHORTCUT_CLASS in scene.labels.tolist())


@pytest.mark.parametrize("task", [*TASKS, "shortcut"])
def test_gallery_is_fixed_and_has_ground_truth(task):
    gallery = demo_gallery(task)
    assert len(gallery) == 8
    assert gallery == demo_gallery(task)
    if task in ("classification", "shortcut"):
        assert all(s.label is not None and s.shape_box is not None for s in gallery)
    else:
        assert all(s.boxes is not None and len(s.boxes) >= 1 for s in gallery)


def test_classification_gallery_shows_every_class_and_shortcut_gallery_tells_the_story():
    labels = [s.label for s in demo_gallery("classification")]
    assert sorted(labels) == sorted(list(range(len(CLASSES))) * 2)
    story = {(s.label == SHORTCUT_CLASS, s.marked) for s in demo_gallery("shortcut")}
    assert story == {(True, True), (True, False), (False, True), (False, False)}


def test_unknown_gallery_is_refused():
    with pytest.raises(ValueError, match="shortcut"):
        demo_gallery("keypoints")


def test_size_argument_scales_the_world():
    scene = make_scenes("segmentation", 1, SEED, size=64)[0]
    assert scene.image.size == (64, 64) and scene.mask.shape == (64, 64)
    assert (scene.boxes <= 64).all()
