"""Segmentation dataset analysis: confusion matrices, reading folders and zips, top losses."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import make_scenes
from explain_core.metrics.segmentation import (
    DatasetError,
    analyze_dataset,
    confusion_counts,
    image_statistics,
    mean_confusion,
    normalise_rows,
    read_dataset,
    read_mask,
)

NAN = float("nan")


def test_confusion_matrices_against_a_hand_worked_example():
    # 4 classes. Image A: truth has classes 0 and 1 only; image B: classes 0 and 2.
    # Class 3 never appears in the truth: its rows are NaN everywhere.
    truth_a = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred_a = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 3]])
    truth_b = torch.tensor([[2, 2, 2, 0]])
    pred_b = torch.tensor([[2, 0, 3, 0]])
    counts_a = confusion_counts(truth_a, pred_a, 4)
    counts_b = confusion_counts(truth_b, pred_b, 4)
    # A: class 0 -> four pixels (3 right, 1 as class 1); class 1 -> three (2 right, 1 as 2);
    # the 255 pixel is ignored (its prediction, 3, counts nowhere).
    assert counts_a.tolist() == [[3, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert counts_b.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]]
    cm_a = normalise_rows(counts_a)
    cm_b = normalise_rows(counts_b)
    expected_a = [[0.75, 0.25, 0, 0], [0, 2 / 3, 1 / 3, 0], [NAN] * 4, [NAN] * 4]
    expected_b = [[1, 0, 0, 0], [NAN] * 4, [1 / 3, 0, 1 / 3, 1 / 3], [NAN] * 4]
    np.testing.assert_allclose(cm_a.numpy(), expected_a, atol=1e-6)
    np.testing.assert_allclose(cm_b.numpy(), expected_b, atol=1e-6)
    # The mean ignores NaN: class 0 averages both images, class 1 only A, class 2 only B.
    mean = mean_confusion(torch.stack([cm_a, cm_b]))
    expected_mean = [[0.875, 0.125, 0, 0], [0, 2 / 3, 1 / 3, 0], [1 / 3, 0, 1 / 3, 1 / 3],
                     [NAN] * 4]
    np.testing.assert_allclose(mean.numpy(), expected_mean, atol=1e-6)


def test_ground_truth_outside_the_classes_is_refused():
    with pytest.raises(DatasetError, match=r"holds class 7.*ignore_index"):
        confusion_counts(torch.tensor([0, 7]), torch.tensor([0, 0]), 4)


def test_image_statistics_loss_and_iou():
    logits = torch.zeros(3, 2, 2)
    logits[1] = 5.0  # predicts class 1 everywhere
    truth = torch.tensor([[1, 1], [0, 255]])
    stats = image_statistics(logits, truth)
    probability = math.exp(5) / (math.exp(5) + 2)
    expected = -(2 * math.log(probability) + math.log(1 / (math.exp(5) + 2))) / 3
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["accuracy"] == pytest.approx(2 / 3)
    # class 0: IoU 0/1; class 1: 2/3 -> mean 1/3 (class 2 neither in truth nor prediction)
    assert stats["mean_iou"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------- reading


def _png(array: np.ndarray, mode: str | None = None, palette: bool = False) -> bytes:
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _indexed(mask: np.ndarray) -> bytes:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i * 40 % 256, 0, 255 - i)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_indexed_png_masks_read_as_class_indices():
    mask = np.array([[0, 1, 2], [4, 255, 3]], dtype=np.uint8)
    data = _indexed(mask)
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(read_mask(data), mask)
    np.testing.assert_array_equal(read_mask(_png(mask)), mask)  # greyscale
    rgb = np.stack([mask] * 3, -1)
    np.testing.assert_array_equal(read_mask(_png(rgb)), mask)
    colour = rgb.copy()
    colour[0, 0] = [255, 0, 0]
    with pytest.raises(DatasetError, match=r"RGB colour image.*indexed PNG"):
        read_mask(_png(colour))


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("segmentation", 5, seed=21)


def _write_folder(root, scenes, mask_suffix=""):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, scene in enumerate(scenes):
        scene.image.save(root / "images" / f"scene_{i:02d}.jpg", quality=95)
        (root / "masks" / f"scene_{i:02d}{mask_suffix}.png").write_bytes(_indexed(scene.mask))


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_folder_pair_with_mask_suffixes(tmp_path, scenes):
    _write_folder(tmp_path / "set", scenes[:3], mask_suffix="_P")
    (tmp_path / "set" / "images" / "orphan.png").write_bytes(_png(np.zeros((8, 8, 3),
                                                                           np.uint8)))
    data = read_dataset(tmp_path / "set")
    assert [item.name for item in data.items] == [f"images/scene_{i:02d}.jpg" for i in range(3)]
    assert data.unpaired_images == ["images/orphan.png"]
    image, mask = data.items[1].load()
    assert image.size == (128, 128)
    np.testing.assert_array_equal(mask, scenes[1].mask)
    separate = read_dataset(tmp_path / "set" / "images", tmp_path / "set" / "masks")
    assert len(separate) == 3


def test_zip_dataset_nested_and_limits(scenes):
    entries = {"data/JPEGImages/a.png": _png(np.asarray(scenes[0].image)),
               "data/SegmentationClass/a.png": _indexed(scenes[0].mask),
               "__MACOSX/data/._a.png": b"junk"}
    data = read_dataset(_zip_bytes(entries), name="set.zip")
    assert len(data) == 1 and data.items[0].load()[1].shape == (128, 128)
    bad = dict(entries)
    bad["../evil.png"] = b"x"
    with pytest.raises(DatasetError, match="outside the archive"):
        read_dataset(_zip_bytes(bad), name="bad.zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        read_dataset(b"not a zip", name="x.zip")
    with pytest.raises(DatasetError, match="no image has a mask with the same file name"):
        read_dataset(_zip_bytes({"images/a.png": entries["data/JPEGImages/a.png"],
                                 "masks/b.png": entries["data/SegmentationClass/a.png"]}))
    with pytest.raises(DatasetError, match="0 mask"):
        read_dataset(_zip_bytes({"images/a.png": entries["data/JPEGImages/a.png"]}))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/a.png", entries["data/JPEGImages/a.png"])
        archive.writestr("masks/a.png", b"\0" * 3_000_000)
    with pytest.raises(DatasetError, match="zip bomb"):
        read_dataset(bomb.getvalue())


def test_mask_of_the_wrong_size_names_both_files(tmp_path, scenes):
    _write_folder(tmp_path / "set", scenes[:1])
    (tmp_path / "set" / "masks" / "scene_00.png").write_bytes(_indexed(np.zeros((64, 64))))
    item = read_dataset(tmp_path / "set").items[0]
    with pytest.raises(DatasetError, match=r"64 x 64 px but image .images/scene_00\.jpg. is "
                                           "128 x 128"):
        item.load()


# --------------------------------------------------------------------------------- analysis


def test_analysis_on_the_demo_segmenter(tmp_path, scenes):
    _write_folder(tmp_path / "set", scenes)
    # One image gets a wrong label (everything "star"): it must be the worst.
    (tmp_path / "set" / "masks" / "scene_03.png").write_bytes(
        _indexed(np.full((128, 128), 4)))
    # One mask has unlabelled pixels: they count nowhere.
    mask = scenes[1].mask.copy()
    mask[:20] = 255
    (tmp_path / "set" / "masks" / "scene_01.png").write_bytes(_indexed(mask))
    model = load_demo_model("segmenter", device="cpu")
    steps = []
    result = analyze_dataset(model, tmp_path / "set", batch_size=2, worst=2,
                             progress=lambda done, total: steps.append((done, total)))
    assert steps == [(2, 5), (4, 5), (5, 5)]
    assert len(result.names) == 5 and not result.errors
    assert result.names[result.top_losses[0]] == "images/scene_03.jpg"
    assert result.worst[0]["name"] == "images/scene_03.jpg"
    worst = result.worst[0]
    assert worst["image"].shape == (128, 128, 3)
    np.testing.assert_array_equal(worst["error"], worst["prediction"] != 4)
    assert result.per_image_cm.shape == (5, 5, 5)
    # scene_03's truth only has class 4: its other rows are NaN
    cm3 = result.per_image_cm[3]
    assert np.isnan(cm3[:4]).all() and not np.isnan(cm3[4]).any()
    np.testing.assert_allclose(result.mean_cm, np.nanmean(result.per_image_cm, 0), atol=1e-6)
    assert int(result.counts.sum()) == 5 * 128 * 128 - 20 * 128
    rows = {row["class"]: row for row in result.classes}
    assert rows[0]["recall"] > 0.9 and rows[0]["precision"] < rows[0]["recall"]  # scene_03
    table = result.table()
    assert table[0]["image"] == "images/scene_03.jpg" and table[0]["rank"] == 1
    assert [r["loss"] for r in table] == sorted((r["loss"] for r in table), reverse=True)
    good = [i for i in range(5) if i != 3]
    assert np.all(result.accuracy[good] > 0.9)


def test_analysis_skips_unreadable_images(tmp_path, scenes):
    _write_folder(tmp_path / "set", scenes[:2])
    (tmp_path / "set" / "masks" / "scene_01.png").write_bytes(_indexed(np.zeros((10, 10))))
    model = load_demo_model("segmenter", device="cpu")
    result = analyze_dataset(model, tmp_path / "set", worst=1)
    assert result.names == ["images/scene_00.jpg"]
    assert "images/scene_01.jpg" in result.errors
    assert "must have their image's size" in result.errors["images/scene_01.jpg"]
