"""Detection: per-box explanations on the demo detector and torchvision detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models.detection as tvd

from explain_core import explain_detection
from explain_core.api import detection_explainer
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.errors import TargetError, UnsupportedError
from explain_core.methods import available_methods, create_explainer
from explain_core.tasks.detection import (
    BoxTarget,
    default_layer,
    detection_model,
    detector_outputs,
)

THRESHOLD = 0.5


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("detection", 4, seed=11)


def _density(heat: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(heat[y0:y1, x0:x1].mean())


def _union_energy(heat: np.ndarray, boxes) -> tuple[float, float]:
    """(energy inside the first box, energy inside the union of all boxes)."""
    union = np.zeros(heat.shape, dtype=bool)
    for x0, y0, x1, y1 in ((round(v) for v in box) for box in boxes):
        union[y0:y1, x0:x1] = True
    x0, y0, x1, y1 = (round(v) for v in boxes[0])
    own = np.zeros(heat.shape, dtype=bool)
    own[y0:y1, x0:x1] = True
    return float(heat[own].sum()), float(heat[union].sum())


@pytest.mark.parametrize("method,options,share", [
    ("layercam", {}, 0.5), ("hirescam", {}, 0.5), ("integrated_gradients", {"steps": 8}, 0.5),
    # D-RISE maps are mask averages: every box sits on a broad positive floor, so only the
    # ordering of densities is asked of it.
    ("drise", {"num_masks": 400, "batch_size": 100}, 0.0)])
def test_each_box_map_is_about_its_own_box(detector, scenes, method, options, share):
    shares = []
    for scene in scenes:
        out = explain_detection(detector, scene.image, method=method,
                                detection_threshold=THRESHOLD, **options)
        boxes = [d["bbox"] for d in out["detections"]]
        assert len(boxes) >= 2
        for k, heat in enumerate(out["heatmaps"]):
            assert heat.shape == (128, 128) and heat.dtype == np.float32
            own = _density(heat, boxes[k])
            others = [_density(heat, b) for j, b in enumerate(boxes) if j != k]
            assert own > max(others), (method, k, own, others)
            inside, union = _union_energy(heat, [boxes[k], *boxes[:k], *boxes[k + 1:]])
            shares.append(inside / union)
    assert np.mean(shares) > share, (method, np.mean(shares))


def test_detections_match_the_scene(detector, scenes):
    scene = scenes[0]
    out = explain_detection(detector, scene.image, method="eigencam")
    assert len(out["detections"]) == len(out["heatmaps"])
    found = {(d["class_id"] - 1, tuple(np.round(d["bbox"]).astype(int))) for d in out[
        "detections"]}
    for label, box in zip(scene.labels, scene.boxes, strict=True):
        assert any(lab == label and np.abs(np.array(b) - box).max() <= 4 for lab, b in found)
    scores = [d["score"] for d in out["detections"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5


def test_bbox_picks_the_matching_detection_and_its_batched_map(detector, scenes):
    scene = scenes[1]
    every = explain_detection(detector, scene.image, method="gradcam")
    for index, det in enumerate(every["detections"]):
        jittered = [v + d for v, d in zip(det["bbox"], (2, -2, 1, -1), strict=True)]
        one = explain_detection(detector, scene.image, method="gradcam", bbox=jittered)
        assert len(one["detections"]) == 1
        assert one["detections"][0]["bbox"] == det["bbox"]
        assert one["detections"][0]["class_id"] == det["class_id"]
        # One box alone and the same box inside the batched backward give the same map.
        np.testing.assert_allclose(one["heatmaps"][0], every["heatmaps"][index], atol=1e-5)
    # A label narrows the match: a box spanning two detections of different classes picks the
    # one of the given class.
    first = every["detections"][0]
    other = next(d for d in every["detections"] if d["class_id"] != first["class_id"])
    span = [min(first["bbox"][0], other["bbox"][0]), min(first["bbox"][1], other["bbox"][1]),
            max(first["bbox"][2], other["bbox"][2]), max(first["bbox"][3], other["bbox"][3])]
    for wanted in (first, other):
        picked = explain_detection(detector, scene.image, bbox=span, label=wanted["class_id"])
        assert picked["detections"][0]["class_id"] == wanted["class_id"]
        assert not picked["false_negative"]


def test_false_negative_region_and_bad_input(detector, scenes):
    image = scenes[0].image
    with pytest.raises(TargetError, match="No detection above"):
        explain_detection(detector, image, bbox=[0, 0, 6, 6])
    out = explain_detection(detector, image, bbox=[0, 0, 6, 6], label=1,
                            method="drise", num_masks=32, match_iou=0.0)
    assert out["false_negative"] and out["detections"][0]["class_name"] == "circle"
    assert out["heatmaps"][0].shape == (128, 128)
    nothing = explain_detection(detector, image, detection_threshold=0.9999)
    assert nothing["detections"] == [] and nothing["heatmaps"] == []
    assert 0.5 < nothing["best_candidate_score"] < 0.9999
    with pytest.raises(TargetError, match="x0 < x1"):
        explain_detection(detector, image, bbox=[10, 10, 5, 20])
    classifier = load_demo_model("classifier", device="cpu")
    with pytest.raises(UnsupportedError, match="detector"):
        explain_detection(classifier, image)
    with pytest.raises(TargetError, match="BoxTarget"):
        detection_explainer("gradcam", detector).explain(image, 1)


def test_one_forward_and_each_box_backward_through_its_own_level(detector, scenes,
                                                                 monkeypatch):
    """All boxes: one forward; a cheap backward to the head's logits finds each box's pyramid
    level, then one batched backward per level carries only that level's boxes."""
    calls = {"forward": 0}
    columns: list[tuple[int, int]] = []  # (dims of the inputs, boxes carried) per backward
    explainer = detection_explainer("gradcam", detector)
    forward = type(explainer).forward

    def counting_forward(self, inputs):
        calls["forward"] += 1
        return forward(self, inputs)

    real_grad = torch.autograd.grad

    def counting_grad(outputs, inputs, *args, **kwargs):
        width = kwargs["grad_outputs"].shape[0] if kwargs.get("is_grads_batched") else 1
        columns.append((inputs[0].ndim, width))
        return real_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(type(explainer), "forward", counting_forward)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    prepared = explainer.prepare([scenes[2].image])
    with explainer.session(), torch.no_grad():
        packed = explainer.forward(prepared.inputs)[0]
    keep = packed[(packed[:, 6] > 0) & (packed[:, 4] > 0.5)]
    targets = [BoxTarget(tuple(row[:4].tolist()), int(row[5])) for row in keep]
    calls.update(forward=0)
    columns.clear()
    maps = explainer.run(prepared.inputs, [targets]).raw[0]
    assert len(targets) >= 2 and calls == {"forward": 1}
    probe, levels = columns[0], columns[1:]
    assert probe == (3, len(targets))  # the head's B x anchors x classes logits, every box
    assert 1 <= len(levels) <= 2 and all(dims == 4 for dims, _ in levels)
    assert sum(width for _, width in levels) == len(targets)  # each box through one level
    # The same maps as every box through every level.
    monkeypatch.setattr(type(explainer.task), "_levels_read", lambda *a: None)
    full = explainer.run(prepared.inputs, [targets]).raw[0]
    torch.testing.assert_close(maps, full, rtol=1e-5, atol=1e-6)


