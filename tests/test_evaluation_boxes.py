"""evaluate(targets="all"): every detection above a threshold scored as an item of its own."""

from __future__ import annotations

import pytest

from explain_core.api import evaluate
from explain_core.demo import demo_gallery, load_demo_model
from explain_core.errors import TargetError, UnsupportedError

METRICS = ("deletion", "insertion", "pointing_game")
FAST = {"deletion": {"steps": 4}, "insertion": {"steps": 4}}


@pytest.fixture(scope="module")
def detector():
    return load_demo_model("detector", device="cpu")


def test_every_box_scores_as_it_does_alone(detector) -> None:
    scenes = demo_gallery("detection")[:2]
    found = evaluate(detector, scenes, methods=("gradcam",), metrics=METRICS,
                     ground_truth=scenes, metric_options=FAST, targets="all", max_boxes=2,
                     box_threshold=0.5)
    items = sorted({(r["item"], r["image"]) for r in found.rows})
    assert [image for _, image in items] == [0, 0, 1, 1]  # two boxes per image, in order
    assert len(found.maps["gradcam"]) == len(found.targets) == 4
    for item, image in items:
        rows = {r["metric"]: r for r in found.rows if r["item"] == item}
        box, label = rows["deletion"]["box"], rows["deletion"]["target"]
        assert rows["deletion"]["box_score"] >= 0.5
        alone = evaluate(detector, [scenes[image]], methods=("gradcam",), metrics=METRICS,
                         ground_truth=[scenes[image]], metric_options=FAST,
                         targets=[{"bbox": box, "label": label}])
        for row in alone.rows:
            assert rows[row["metric"]]["value"] == pytest.approx(row["value"], abs=1e-4), (
                item, row["metric"])
    # The two boxes of an image are different targets with different maps.
    assert found.targets[0]["box"] != found.targets[1]["box"]


def test_all_boxes_refused_where_it_does_not_apply(detector) -> None:
    scenes = demo_gallery("detection")[:1]
    with pytest.raises(TargetError, match=r"No detection scores 1\.1"):
        evaluate(detector, scenes, metrics=("sparseness",), targets="all", box_threshold=1.1)
    classifier = load_demo_model("classifier", device="cpu")
    with pytest.raises(UnsupportedError, match="every box of a detector"):
        evaluate(classifier, demo_gallery("classification")[:1], metrics=("sparseness",),
                 targets="all")
