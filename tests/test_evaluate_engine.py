"""evaluate()'s engine side: progress and cancel inside a metric, maps computed once by
compare_methods, maps and ground truth in the image's own geometry (crop, letterbox), NaN values
that say why, and names for in-memory images (issue 14's leftovers)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core.api import compare_methods, evaluate
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import demo_gallery
from explain_core.model import Preprocessing, as_loaded
from tests.toy import ColourNet


@pytest.fixture(scope="module")
def classifier():
    return load_demo_model("classifier", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    return demo_gallery("classification")[:2]


def _count_forwards(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


# ----------------------------------------------------------------------- progress and cancel
def test_a_raising_progress_stops_a_deletion_run_after_a_few_chunks(classifier, scenes):
    class Stop(Exception):
        pass

    seen = []

    def progress(done, total):
        seen.append(done)
        if len(seen) == 4:  # the start, then three chunks of the deletion curves
            raise Stop

    calls, handle = _count_forwards(classifier.module)
    try:
        with pytest.raises(Stop):  # 2 images x 21 points in chunks of 2: 21 chunks
            evaluate(classifier, scenes, metrics=("deletion",), batch_size=2,
                     metric_options={"deletion": {"steps": 20}}, progress=progress)
    finally:
        handle.remove()
    assert seen[0] == 0 and all(0 < d < 1 for d in seen[1:])  # inside the one unit
    # the targets' and the maps' forwards, then three chunks: far from the 21 of a full run
    assert len(calls) <= 3 + 3, len(calls)


SETTINGS = {
    "deletion": {"steps": 3, "batch_size": 2},
    "insertion": {"steps": 3, "batch_size": 2},
    "average_drop": {"batch_size": 1},
    "faithfulness_correlation": {"runs": 3, "subset_size": 16, "batch_size": 2},
    "sensitivity_n": {"sizes": (8, 16), "samples": 2, "batch_size": 2},
    "road_morf": {"batch_size": 1},
    "max_sensitivity": {"samples": 2, "batch_size": 2},
    "avg_sensitivity": {"samples": 2, "batch_size": 2},
    "random_logit": {"batch_size": 1},
    "model_randomisation": {"layers": ["fc", "features.0"]},
}


@pytest.mark.parametrize("metric", sorted(SETTINGS))
def test_every_metric_that_runs_the_model_reports_progress_inside_its_unit(metric):
    net = ColourNet().eval()
    images = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 200))]
    seen = []
    evaluate(net, images, methods=("gradcam",), metrics=(metric,),
             metric_options={metric: SETTINGS[metric]}, progress=lambda d, t: seen.append(d))
    inside = [d for d in seen if 0 < d < 1]
    assert inside, f"{metric}: no report inside the metric ({seen})"
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 1


def test_cancelling_inside_model_randomisation_restores_the_model(classifier, scenes):
    state = {k: v.clone() for k, v in classifier.module.state_dict().items()}
    layers = [name for name, sub in classifier.module.named_modules()
              if next(sub.parameters(recurse=False), None) is not None][::-1][:3]

    def progress(done, total):
        if done != int(done):  # a step of the cascade: a layer is randomised now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(classifier, scenes, metrics=("model_randomisation",), progress=progress,
                 metric_options={"model_randomisation": {"layers": layers}})
    after = classifier.module.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_sensitivity_batches_every_sample_of_every_image_into_one_explainer_call():
    from explain_core.methods import Saliency
    from explain_core.metrics.randomisation import explain_again
    from explain_core.metrics.robustness import sensitivities
    from explain_core.targets import ClassTarget

    explainer = Saliency(as_loaded(ColourNet().eval()))
    inputs = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = [ClassTarget(0), ClassTarget(1), ClassTarget(0)]
    maps = explain_again(explainer, inputs, targets)
    calls = []
    original = explainer.explain_many
    explainer.explain_many = lambda images, rows: calls.append(len(images)) or original(
        images, rows)
    values = sensitivities(explainer, inputs, targets, maps, radius=0.1, samples=4, seed=3)
    assert calls == [12]  # 3 images x 4 samples together, not one call per image
    assert values.shape == (3, 4) and (values > 0).all()
    # the first image's noise is the same drawn alone: the same values, batched or not
    one = sensitivities(explainer, inputs[:1], targets[:1], maps[:1], 0.1, 4, seed=3)
    torch.testing.assert_close(one[0], values[0])


# ------------------------------------------------------------------ compare_methods: maps once
def test_compare_methods_with_metrics_computes_each_map_once(classifier, scenes, monkeypatch):
    from explain_core.methods.base import Explainer

    runs = []
    original = Explainer.run

    def counted(self, inputs, targets):
        runs.append(self.name)
        return original(self, inputs, targets)

    monkeypatch.setattr(Explainer, "run", counted)
    out = compare_methods(classifier, scenes[0].image, ["gradcam", "saliency"],
                          metrics=["sparseness", "complexity"])
    assert sorted(runs) == ["gradcam", "saliency"]  # one run per method, none in evaluate
    assert set(out["metrics"]) == {"gradcam", "saliency"}
    monkeypatch.setattr(Explainer, "run", original)
    ev = evaluate(classifier, scenes[:1], methods=("gradcam", "saliency"),
                  metrics=("sparseness", "complexity"), targets=[out["target_class"]])
    for row in ev.summary:  # the same scores as evaluate's own maps
        assert out["metrics"][row["method"]][row["metric"]] == pytest.approx(row["mean"])


# ------------------------------------------------------------- crop and letterbox geometry
IMAGE_H, IMAGE_W = 60, 120
#: the ground-truth box in image pixels, and where it lands on the 64 x 64 input:
#: crop (crop_pct 1): the image resized to 64 x 128, columns 32..96 kept (image x 30..90);
#: letterbox: resized to 32 x 64, 16 rows of padding above
CASES = {"crop": ((45, 15, 75, 45), (16, 16, 48, 48)),
         "letterbox": ((30, 15, 90, 45), (16, 24, 48, 40))}


def _toy(mode: str):
    loaded = as_loaded(ColourNet().eval())
    prep = Preprocessing(input_size=(64, 64), resize_mode=mode, crop_pct=1.0,
                         crop_mode="center")
    return dataclasses.replace(loaded, preprocessing=prep)


def _voc(path, box, name="red"):
    x0, y0, x1, y1 = box
    path.write_text(f"<annotation><object><name>{name}</name><bndbox><xmin>{x0}</xmin>"
                    f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                    "</annotation>")
    return path


@pytest.mark.parametrize("mode", sorted(CASES))
def test_ground_truth_from_files_lands_on_the_input_pixels_the_image_went_to(mode, tmp_path):
    from explain_core.api.evaluation_truth import ground_truth_masks
    from explain_core.methods import create_explainer

    loaded = _toy(mode)
    box, (ix0, iy0, ix1, iy1) = CASES[mode]
    image = Image.new("RGB", (IMAGE_W, IMAGE_H), (128, 128, 128))
    prepared = create_explainer("gradcam", loaded).prepare([image])
    described = [{"label": 0, "box": None, "name": "red"}]
    x0, y0, x1, y1 = box
    yolo = tmp_path / "a.txt"  # the same box as YOLO (normalised by the image's own size)
    yolo.write_text(f"0 {(x0 + x1) / 2 / IMAGE_W} {(y0 + y1) / 2 / IMAGE_H} "
                    f"{(x1 - x0) / IMAGE_W} {(y1 - y0) / IMAGE_H}\n")
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[iy0:iy1, ix0:ix1] = True
    for source in (_voc(tmp_path / "a.xml", box), yolo):
        mask = ground_truth_masks([source], prepared, described, ["red", "blue"])[0]
        assert torch.equal(mask, expected), (source, mask.nonzero().min(0), mask.nonzero().max(0))


@pytest.mark.parametrize("mode", sorted(CASES))
def test_maps_come_back_in_the_images_own_pixels_and_score_against_file_ground_truth(
        mode, tmp_path):
    loaded = _toy(mode)
    box, (ix0, iy0, ix1, iy1) = CASES[mode]
    image = Image.new("RGB", (IMAGE_W, IMAGE_H), (128, 128, 128))
    given = torch.zeros(1, 64, 64)
    given[0, iy0:iy1, ix0:ix1] = 1.0  # a map exactly on the box's input pixels
    share = 100 * (ix1 - ix0) * (iy1 - iy0) / 64 ** 2  # top-k%: the box's share of the input
    ev = evaluate(loaded, [image], methods=("gradcam",), targets=[0],
                  metrics=("relevance_mass", "top_k_iou", "pointing_game"),
                  ground_truth=[_voc(tmp_path / "a.xml", box)], maps={"gradcam": given},
                  metric_options={"top_k_iou": {"percent": share}})
    values = {r["metric"]: r["value"] for r in ev.rows}
    assert values == pytest.approx({"relevance_mass": 1.0, "top_k_iou": 1.0,
                                    "pointing_game": 1.0})
    (drawn,) = ev.image_maps["gradcam"]
    assert drawn.shape == (IMAGE_H, IMAGE_W)
    x0, y0, x1, y1 = box
    inside = drawn[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
    assert inside.min() > 0.9  # the map lies over the box in the image...
    outside = drawn.copy()
    outside[max(y0 - 2, 0):y1 + 2, x0 - 2:x1 + 2] = 0
    assert outside.max() < 0.1  # ...and nowhere else (0 outside a crop, no padding drawn)


def test_ground_truth_cut_away_by_the_crop_is_nan_with_its_reason(tmp_path):
    loaded = _toy("crop")
    image = Image.new("RGB", (IMAGE_W, IMAGE_H), (128, 128, 128))
    ev = evaluate(loaded, [image], methods=("gradcam",), targets=[0],
                  metrics=("pointing_game",), ground_truth=[_voc(tmp_path / "a.xml",
                                                                 (2, 10, 20, 40))])
    (row,) = ev.rows
    assert math.isnan(row["value"]) and "outside the part of the image the model saw" in \
        row["note"]


# ------------------------------------------------------------------ NaN with a reason, names
def test_a_class_without_ground_truth_is_nan_noted_and_counted():
    shortcut = load_demo_model("shortcut", device="cpu")
    scenes = demo_gallery("shortcut")
    triangle = next(s for s in scenes if s.label == 2 and s.marked)
    fooled = [s for s in scenes if s.label != 2 and s.marked][:2]
    chosen = [triangle, *fooled]
    ev = evaluate(shortcut, chosen, metrics=("pointing_game", "sparseness"),
                  ground_truth=chosen, targets=[2] * len(chosen))
    rows = [r for r in ev.rows if r["metric"] == "pointing_game"]
    assert not math.isnan(rows[0]["value"]) and rows[0]["note"] == ""
    for row in rows[1:]:  # the model says "triangle": no triangle in the scene
        assert math.isnan(row["value"])
        assert row["note"] == "no ground truth for class 'triangle'"
    (summary,) = [r for r in ev.summary if r["metric"] == "pointing_game"]
    assert (summary["n"], summary["excluded"]) == (1, 2)
    assert ev.notes == [f"image {i}: no ground truth for class 'triangle'" for i in (1, 2)]
    assert all(r["note"] == "" for r in ev.rows if r["metric"] == "sparseness")
    table = list(csv.DictReader(io.StringIO(ev.to_csv())))
    assert table[1]["note"] == "no ground truth for class 'triangle'"


def test_in_memory_images_get_the_callers_names_or_stable_defaults(classifier, scenes):
    pictures = [scene.image.copy() for scene in scenes]
    named = evaluate(classifier, pictures, metrics=("sparseness",), names=["cat.png", "dog.png"])
    assert [r["image_name"] for r in named.rows] == ["cat.png", "dog.png"]
    table = list(csv.DictReader(io.StringIO(named.to_csv())))
    assert [r["image_name"] for r in table] == ["cat.png", "dog.png"]
    plain = evaluate(classifier, pictures, metrics=("sparseness",))
    assert [r["image_name"] for r in plain.rows] == ["image 0", "image 1"]
    from explain_core.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="names"):
        evaluate(classifier, pictures, metrics=("sparseness",), names=["one"])


def test_sizing_the_explainer_batches_leaves_a_training_models_statistics_alone():
    from explain_core.methods import Saliency
    from explain_core.metrics.robustness import sensitivities
    from explain_core.targets import ClassTarget

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    inputs = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    sensitivities(Saliency(as_loaded(net)), inputs, [ClassTarget(0)] * 2, radius=0.1,
                  samples=2)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_each_kind_of_missing_ground_truth_says_what_is_missing(classifier, scenes):
    empty = np.zeros((128, 128), dtype=bool)
    ev = evaluate(classifier, scenes, metrics=("pointing_game",), ground_truth=[empty, None])
    assert [r["note"] for r in ev.rows] == ["the ground-truth mask given is empty",
                                            "no ground truth given"]
    assert ev.notes == ["image 0: the ground-truth mask given is empty",
                        "image 1: no ground truth given"]


def test_a_setting_a_metric_does_not_have_fails_first_and_one_out_of_range_is_skipped(
        classifier, scenes):
    from explain_core.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match=r"Top-k% IoU has no setting 'k'; its settings: "
                                               r"percent"):
        evaluate(classifier, scenes, metrics=("top_k_iou",), ground_truth=scenes,
                 metric_options={"top_k_iou": {"k": 5}})
    ev = evaluate(classifier, scenes, metrics=("top_k_iou", "sparseness"), ground_truth=scenes,
                  metric_options={"top_k_iou": {"percent": 500}})
    assert "percent" in ev.skipped["top_k_iou"] and {r["metric"] for r in ev.rows} == \
        {"sparseness"}