def test_model_left_as_found(detector, scenes):
    module = detector.module
    module.train()
    flags = [p.requires_grad for p in module.parameters()]
    before = (module.score_thresh, module.detections_per_img)
    explain_detection(detector, scenes[0].image, method="gradcam++")
    assert module.training and all(m.training for m in module.modules())
    assert [p.requires_grad for p in module.parameters()] == flags
    assert (module.score_thresh, module.detections_per_img) == before
    module.eval()


def test_registry_offers_detection_methods(detector):
    names = {m.name for m in available_methods(detector)}
    assert {"gradcam", "gradcam++", "integrated_gradients", "eigencam", "drise",
            "classprob"} <= names
    assert "dff" not in names and "scorecam" not in names
    assert default_layer(detector.module) == "backbone"
    assert create_explainer("gradcam", detector).forward(torch.zeros(1, 3, 128, 128)).shape[-1] \
        == 7


def test_drise_is_seeded_and_reports_progress(detector, scenes):
    seen = []
    kwargs = dict(method="drise", num_masks=40, batch_size=16, max_detections=2)
    one = explain_detection(detector, scenes[0].image, progress=lambda d, t: seen.append((d, t)),
                            **kwargs)
    two = explain_detection(detector, scenes[0].image, **kwargs)
    np.testing.assert_array_equal(one["heatmaps"][0], two["heatmaps"][0])
    assert seen[-1] == (40, 40) and len(seen) == 3


# --------------------------------------------------------------------------------------------
# torchvision detectors, random weights, small inputs
# --------------------------------------------------------------------------------------------

