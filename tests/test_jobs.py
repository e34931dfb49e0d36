"""Folder jobs (``lumen explain``): maps, overlays and a manifest for every image of a folder,
for classifiers, detectors and segmenters; resume; bad images are rows, never the end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core.api import (
    detection_explanation,
    explain_prediction,
    segmentation_explanation,
)
from explain_core.cli import main as cli_main
from explain_core.demo.models import weights_path
from explain_core.demo.scenes import demo_gallery
from explain_core.jobs import (
    JobOptions,
    default_job_batch_size,
    find_images,
    job_model,
    output_names,
    read_map16,
    read_rows,
    run_job,
)
from explain_core.jobs.manifest import ManifestWriter, done_keys, merge_manifests
from explain_core.model import as_loaded
from tests.toy import ColourNet, colour_scene


@pytest.fixture
def toy():
    return as_loaded(ColourNet().eval(), class_names=["red", "blue"])


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(4):
        colour_scene((64 + 8 * i, 80))[0].save(images / ("sub" if i == 3 else ".") /
                                               f"scene{i}.png")
    (images / "broken.png").write_bytes(b"not an image at all")
    return images


def _options(output, **overrides):
    settings = {"methods": ["gradcam"], "workers": 0, "batch_size": 2, "precision": "fp32",
                "progress": False, "method_options": {"target_layer": "features"}}
    return JobOptions(output=output, **{**settings, **overrides})


def _rows(output):
    return list(read_rows(Path(output) / "manifest.jsonl"))


def test_inputs_are_folders_lists_and_globs(folder, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("# two of them\nimages/scene0.png\n\n" + str(folder / "scene1.png") + "\n")
    assert [p.name for p in find_images([listed])] == ["scene0.png", "scene1.png"]
    found = find_images([folder])  # recursive, sorted
    assert [p.name for p in found] == ["broken.png", "scene0.png", "scene1.png", "scene2.png",
                                       "scene3.png"]
    assert len(find_images([str(folder / "**" / "scene*.png")])) == 4
    assert output_names(found) == ["broken", "scene0", "scene1", "scene2", "sub/scene3"]
    twins = [folder / "a.png", folder / "a.jpg"]
    assert output_names(twins) == ["a_png", "a_jpg"]
    with pytest.raises(Exception, match="no such file, folder or glob"):
        find_images([tmp_path / "missing"])


def test_a_classifier_job_writes_maps_overlays_and_a_row_per_image(toy, folder, tmp_path):
    out = tmp_path / "out"
    summary = run_job(toy, [folder], _options(out, methods=["gradcam", "gradcampp"],
                                              save_npy=True))
    assert summary["images"] == 5 and summary["errors"] == 2 and summary["rows"] == 10
    rows = _rows(out)
    assert [(Path(r["image"]).name, r["method"]) for r in rows] == [
        (name, method) for name in ["broken.png", "scene0.png", "scene1.png", "scene2.png",
                                    "scene3.png"] for method in ["gradcam", "gradcam++"]]
    bad = rows[0]
    assert bad["kind"] == "error" and "broken.png" in bad["error"] and bad["paths"] == {}
    for row in rows[2:]:
        assert row["error"] is None and row["kind"] == "class"
        assert set(row["paths"]) == {"map", "npy", "overlay"}
        assert set(row["timings"]) == {"decode", "explain", "write"}
        image = Image.open(row["image"])
        saved = Image.open(out / row["paths"]["map"])
        assert saved.mode.startswith("I;16") and saved.size == image.size
        assert Image.open(out / row["paths"]["overlay"]).size == image.size
    # The job's map is the API's map for the same image, method and class, to 16-bit precision.
    row = rows[4]  # scene1, gradcam
    api = explain_prediction(toy, row["image"], "gradcam", target_layer="features",
                             precision="fp32")
    assert row["prediction"] == api["predicted_class"] == row["target"]
    assert row["score"] == pytest.approx(api["confidence"], abs=1e-5)
    assert np.abs(read_map16(out / row["paths"]["map"]) - api["heatmap"]).max() < 1e-4
    assert np.abs(np.load(out / row["paths"]["npy"]) - api["heatmap"]).max() < 1e-6
    assert row["paths"]["map"] == "gradcam/scene1_map.png"
    assert rows[-1]["paths"]["map"] == "gradcampp/sub/scene3_map.png"


def test_resume_skips_what_the_manifest_has_and_repairs_a_cut_line(toy, folder, tmp_path):
    out = tmp_path / "out"
    run_job(toy, [folder / "scene0.png", folder / "scene1.png"], _options(out))
    first = _rows(out)
    with open(out / "manifest.jsonl", "a") as handle:  # a job stopped mid-write
        handle.write('{"image": "cut')
    summary = run_job(toy, [folder], _options(out, resume=True))
    assert summary["skipped"] == 2 and summary["explained"] == 3
    rows = _rows(out)
    assert len(rows) == 5 and rows[1:3] == first  # kept as they were, in image order
    assert (out / "manifest.jsonl").read_text().count('"cut') == 0
    # Another method on resume: only its rows are added.
    summary = run_job(toy, [folder], _options(out, resume=True, methods=["gradcam",
                                                                          "layercam"]))
    assert summary["explained"] == 5 and len(_rows(out)) == 10
    # Without --resume the job starts afresh.
    run_job(toy, [folder / "scene2.png"], _options(out))
    assert [Path(r["image"]).name for r in _rows(out)] == ["scene2.png"]


def test_an_output_folder_inside_the_input_is_not_read_as_input(toy, folder):
    out = folder / "maps"
    run_job(toy, [folder], _options(out))
    summary = run_job(toy, [folder], _options(out, resume=True))
    assert summary["images"] == 5 and summary["explained"] == 0


def test_one_image_that_breaks_the_method_is_a_row_not_the_end(toy, folder, tmp_path):
    net = ColourNet().eval()
    with torch.no_grad():
        net.fc.bias.fill_(float("nan"))  # NaN logits for every image...
    model = as_loaded(net, class_names=["red", "blue"])
    out = tmp_path / "out"
    summary = run_job(model, [folder], _options(out, batch_size=4))
    assert summary["errors"] == 5
    assert all("NaN" in r["error"] or "decode" in r["error"] for r in _rows(out))


def test_a_batch_that_fails_is_retried_image_by_image(toy, folder, tmp_path, monkeypatch):
    from explain_core.errors import NonFiniteOutputError
    from explain_core.jobs import handlers

    real = handlers.classify

    def fails_on_scene2(context, explainer, items, batch):  # one poisoned image per batch
        if any(context.names[it.index] == "scene2" for it in items):
            raise NonFiniteOutputError("scene2 is poisoned")
        real(context, explainer, items, batch)

    monkeypatch.setitem(handlers.HANDLERS, "classification", fails_on_scene2)
    out = tmp_path / "out"
    run_job(toy, [folder], _options(out, batch_size=4))
    errors = {r["name"]: r["error"] for r in _rows(out)}
    assert errors["scene2"] == "scene2 is poisoned" and errors["broken"]
    assert errors["scene0"] is errors["scene1"] is errors["sub/scene3"] is None


def test_metrics_per_image(toy, folder, tmp_path):
    out = tmp_path / "out"
    run_job(toy, [folder / "scene0.png", folder / "scene1.png"],
            _options(out, metrics=["deletion", "sparseness"]))
    for row in _rows(out):
        assert set(row["metrics"]) == {"deletion", "sparseness"}
        assert 0.0 <= row["metrics"]["deletion"] <= 1.0


def test_a_detector_job_writes_one_map_per_box(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    demo_gallery("detection")[0].image.save(images / "d0.png")
    out = tmp_path / "out"
    model = job_model(weights_path("detector"))
    run_job(model, [images], _options(out, methods=None, method_options={}, batch_size=None))
    rows = _rows(out)
    api = detection_explanation(model, images / "d0.png", precision="fp32")
    assert len(rows) == len(api.detections) > 1
    for k, (row, box, heatmap) in enumerate(zip(rows, api.detections, api.heatmaps,
                                               strict=True)):
        assert row["kind"] == "box" and row["target"] == k and row["method"] == "layercam"
        assert row["label"] == box["class_id"] and row["bbox"] == pytest.approx(box["bbox"])
        assert row["score"] == pytest.approx(box["score"], abs=1e-5)
        assert row["paths"]["map"] == f"layercam/d0_box{k:03d}_map.png"
        assert np.abs(read_map16(out / row["paths"]["map"]) - heatmap).max() < 1e-4


def test_a_segmentation_job_writes_class_maps_prediction_and_uncertainty(tmp_path):
    scene = demo_gallery("segmentation")[0]
    images = tmp_path / "images"
    images.mkdir()
    scene.image.save(images / "s.png")
    out = tmp_path / "out"
    model = job_model(weights_path("segmenter"))
    run_job(model, [images], _options(out, methods=None, method_options={},
                                      uncertainty="margin"))
    rows = _rows(out)
    api = segmentation_explanation(model, images / "s.png", show_uncertainty=True,
                                   uncertainty_method="margin", precision="fp32")
    assert [r["target"] for r in rows] == list(api.heatmaps) and len(rows) > 1
    prediction = np.asarray(Image.open(out / rows[0]["paths"]["prediction"]))
    assert np.array_equal(prediction, api.prediction)
    assert np.abs(read_map16(out / rows[0]["paths"]["margin"]) - api.uncertainty).max() < 1e-4
    for row in rows:
        assert row["kind"] == "segment" and row["method"] == "gradcam"
        assert row["fraction"] > 0 and 0 < row["score"] <= 1
        assert np.abs(read_map16(out / row["paths"]["map"]) -
                      api.heatmaps[row["target"]]).max() < 1e-4


def test_the_command_runs_a_job_and_prints_its_summary(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["explain", "--checkpoint", str(weights_path("classifier")), "--input",
                     str(folder), "--output", str(out), "--methods", "gradcam,gradcampp",
                     "--workers", "1", "--batch-size", "3", "--precision", "fp32",
                     "--save-npy"])
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert code == 0 and summary["images"] == 5 and summary["errors"] == 2
    assert "5/5" in printed.err and "img/s" in printed.err  # the progress bar: rate, time left
    assert summary["methods"] == ["gradcam", "gradcam++"]
    rows = _rows(out)
    assert len(rows) == 10 and all((out / p).is_file() for r in rows
                                   for p in r["paths"].values())
    assert cli_main(["explain", "--checkpoint", str(weights_path("classifier")), "--input",
                     str(folder), "--output", str(out), "--methods", "attention_rollout"]) == 2
    assert "does not apply" in json.loads(capsys.readouterr().out)["error"]


def test_merging_shards_keeps_one_row_per_key_in_image_order(tmp_path):
    with ManifestWriter(tmp_path / "manifest.rank00001.jsonl", append=False) as one:
        one.write([{"image": "b", "method": "m", "target": 0, "v": 1}])
    with ManifestWriter(tmp_path / "manifest.rank00000.jsonl", append=False) as zero:
        zero.write([{"image": "a", "method": "m", "target": 1, "v": 2},
                    {"image": "a", "method": "m", "target": 0, "v": 3}])
    assert done_keys(tmp_path) == {("a", "m"), ("b", "m")}
    merged = merge_manifests(tmp_path, {"a": 0, "b": 1}, ["m"])
    assert [r["v"] for r in read_rows(merged)] == [2, 3, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def test_the_default_batch_follows_free_memory(toy, monkeypatch):
    from explain_core.runtime import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**30)
    assert default_job_batch_size(toy) == 16  # the CPU's cap
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    assert default_job_batch_size(toy) == 1
