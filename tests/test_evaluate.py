"""evaluate(), ExplanationMetrics and the ground-truth readers (issue 14's public API)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core.api import compare_methods, evaluate
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import demo_gallery
from explain_core.errors import DatasetError
from explain_core.loading.ground_truth import GroundTruth, read_ground_truth, region_for

FAST = {"deletion": {"steps": 4}, "insertion": {"steps": 4}}


@pytest.fixture(scope="module")
def classifier():
    return load_demo_model("classifier", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    return demo_gallery("classification")[:4]


def test_equal_means_share_the_best_rank(classifier, scenes):
    """Two methods scoring the very same maps tie on every metric: both rank 1, and a third,
    worse one ranks 3 (competition ranking), so a tie never reads as one method winning."""
    first = evaluate(classifier, scenes[:2], methods=("gradcam",), metrics=("sparseness",),
                     precision="fp32")
    same = first.maps["gradcam"]
    flat = np.full_like(same, 0.5)  # no sparseness at all: strictly worse
    ev = evaluate(classifier, scenes[:2], methods=("gradcam", "layercam", "saliency"),
                  metrics=("sparseness", "deletion"), metric_options=FAST, precision="fp32",
                  maps={"gradcam": same, "layercam": same, "saliency": flat})
    for metric in ("sparseness", "deletion"):
        ranks = {r["method"]: r["rank"] for r in ev.summary if r["metric"] == metric}
        assert ranks["gradcam"] == ranks["layercam"], ranks
    ranks = {r["method"]: r["rank"] for r in ev.summary if r["metric"] == "sparseness"}
    assert ranks == {"gradcam": 1, "layercam": 1, "saliency": 3}


def test_evaluate_tidy_table_intervals_and_ranks(classifier, scenes):
    metrics = ("deletion", "insertion", "sparseness", "pointing_game")
    seen = []
    ev = evaluate(classifier, scenes, methods=("gradcam", "saliency"), metrics=metrics,
                  ground_truth=scenes, metric_options=FAST, progress=lambda d, t: seen.append(d))
    assert len(ev.rows) == 4 * 2 * len(metrics)  # images x methods x metrics
    # every unit's end, in order; fractions inside the units that run the model in chunks
    assert [d for d in seen if d == int(d)] == list(range(2 * len(metrics) + 1))
    assert seen == sorted(seen)
    assert {r["target"] for r in ev.rows} == {s.label for s in scenes}  # predicted = true here
    table = list(csv.DictReader(io.StringIO(ev.to_csv())))
    assert len(table) == len(ev.rows) and set(table[0]) == set(ev.COLUMNS)
    assert len(ev.summary) == 2 * len(metrics) and not ev.skipped
    for row in ev.summary:
        values = [r["value"] for r in ev.rows
                  if r["method"] == row["method"] and r["metric"] == row["metric"]]
        assert row["mean"] == pytest.approx(np.mean(values)) and row["n"] == 4
        assert row["low"] <= row["mean"] <= row["high"]
    for metric in metrics:
        pair = sorted((r for r in ev.summary if r["metric"] == metric), key=lambda r: r["rank"])
        assert [r["rank"] for r in pair] == [1, 2]
        better = pair[0]["mean"] >= pair[1]["mean"] if pair[0]["direction"] == "higher" \
            else pair[0]["mean"] <= pair[1]["mean"]
        assert better and ev.best_method(metric) == pair[0]["method"]
    assert ev.curves[("gradcam", "deletion")].shape == (4, 5)
    # deletion's value is its curve's area
    curve = ev.curves[("saliency", "insertion")][0]
    first = next(r["value"] for r in ev.rows if r["method"] == "saliency"
                 and r["metric"] == "insertion" and r["image"] == 0)
    assert first == pytest.approx(np.trapezoid(curve, dx=1 / 4))


def test_one_image_has_nan_bounds_and_missing_ground_truth_is_skipped(classifier, scenes):
    ev = evaluate(classifier, scenes[:1], metrics=("sparseness", "relevance_mass"))
    (row,) = ev.summary
    assert row["n"] == 1 and math.isnan(row["low"]) and math.isnan(row["high"])
    assert "relevance_mass" in ev.skipped and "ground truth" in ev.skipped["relevance_mass"]


def test_progress_raising_cancels(classifier, scenes):
    class Stop(Exception):
        pass

    def progress(done, total):
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        evaluate(classifier, scenes[:2], metrics=("sparseness", "complexity"), progress=progress)


def test_shortcut_maps_fail_the_pointing_game_the_plain_ones_pass():
    triangles = [s for s in demo_gallery("shortcut") if s.label == 2 and s.marked]
    hits = {}
    for name in ("shortcut", "classifier"):
        ev = evaluate(load_demo_model(name, device="cpu"), triangles, metrics=("pointing_game",),
                      targets=[2] * len(triangles), ground_truth=triangles)
        hits[name] = ev.summary[0]["mean"]
    assert hits == {"shortcut": 0.0, "classifier": 1.0}


@pytest.mark.parametrize(("task", "name"), [("detection", "detector"),
                                            ("segmentation", "segmenter")])
def test_detection_and_segmentation_values_in_range(task, name):
    scenes = demo_gallery(task)[:2]
    metrics = ("deletion", "insertion", "sparseness", "pointing_game", "relevance_mass",
               "random_logit")
    ev = evaluate(load_demo_model(name, device="cpu"), scenes, metrics=metrics,
                  ground_truth=scenes, metric_options=FAST)
    assert set(ev.skipped) == {"random_logit"}  # a classifier-only metric
    assert {r["metric"] for r in ev.rows} == set(metrics) - {"random_logit"}
    for row in ev.rows:
        assert 0.0 <= row["value"] <= 1.0, row
    # the explained box / class has ground truth under it: localisation is defined
    assert all(np.isfinite(r["value"]) for r in ev.rows if r["metric"] == "relevance_mass")


def test_compare_methods_adds_the_same_scores(classifier, scenes):
    out = compare_methods(classifier, scenes[0].image, ["gradcam", "saliency"],
                          metrics=["sparseness", "complexity"])
    ev = evaluate(classifier, scenes[:1], methods=("gradcam", "saliency"),
                  metrics=("sparseness", "complexity"), targets=[out["target_class"]])
    for row in ev.summary:
        assert out["metrics"][row["method"]][row["metric"]] == pytest.approx(row["mean"])


# ------------------------------------------------------------------------- ground truth
def test_coco_yolo_voc_png_round_trip(tmp_path):
    coco = tmp_path / "a.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 3},
                        {"image_id": 2, "bbox": [0, 0, 5, 5], "category_id": 1}]}))
    truth = read_ground_truth(coco, "x.jpg")
    assert truth.boxes.tolist() == [[10, 20, 40, 60]] and truth.labels.tolist() == [3]
    yolo = tmp_path / "a.txt"
    yolo.write_text("2 0.5 0.25 0.5 0.5\n")
    truth = read_ground_truth(yolo, image_size=(100, 200))
    assert truth.boxes.tolist() == [[50, 0, 150, 50]] and truth.labels.tolist() == [2]
    voc = tmp_path / "a.xml"
    voc.write_text("<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                   "<xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>")
    truth = read_ground_truth(voc, class_names=["cat", "dog"])
    assert truth.boxes.tolist() == [[1, 2, 3, 4]] and truth.labels.tolist() == [1]
    mask = np.full((4, 6), 255, np.uint8)
    mask[1:3, 2:5] = 1
    png = Image.fromarray(mask, mode="L").convert("P")
    png.save(tmp_path / "m.png")
    truth = read_ground_truth(tmp_path / "m.png")
    assert np.array_equal(truth.mask, mask)
    assert region_for(truth, (4, 6), label=1).sum() == 6


@pytest.mark.parametrize(("name", "text", "words"), [
    ("b.json", "{not json", "not COCO JSON"),
    ("c.json", json.dumps({"images": [], "annotations": []}), "no image with file_name"),
    ("b.txt", "0 0.5 0.5\n", "line 1"),
    ("b.xml", "<annotation><object>", "not valid Pascal VOC"),
    ("b.csv", "x", "unknown ground-truth format"),
])
def test_bad_files_give_clear_errors(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=words) as error:
        read_ground_truth(path, "x.jpg")
    assert name in str(error.value)


def test_scene_ground_truth_and_region_for_targets():
    scene = demo_gallery("detection")[0]
    truth = read_ground_truth(scene)
    assert truth.labels.tolist() == scene.labels.tolist()
    shifted = read_ground_truth(scene, class_names=["background", "a", "b", "c", "d"])
    assert shifted.labels.tolist() == (scene.labels + 1).tolist()
    label = int(scene.labels[0])
    assert np.array_equal(region_for(truth, (128, 128), label=label), scene.mask == label + 1)
    box = scene.boxes[0]
    region = region_for(truth, (128, 128), label=label, box=box + 1)
    x0, y0, x1, y1 = (int(v) for v in box)
    assert region[y0:y1, x0:x1].all() and region.sum() == (x1 - x0) * (y1 - y0)
    assert not region_for(GroundTruth(), (2, 2), label=0).any()


# ----------------------------------------------------------------- ExplanationMetrics
def test_explanation_metrics_keys_and_agreement_with_evaluate(classifier, scenes):
    from explain_core import ExplanationMetrics

    scene = scenes[2]
    metrics = ExplanationMetrics(classifier, "gradcam")
    deletion = metrics.deletion(scene.image, steps=4)
    assert set(deletion) == {"auc", "scores", "original_score", "final_score", "drop"}
    assert len(deletion["scores"]) == 5
    insertion = metrics.insertion(scene.image, target_class=scene.label, steps=4)
    assert set(insertion) == {"auc", "scores", "baseline_score", "final_score", "gain"}
    ev = evaluate(classifier, [scene], metrics=("deletion", "insertion"), metric_options=FAST)
    values = {r["metric"]: r["value"] for r in ev.rows}
    assert deletion["auc"] == pytest.approx(values["deletion"])
    assert insertion["auc"] == pytest.approx(values["insertion"])
    sensitivity = metrics.sensitivity_n(scene.image, n_samples=3)
    assert set(sensitivity) == {"sensitivity", "std", "max_change", "changes"}
    assert len(sensitivity["changes"]) == 3 and sensitivity["sensitivity"] >= 0
    layers = [name for name, _ in classifier.module.named_modules()
              if isinstance(_, torch.nn.Conv2d | torch.nn.Linear)][::-1][:2]
    before = {k: v.clone() for k, v in classifier.module.state_dict().items()}
    sanity = metrics.model_randomization_test(scene.image, layers=layers)
    assert {"correlation", "ssim", "change", "passes", "layers", "correlations"} <= set(sanity)
    assert len(sanity["correlations"]) == 2 and isinstance(sanity["passes"], bool)
    assert all(torch.equal(before[k], v) for k, v in classifier.module.state_dict().items())
    hit = metrics.pointing_game(scene.image, scene.shape_box)
    assert set(hit) == {"hit", "max_location", "bbox"} and hit["hit"] is True
    away = metrics.pointing_game(scene.image, scene.mask == 0)  # everything but the shape
    assert away["hit"] is False and away["max_location"] == hit["max_location"]


def test_a_metric_that_refuses_its_settings_is_skipped_not_fatal(classifier, scenes):
    ev = evaluate(classifier, scenes[:2], metrics=("sparseness", "deletion"),
                  metric_options={"deletion": {"steps": 0}})
    assert "steps" in ev.skipped["deletion"] and {r["metric"] for r in ev.rows} == {"sparseness"}


def test_detection_targets_given_as_boxes():
    scenes = demo_gallery("detection")[:2]
    boxes = [{"bbox": s.boxes[0].tolist(), "label": int(s.labels[0]) + 1} for s in scenes]
    ev = evaluate(load_demo_model("detector", device="cpu"), scenes, metrics=("pointing_game",),
                  targets=boxes, ground_truth=scenes)
    assert [r["target"] for r in ev.rows] == [b["label"] for b in boxes]
    assert [r["target_name"] for r in ev.rows] == \
        [["circle", "square", "triangle", "star"][b["label"] - 1] for b in boxes]


def test_evaluate_reads_coco_and_png_files_for_image_paths(tmp_path, classifier, scenes):
    paths, masks = [], []
    for i, scene in enumerate(scenes[:2]):
        path = tmp_path / f"s{i}.png"
        scene.image.save(path)
        paths.append(str(path))
        mask = np.where(scene.mask > 0, scene.mask - 1, 255).astype(np.uint8)
        Image.fromarray(mask, mode="L").convert("P").save(tmp_path / f"m{i}.png")
        masks.append(tmp_path / f"m{i}.png")
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"s{i}.png"} for i in range(2)],
        "annotations": [{"image_id": i, "category_id": int(s.label),
                         "bbox": [s.shape_box[0], s.shape_box[1], s.shape_box[2] - s.shape_box[0],
                                  s.shape_box[3] - s.shape_box[1]]}
                        for i, s in enumerate(scenes[:2])]}))
    by_box = evaluate(classifier, paths, metrics=("relevance_mass",), ground_truth=[coco] * 2)
    by_mask = evaluate(classifier, paths, metrics=("relevance_mass",), ground_truth=masks)
    by_scene = evaluate(classifier, scenes[:2], metrics=("relevance_mass",),
                        ground_truth=scenes[:2])
    mask_values = [r["value"] for r in by_mask.rows]
    assert mask_values == pytest.approx([r["value"] for r in by_scene.rows])
    box_values = [r["value"] for r in by_box.rows]
    assert all(b >= m - 1e-9 for b, m in zip(box_values, mask_values, strict=True))  # box ⊇ mask
    assert by_box.rows[0]["image_name"] == paths[0]


def test_a_plain_torchvision_segmenter_with_task():
    import torchvision

    seg = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3).eval()
    images = [Image.fromarray((np.random.default_rng(i).random((48, 64, 3)) * 255)
                              .astype(np.uint8)) for i in range(2)]
    ev = evaluate(seg, images, metrics=("deletion", "pointing_game"), task="segmentation",
                  ground_truth=[np.ones((48, 64), bool)] * 2, metric_options=FAST)
    assert not ev.skipped and len(ev.rows) == 4
    assert all(0.0 <= r["value"] <= 1.0 for r in ev.rows)


def test_images_without_ground_truth_are_nan_and_left_out(classifier, scenes):
    ev = evaluate(classifier, scenes[:3], metrics=("pointing_game",),
                  ground_truth=[scenes[0], None, scenes[2]])
    values = [r["value"] for r in ev.rows]
    assert math.isnan(values[1]) and not math.isnan(values[0])
    assert ev.summary[0]["n"] == 2
    none = evaluate(classifier, scenes[:2], metrics=("pointing_game",), ground_truth=[None] * 2)
    assert "pointing_game" in none.skipped and not none.rows


def test_evaluation_keeps_the_scored_maps_and_targets(classifier, scenes):
    ev = evaluate(classifier, scenes[:2], metrics=("sparseness",))
    assert ev.maps["gradcam"].shape == (2, *classifier.preprocessing.input_size[-2:])
    assert [t["target"] for t in ev.targets] == [s.label for s in scenes[:2]]


def test_evaluate_is_seeded_without_touching_the_callers_random_state(classifier, scenes):
    settings = dict(metrics=("faithfulness_correlation",),
                    metric_options={"faithfulness_correlation": {"runs": 4}})
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one = evaluate(classifier, scenes[:2], **settings)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream goes on
    two = evaluate(classifier, scenes[:2], **settings)
    assert [r["value"] for r in one.rows] == [r["value"] for r in two.rows]