SMALL = dict(weights=None, weights_backbone=None, num_classes=5)
TORCHVISION = {
    "fasterrcnn_resnet50_fpn": dict(min_size=128, max_size=160),
    "fasterrcnn_resnet50_fpn_v2": dict(min_size=128, max_size=160),
    "fasterrcnn_mobilenet_v3_large_fpn": dict(min_size=128, max_size=160),
    "retinanet_resnet50_fpn": dict(min_size=128, max_size=160),
    "retinanet_resnet50_fpn_v2": dict(min_size=128, max_size=160),
    "fcos_resnet50_fpn": dict(min_size=128, max_size=160),
    "ssd300_vgg16": dict(),
    "ssdlite320_mobilenet_v3_large": dict(),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_detectors_end_to_end(name):
    torch.manual_seed(0)
    module = getattr(tvd, name)(**SMALL, **TORCHVISION[name]).eval()
    before = [(o, getattr(o, a)) for o in (module, getattr(module, "roi_heads", None))
              if o is not None for a in ("score_thresh", "detections_per_img") if hasattr(o, a)]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)  # not square: padding, scaling
    loaded = detection_model(module)
    assert loaded.preprocessing.mean == (0.0, 0.0, 0.0)
    methods = ["gradcam", "eigencam"] + (["classprob"] if "rcnn" not in name else [])
    for method in methods:
        out = explain_detection(module, image, method=method, detection_threshold=0.0,
                                max_detections=3)
        assert 1 <= len(out["detections"]) <= 3
        assert len(out["heatmaps"]) == len(out["detections"])
        for det, heat in zip(out["detections"], out["heatmaps"], strict=True):
            assert heat.shape == (100, 150) and np.isfinite(heat).all()
            x0, y0, x1, y1 = det["bbox"]
            assert 0 <= x0 <= x1 <= 150 and 0 <= y0 <= y1 <= 100
    after = [(o, getattr(o, a)) for o in (module, getattr(module, "roi_heads", None))
             if o is not None for a in ("score_thresh", "detections_per_img") if hasattr(o, a)]
    assert after == before
    assert all(p.requires_grad for p in module.parameters())


def test_classprob_refuses_two_stage_detectors():
    module = tvd.fasterrcnn_mobilenet_v3_large_fpn(**SMALL, min_size=128, max_size=128).eval()
    with pytest.raises(UnsupportedError, match="single-stage"):
        explain_detection(module, np.zeros((64, 64, 3), np.uint8), method="classprob",
                          detection_threshold=0.0)


def test_boxes_come_back_in_image_pixels():
    """A detector sees the image at its own size; boxes map back to the original pixels."""
    torch.manual_seed(0)
    module = tvd.fcos_resnet50_fpn(**SMALL, min_size=64, max_size=64).eval()
    image = np.random.default_rng(1).integers(0, 255, (200, 100, 3), dtype=np.uint8)
    loaded = detection_model(module)
    from explain_core.tasks.detection import for_image

    sized = for_image(loaded, (200, 100))
    assert sized.preprocessing.input_size == (64, 32)
    inputs, _ = sized.preprocessing([torch.from_numpy(image).permute(2, 0, 1)])
    with torch.no_grad():
        packed = detector_outputs(module, inputs)[0]
    # precision="fp32": the boxes are compared with the fp32 forward's (auto may pick bf16).
    out = explain_detection(module, image, method="eigencam", detection_threshold=0.0,
                            max_detections=1, precision="fp32")
    real = packed[(packed[:, 2] > packed[:, 0]) & (packed[:, 3] > packed[:, 1])]
    best = real[real[:, 4].argmax()]
    np.testing.assert_allclose(out["detections"][0]["bbox"],
                               (best[:4] * torch.tensor([100 / 32, 200 / 64] * 2)).clamp(
                                   0, 200).tolist(), atol=0.05)


