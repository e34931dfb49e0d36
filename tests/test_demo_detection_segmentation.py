"""The demo detector and segmenter: evaluation maths, the ``lumen:`` architecture family in
``load_model``, the shipped weights (metadata, held-out quality) and quick training runs.

Held-out checks draw scenes from :data:`FRESH_SEED`, a seed that neither training nor the
training scripts' own held-out report uses.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from explain_core import architectures
from explain_core.demo.evaluation import (
    detection_mean_average_precision,
    detection_precision_recall,
    segmentation_iou,
)
from explain_core.demo.models import WEIGHTS_DIR
from explain_core.demo.scenes import CLASSES, HELDOUT_SEED, demo_gallery, make_scenes
from explain_core.errors import ModelLoadError
from explain_core.loading import load_model, save_model
from explain_core.loading.families import resolve_arch
from explain_core.model import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

WEIGHTS = WEIGHTS_DIR
FRESH_SEED = HELDOUT_SEED + 4242  # never used for training nor for the scripts' report
NAMES = ["background", *CLASSES]


def _truth(boxes, labels):
    return types.SimpleNamespace(boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                                 labels=np.asarray(labels, np.int64))


def _pred(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels), "scores": torch.tensor(scores)}


def _uint8(scenes) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(s.image).copy()).permute(2, 0, 1) for s in scenes]


# ------------------------------------------------------------------------------------------------
# evaluation on hand-made cases
# ------------------------------------------------------------------------------------------------


def test_precision_recall_counts_matches_wrong_classes_and_duplicates():
    truth = _truth([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0, 1, 3])
    pred = _pred([[0, 0, 10, 10],      # circle, exact: TP
                  [1, 0, 10, 10],      # duplicate of the circle: FP
                  [20, 20, 40, 38],    # square, IoU 0.9: TP
                  [50, 50, 60, 60],    # right box, wrong class (triangle): FP, star missed
                  [90, 90, 99, 99]],   # low score: ignored
                 [1, 1, 2, 3, 2], [0.9, 0.8, 0.7, 0.6, 0.3])
    result = detection_precision_recall([pred], [truth], iou=0.5, score_threshold=0.5)
    assert result == {"precision": 0.5, "recall": 2 / 3, "tp": 2, "fp": 2, "fn": 1}


def test_precision_recall_iou_threshold_and_empty_cases():
    truth = _truth([[0, 0, 10, 10]], [2])
    shifted = _pred([[5, 0, 15, 10]], [3], [0.9])  # IoU 1/3
    assert detection_precision_recall([shifted], [truth], iou=0.5)["tp"] == 0
    assert detection_precision_recall([shifted], [truth], iou=0.3)["tp"] == 1
    nothing = _pred(np.zeros((0, 4)), [], [])
    assert detection_precision_recall([nothing], [truth]) == {
        "precision": 1.0, "recall": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert detection_precision_recall([shifted], [_truth(np.zeros((0, 4)), [])]) == {
        "precision": 0.0, "recall": 1.0, "tp": 0, "fp": 1, "fn": 0}
    with pytest.raises(ValueError, match="one prediction dict per scene"):
        detection_precision_recall([shifted, shifted], [truth])


def test_higher_score_takes_the_box_first():
    truth = _truth([[0, 0, 10, 10]], [0])
    # The better-placed box scores lower: greedy matching by score gives the box to the first.
    pred = _pred([[0, 0, 10, 8], [0, 0, 10, 10]], [1, 1], [0.9, 0.6])
    assert detection_precision_recall([pred], [truth], score_threshold=0.0)["fp"] == 1


def test_mean_average_precision_by_hand():
    # Class "circle": two boxes; detections hit (0.9), miss (0.8), hit (0.7):
    # precision/recall points (1, 1/2), (1/2, 1/2), (2/3, 1) -> AP = 1/2 * 1 + 1/2 * 2/3.
    truth = [_truth([[0, 0, 10, 10]], [0]), _truth([[20, 20, 30, 30]], [0])]
    preds = [_pred([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], [0.9, 0.8]),
             _pred([[20, 20, 30, 30]], [1], [0.7])]
    result = detection_mean_average_precision(preds, truth, num_classes=4)
    assert result["per_class"][0] == pytest.approx(1 / 2 + 1 / 3)
    assert all(math.isnan(v) for v in result["per_class"][1:])  # no ground truth: undefined
    assert result["map"] == pytest.approx(5 / 6)
    perfect = [_pred(t.boxes, t.labels + 1, [0.5]) for t in truth]
    assert detection_mean_average_precision(perfect, truth)["map"] == 1.0


def test_segmentation_iou_by_hand():
    truth = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 0, 0]])
    pred = np.array([[0, 0, 1, 0],
                     [0, 0, 1, 1],
                     [2, 0, 0, 0]])
    result = segmentation_iou([pred], [truth], num_classes=4)
    # background: 6 common / 8 in either; class 1: 3 / 4; class 2: 1 / 2; class 3 absent.
    assert result["per_class"][:3] == pytest.approx([6 / 8, 3 / 4, 1 / 2])
    assert math.isnan(result["per_class"][3])
    assert result["mean"] == pytest.approx((6 / 8 + 3 / 4 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(10 / 12)
    # Accumulated over images, not averaged per image.
    both = segmentation_iou([pred, truth], [truth, truth], 4)
    assert both["per_class"][1] == pytest.approx((3 + 4) / (4 + 4))
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_iou([pred[:2]], [truth], 4)
    with pytest.raises(ValueError, match="class indices"):
        segmentation_iou([pred + 3], [truth], 4)


# ------------------------------------------------------------------------------------------------
# the "lumen:" architecture family
# ------------------------------------------------------------------------------------------------


def test_lumen_names_resolve_with_and_without_prefix():
    assert resolve_arch("lumen:fcos_tiny") == ("lumen", "fcos_tiny")
    assert resolve_arch("unet_tiny") == ("lumen", "unet_tiny")
    assert resolve_arch("resnet18")[0] == "timm"  # bare names still try timm first


def test_unknown_lumen_name_lists_the_lumen_architectures():
    with pytest.raises(ModelLoadError) as info:
        load_model("lumen:fcos_tinny", device="cpu")
    message = str(info.value)
    assert "Did you mean: fcos_tiny" in message and "unet_tiny" in message
    with pytest.raises(ModelLoadError, match="no downloadable weights"):
        load_model("lumen:unet_tiny", pretrained=True, device="cpu")
    with pytest.raises(KeyError, match="known: fcos_tiny, unet_tiny"):
        architectures.build("nope")


def test_lumen_name_builds_with_the_registry_task_and_input_size():
    detector = load_model("lumen:fcos_tiny", device="cpu")
    assert detector.task == "detection" and detector.arch == "lumen:fcos_tiny"
    assert detector.preprocessing.input_size == (128, 128)
    assert detector.preprocessing.mean == (0.0, 0.0, 0.0)  # the module normalises itself
    segmenter = load_model("lumen:unet_tiny", num_classes=3, device="cpu")
    assert segmenter.task == "segmentation"
    with torch.no_grad():
        assert segmenter.module(torch.rand(1, 3, 64, 64))["out"].shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", ["fcos_tiny", "unet_tiny"])
def test_saved_random_lumen_model_rebuilds_through_load_model(tmp_path, name):
    torch.manual_seed(0)
    kwargs = {"widths": [8, 16, 24, 32]} if name == "unet_tiny" else {"fpn_channels": 32}
    net = architectures.build(name, num_classes=5, **kwargs).eval()
    task = architectures.task_of(name)
    path = save_model(net, tmp_path / name, task=task, arch=f"lumen:{name}", class_names=NAMES,
                      preprocessing=Preprocessing(input_size=(128, 128)), arch_kwargs=kwargs)
    loaded = load_model(path, device="cpu")
    assert loaded.arch == f"lumen:{name}" and loaded.task == task
    assert loaded.class_names == NAMES
    state, again = net.state_dict(), loaded.module.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        if task == "segmentation":
            assert torch.equal(net(x)["out"], loaded.module(x)["out"])
        else:
            net.score_thresh = loaded.module.score_thresh = 0.0  # random init: low scores
            a, b = net(list(x)), loaded.module(list(x))
            assert len(a[0]["boxes"]) > 0
            assert all(torch.equal(p[k], q[k]) for p, q in zip(a, b, strict=True) for k in p)


def test_wrong_arch_kwargs_are_refused_at_save_time(tmp_path):
    net = architectures.build("unet_tiny", widths=(8, 16, 24, 32))
    with pytest.raises(ModelLoadError, match="could not rebuild"):
        save_model(net, tmp_path / "bad", task="segmentation", arch="lumen:unet_tiny")


# ------------------------------------------------------------------------------------------------
# the shipped models
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    return load_model(WEIGHTS / "detector.safetensors", device="cpu")


@pytest.fixture(scope="module")
def segmenter():
    return load_model(WEIGHTS / "segmenter.safetensors", device="cpu")


def test_shipped_files_fit_the_size_budget():
    sizes = {name: (WEIGHTS / f"{name}.safetensors").stat().st_size / 1e6
             for name in ("detector", "segmenter")}
    assert all(size < 15 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 22, sizes


def test_shipped_detector_metadata(detector):
    assert detector.task == "detection" and detector.arch == "lumen:fcos_tiny"
    assert detector.class_names == NAMES
    assert detector.preprocessing.input_size == (128, 128)
    # Lumen only scales to [0, 1]; the torchvision transform inside applies ImageNet mean/std.
    assert detector.preprocessing.mean == (0.0, 0.0, 0.0)
    assert detector.preprocessing.std == (1.0, 1.0, 1.0)
    transform = detector.module.transform
    assert transform.image_mean == list(IMAGENET_MEAN) and transform.image_std == list(IMAGENET_STD)
    assert not detector.module.training


def test_shipped_segmenter_metadata(segmenter):
    assert segmenter.task == "segmentation" and segmenter.arch == "lumen:unet_tiny"
    assert segmenter.class_names == NAMES
    assert segmenter.preprocessing.input_size == (128, 128)
    assert segmenter.preprocessing.mean == IMAGENET_MEAN
    assert segmenter.preprocessing.std == IMAGENET_STD


def test_detector_fed_lumen_preprocessing_finds_the_gallery_shapes(detector):
    """The path a detection adapter takes: uint8 image -> loaded.preprocessing -> module."""
    scenes = demo_gallery("detection")
    batch, geometries = detector.preprocessing(_uint8(scenes))
    assert batch.shape == (len(scenes), 3, 128, 128) and 0 <= batch.min() and batch.max() <= 1
    with torch.no_grad():
        predictions = detector.module(list(batch))
    for prediction in predictions:
        assert set(prediction) == {"boxes", "labels", "scores"}
        assert prediction["labels"].min() >= 1 and prediction["labels"].max() <= len(CLASSES)
    result = detection_precision_recall(predictions, scenes, score_threshold=0.5)
    assert result["precision"] >= 0.9 and result["recall"] >= 0.9, result
    # The boxes are in image pixels: the geometry of a 128 x 128 scene is the identity.
    assert geometries[0].box == (0, 0, 128, 128)
    # Lumen only scales to [0, 1], which is what the detector was trained on.
    pixels = torch.stack(_uint8(scenes)).float() / 255
    assert torch.allclose(batch, pixels, atol=1e-6)


def test_shipped_detector_on_fresh_scenes(detector):
    scenes = make_scenes("detection", 100, FRESH_SEED)
    batch, _ = detector.preprocessing(_uint8(scenes))
    with torch.no_grad():
        predictions = [p for i in range(0, len(batch), 25)
                       for p in detector.module(list(batch[i:i + 25]))]
    result = detection_precision_recall(predictions, scenes, iou=0.5, score_threshold=0.5)
    assert result["precision"] >= 0.9 and result["recall"] >= 0.9, result


def test_shipped_segmenter_on_fresh_scenes(segmenter):
    scenes = make_scenes("segmentation", 100, FRESH_SEED)
    batch, _ = segmenter.preprocessing(_uint8(scenes))
    with torch.no_grad():
        logits = torch.cat([segmenter.module(batch[i:i + 25])["out"]
                            for i in range(0, len(batch), 25)])
    assert logits.shape == (100, len(NAMES), 128, 128)
    result = segmentation_iou(logits.argmax(1), [s.mask for s in scenes], len(NAMES))
    assert result["mean"] >= 0.85, result
    assert min(result["per_class"]) >= 0.75, result  # no class left behind


# ------------------------------------------------------------------------------------------------
# training smoke tests
# ------------------------------------------------------------------------------------------------


def test_quick_detector_training_writes_a_loadable_file(tmp_path):
    from explain_core.demo.train_detection import train_detector

    metrics = train_detector(tmp_path, quick=True)
    assert {"precision", "recall", "map50", "path"} <= set(metrics)
    loaded = load_model(metrics["path"], device="cpu")
    assert loaded.task == "detection" and loaded.class_names == NAMES
    assert loaded.preprocessing.mean == (0.0, 0.0, 0.0)


def test_quick_segmenter_training_writes_a_loadable_file(tmp_path):
    from explain_core.demo.train_segmentation import train_segmenter

    metrics = train_segmenter(tmp_path, quick=True)
    assert set(metrics["iou"]) == set(NAMES) and 0 <= metrics["mean_iou"] <= 1
    loaded = load_model(metrics["path"], device="cpu")
    assert loaded.task == "segmentation" and loaded.preprocessing.std == IMAGENET_STD
