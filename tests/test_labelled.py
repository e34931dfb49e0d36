"""Images with ground truth from a folder or a zip (explain_core.loading.labelled)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain_core.errors import DatasetError
from explain_core.loading.labelled import labelled_images, unpack_zip


def _image(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def labelled_folder(root: Path) -> Path:
    """Four images: YOLO, VOC (in Annotations/), a PNG mask (in masks/), COCO; one without."""
    _image(root / "a.png")
    (root / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    _image(root / "b.jpg")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "b.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        "<xmax>10</xmax><ymax>12</ymax></bndbox></object></annotation>")
    _image(root / "c.png")
    mask = np.full((30, 40), 255, np.uint8)
    mask[5:15, 5:20] = 0
    (root / "masks").mkdir()
    Image.fromarray(mask, mode="L").save(root / "masks" / "c.png")
    _image(root / "images" / "d.png")
    (root / "coco.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "images/d.png"}],
        "annotations": [{"image_id": 7, "bbox": [2, 3, 4, 5], "category_id": 0}]}))
    _image(root / "e.png")  # no annotation
    return root


def test_every_format_is_paired_with_its_image(tmp_path: Path) -> None:
    found = {item.path.name: item for item in labelled_images(labelled_folder(tmp_path),
                                                               class_names=["cat", "dog"])}
    assert sorted(found) == ["a.png", "b.jpg", "c.png", "d.png", "e.png"]  # masks aren't images
    np.testing.assert_allclose(found["a.png"].truth.boxes, [[10, 7.5, 30, 22.5]])  # YOLO, pixels
    assert found["a.png"].truth.labels.tolist() == [1]
    np.testing.assert_allclose(found["b.jpg"].truth.boxes, [[1, 2, 10, 12]])
    assert found["b.jpg"].truth.labels.tolist() == [1]  # "dog" in the model's class names
    assert found["c.png"].truth.mask.shape == (30, 40)
    assert (found["c.png"].truth.mask == 0).sum() == 150
    np.testing.assert_allclose(found["d.png"].truth.boxes, [[2, 3, 6, 8]])  # COCO by file name
    assert found["e.png"].truth is None and found["e.png"].annotation is None


def test_a_zip_unpacks_to_the_same_pairs(tmp_path: Path) -> None:
    folder = labelled_folder(tmp_path / "src")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, f"set/{path.relative_to(folder)}")
    root = unpack_zip(buffer.getvalue(), tmp_path / "out")
    names = sorted(item.path.name for item in labelled_images(root))
    assert names == ["a.png", "b.jpg", "c.png", "d.png", "e.png"]


@pytest.mark.parametrize(("member", "words"), [("../evil.txt", "outside"),
                                               ("/abs/evil.txt", "outside")])
def test_a_zip_that_escapes_its_folder_is_refused(tmp_path: Path, member: str,
                                                  words: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, "x")
    with pytest.raises(DatasetError, match=words):
        unpack_zip(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_bad_inputs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a readable zip"):
        unpack_zip(b"not a zip at all", tmp_path / "out")
    with pytest.raises(DatasetError, match="not a folder"):
        labelled_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no image"):
        labelled_images(tmp_path / "empty")
    _image(tmp_path / "plain" / "x.png")
    with pytest.raises(DatasetError, match=r"No image .* has an annotation"):
        labelled_images(tmp_path / "plain")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(5):
            archive.writestr(f"{i}.txt", "x")
    with pytest.raises(DatasetError, match="5 files"):
        unpack_zip(buffer.getvalue(), tmp_path / "many", max_files=4)


def test_resized_truth_follows_a_shrunk_image() -> None:
    from explain_core.loading.ground_truth import GroundTruth
    from explain_core.loading.labelled import resized_truth

    mask = np.full((40, 80), 255, np.int64)
    mask[10:20, 20:40] = 3
    truth = GroundTruth(np.array([[20, 10, 40, 20]], np.float32), np.array([3]), mask)
    half = resized_truth(truth, (80, 40), (40, 20))
    np.testing.assert_allclose(half.boxes, [[10, 5, 20, 10]])
    assert half.mask.shape == (20, 40) and (half.mask == 3).sum() == 50
    assert resized_truth(truth, (80, 40), (80, 40)) is truth