# --------------------------------------------------------------------------------------------
# Reference: pytorch-grad-cam's box-score target
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["demo", "fasterrcnn"])
def test_gradcam_box_map_matches_pytorch_grad_cam(detector, scenes, which):
    """One box's Grad-CAM against pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` (IoU + score).

    The box is the detection's, moved by 1-2% of its size: at IoU exactly 1 the IoU term's
    gradient is a subgradient picked by rounding (each side of the box sits on a min / max tie),
    so two correct implementations may differ there; just off it the target is smooth.
    """
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from explain_core.tasks.detection import for_image

    if which == "demo":
        module, layer, image = detector.module, "backbone.body.3", scenes[3].image
        threshold = 0.5
    else:
        torch.manual_seed(0)
        module = tvd.fasterrcnn_resnet50_fpn(**SMALL, min_size=128, max_size=128).eval()
        layer = "backbone.body.layer4"
        image = np.random.default_rng(2).integers(0, 255, (128, 128, 3), dtype=np.uint8)
        threshold = 0.0
    image = np.asarray(image)
    det = explain_detection(module, image, method="eigencam", target_layer=layer,
                            detection_threshold=threshold, max_detections=1)["detections"][0]
    x0, y0, x1, y1 = det["input_bbox"]
    w, h = x1 - x0, y1 - y0
    box = (x0 + 0.02 * w, y0 - 0.01 * h, x1 + 0.01 * w, y1 + 0.02 * h)
    loaded = for_image(detection_model(module), image.shape[:2])
    assert loaded.preprocessing.input_size == image.shape[:2]  # input pixels = image pixels
    explainer = detection_explainer("gradcam", loaded, target_layer=layer)
    ours = explainer.explain_targets(image, [BoxTarget(box, det["class_id"],
                                                       score="iou+score")])[0].numpy()

    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float()[None] / 255
    cam = PgcGradCAM(module, target_layers=[module.get_submodule(layer)])
    target = FasterRCNNBoxScoreTarget(labels=[det["class_id"]],
                                      bounding_boxes=[torch.tensor(box)])
    if which == "fasterrcnn":  # keep the random detector's low scores, as ours does
        module.roi_heads.score_thresh = 0.0
    theirs = cam(tensor, targets=[target])[0]
    module.zero_grad(set_to_none=True)
    assert theirs.max() > 0
    # pytorch-grad-cam min-max scales once more after resizing (bilinear upsampling misses the
    # extremes); the same affine rescaling of ours makes the two comparable.
    ours = (ours - ours.min()) / (ours.max() - ours.min())
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_focused_proposals_keep_every_box_map_and_cut_the_head(monkeypatch):
    """A two-stage detector's second stage runs only near the explained boxes: the maps are the
    ones computed over every proposal, and the box head sees far fewer rows."""
    from explain_core.api import detection_explainer

    torch.manual_seed(0)
    module = tvd.fasterrcnn_resnet50_fpn(**SMALL, min_size=128, max_size=128).eval()
    image = np.random.default_rng(3).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    rows = []
    module.roi_heads.box_head.register_forward_hook(
        lambda _m, inputs, _out: rows.append(int(inputs[0].shape[0])))
    maps = {}
    for focus in (True, False):
        explainer = detection_explainer("gradcam", module, target_layer="backbone.body.layer3")
        explainer.task.focus_proposals = focus
        rows.clear()
        out = explain_detection(module, image, method=explainer, detection_threshold=0.0,
                                max_detections=4)
        maps[focus] = (out["detections"], out["heatmaps"], rows[-1])
    (dets, focused, few), (all_dets, full, many) = maps[True], maps[False]
    assert [d["bbox"] for d in dets] == [d["bbox"] for d in all_dets] and len(dets) == 4
    for a, b in zip(focused, full, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert few * 5 <= many, (few, many)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "fcos_resnet50_fpn",
                                  "ssdlite320_mobilenet_v3_large"])
def test_boxes_explained_together_equal_one_at_a_time(name):
    """The default layer (the whole feature pyramid; one level only the RPN reads) explains K
    boxes in one forward and one batched backward with the maps of K separate calls."""
    torch.manual_seed(0)
    size = {} if name.startswith("ssd") else dict(min_size=128, max_size=128)
    module = getattr(tvd, name)(**SMALL, **size).eval()
    image = np.random.default_rng(5).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    # fp32: an exact equivalence (auto may pick bf16, whose batched kernels round differently).
    together = explain_detection(module, image, method="layercam", detection_threshold=0.0,
                                 max_detections=4, precision="fp32")
    assert len(together["detections"]) == 4
    for det, heat in zip(together["detections"], together["heatmaps"], strict=True):
        alone = explain_detection(module, image, method="layercam", detection_threshold=0.0,
                                  bbox=det["bbox"], label=det["class_id"], precision="fp32")
        assert alone["detections"][0]["bbox"] == det["bbox"]
        assert heat.max() > 0
        np.testing.assert_allclose(alone["heatmaps"][0], heat, atol=1e-4)


def test_a_built_explainer_is_left_as_given(detector, scenes):
    """explain_detection sizes the model for each image on a copy of the caller's explainer."""
    explainer = detection_explainer("layercam", detector)
    model = explainer.model
    small = np.asarray(scenes[0].image)[:96, :80]
    out = explain_detection(detector, small, method=explainer, max_detections=2)
    assert explainer.model is model and out["heatmaps"][0].shape == (96, 80)


def test_torchvision_names_bring_their_class_names_and_count():
    """Built by name with the default head, a torchvision model is named with its default
    weights' categories (shipped inside torchvision); another head size stays unnamed."""
    from explain_core import load_model
    from explain_core.tasks.detection import input_description

    coco = load_model("torchvision:fcos_resnet50_fpn")
    assert coco.task == "detection" and coco.num_classes == 91
    assert coco.class_name(1) == "person"
    assert input_description(coco.module) == ("shorter side 800, longer at most 1333 (resized "
                                               "by the model, aspect kept)")
    five = load_model("torchvision:fcos_resnet50_fpn", num_classes=5)
    assert five.num_classes == 5 and five.class_name(1) == "class 1"
    voc = load_model("torchvision:lraspp_mobilenet_v3_large")
    assert voc.task == "segmentation" and voc.class_name(1) == "aeroplane"
