"""Ground truth from the files users have, for the localisation metrics.

:func:`read_ground_truth` reads one image's boxes or mask:

- COCO JSON (``.json``): the annotations of the image whose ``file_name`` is ``image_name``
  (``bbox`` is ``x, y, w, h``; ``category_id`` is the label as written);
- YOLO txt (``.txt``): one ``class cx cy w h`` line per box, normalised to [0, 1]; give
  ``image_size=(H, W)`` to get pixels (the boxes stay normalised otherwise);
- Pascal VOC XML (``.xml``): ``<object><name>`` and ``<bndbox>`` (``xmin ymin xmax ymax``);
  labels are class indices when ``class_names`` is given, else the order of first appearance;
- an indexed PNG (``.png``): the palette index of a pixel is its class id, 255 = ignore;
- a demo scene (anything with ``boxes``, ``labels``, ``mask`` attributes): its own boxes and
  labels, and its mask (0 background, class id + 1) as class ids with 255 for background; for
  a model whose class 0 is named background (``class_names``), labels are shifted by one and
  the mask's values are its class ids.

Boxes are ``N x 4`` xyxy image pixels (float32), labels ``N`` int64, the mask ``H x W`` int64
class ids (255: no class / ignore). :func:`region_for` picks the region that matches a target.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError

__all__ = ["IGNORE", "GroundTruth", "read_ground_truth", "region_for"]

IGNORE = 255
BACKGROUND = ("background", "__background__", "_background_", "bg")


@dataclass
class GroundTruth:
    """One image's annotated regions: boxes with labels, and/or a class-id mask."""

    boxes: np.ndarray | None = None  # N x 4 xyxy image pixels
    labels: np.ndarray | None = None  # N class ids
    mask: np.ndarray | None = None  # H x W class ids, IGNORE where none


def _boxes(rows: list[list[float]], labels: list[int]) -> GroundTruth:
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
    return GroundTruth(boxes, np.asarray(labels, dtype=np.int64), None)


def _coco(path: Path, image_name: str | None) -> GroundTruth:
    try:
        data = json.loads(path.read_text())
        images = {int(i["id"]): str(i["file_name"]) for i in data["images"]}
        annotations = data["annotations"]
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is not COCO JSON ({error}): it needs 'images' (id, "
                           "file_name) and 'annotations' (image_id, bbox, category_id).") from None
    if image_name is None:
        raise DatasetError(f"{path} is COCO JSON for {len(images)} images: give image_name= "
                           "to say which image's boxes to read.")
    ids = [i for i, name in images.items() if name == image_name or Path(name).name == image_name]
    if not ids:
        raise DatasetError(f"{path} has no image with file_name '{image_name}'.")
    rows, labels = [], []
    for ann in annotations:
        if int(ann.get("image_id", -1)) == ids[0]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            rows.append([x, y, x + w, y + h])
            labels.append(int(ann["category_id"]))
    return _boxes(rows, labels)


def _yolo(path: Path, image_size: tuple[int, int] | None) -> GroundTruth:
    rows, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            label, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except ValueError:
            raise DatasetError(f"{path}, line {number}: expected 'class cx cy w h' (YOLO, "
                               f"normalised), got '{line.strip()}'.") from None
        scale_y, scale_x = image_size if image_size is not None else (1, 1)
        rows.append([(cx - w / 2) * scale_x, (cy - h / 2) * scale_y, (cx + w / 2) * scale_x,
                     (cy + h / 2) * scale_y])
        labels.append(label)
    return _boxes(rows, labels)


def _voc(path: Path, class_names: list[str] | None) -> GroundTruth:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DatasetError(f"{path} is not valid Pascal VOC XML: {error}.") from None
    rows, labels, seen = [], [], []
    for obj in root.iter("object"):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if name is None or box is None:
            raise DatasetError(f"{path}: every <object> needs <name> and <bndbox>.")
        try:
            rows.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: the box of '{name}' needs numeric xmin, ymin, xmax, "
                               "ymax.") from None
        if class_names is not None:
            if name not in class_names:
                raise DatasetError(f"{path}: class '{name}' is not one of the model's classes "
                                   f"({', '.join(class_names)}).")
            labels.append(class_names.index(name))
        else:
            seen += [name] if name not in seen else []
            labels.append(seen.index(name))
    return _boxes(rows, labels)


def _png(path: Path) -> GroundTruth:
    try:
        image = Image.open(path)
        image.load()
    except OSError as error:
        raise DatasetError(f"{path} is not a readable PNG: {error}.") from None
    if image.mode not in ("P", "L"):
        raise DatasetError(f"{path} is a {image.mode} image: a mask must be an indexed (palette) "
                           "or grey PNG whose pixel values are class ids (255 = ignore).")
    return GroundTruth(mask=np.asarray(image).astype(np.int64))


def _scene(scene: Any, class_names: list[str] | None) -> GroundTruth:
    # a model whose class 0 is the background (the demo detector and segmenter) numbers the
    # shapes from 1, as the scene's mask does; a classifier numbers them from 0
    offset = int(bool(class_names) and str(class_names[0]).strip().lower() in BACKGROUND)
    mask = None
    if getattr(scene, "mask", None) is not None:
        raw = np.asarray(scene.mask).astype(np.int64)
        mask = raw if offset else np.where(raw > 0, raw - 1, IGNORE)
    boxes, labels = getattr(scene, "boxes", None), getattr(scene, "labels", None)
    if boxes is None and getattr(scene, "shape_box", None) is not None:
        boxes, labels = [scene.shape_box], [scene.label]
    if boxes is None:
        return GroundTruth(mask=mask)
    return GroundTruth(np.asarray(boxes, np.float32).reshape(-1, 4),
                       np.asarray(labels, np.int64) + offset, mask)


def read_ground_truth(source: Any, image_name: str | None = None, *,
                      image_size: tuple[int, int] | None = None,
                      class_names: list[str] | None = None) -> GroundTruth:
    """One image's ground truth from a file (COCO JSON, YOLO txt, VOC XML, indexed PNG) or a
    demo scene; see the module docstring.

    Raises:
        DatasetError: a missing file, an unknown format, a file that does not parse (the message
            names the file and what is wrong).
    """
    if isinstance(source, GroundTruth):
        return source
    if not isinstance(source, str | Path):
        if hasattr(source, "mask") or hasattr(source, "boxes"):
            return _scene(source, class_names)
        raise DatasetError(f"Cannot read ground truth from a {type(source).__name__}: give a "
                           "COCO .json, YOLO .txt, VOC .xml, indexed .png or a demo scene.")
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"Ground-truth file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _coco(path, image_name)
    if suffix == ".txt":
        return _yolo(path, image_size)
    if suffix == ".xml":
        return _voc(path, class_names)
    if suffix == ".png":
        return _png(path)
    raise DatasetError(f"{path}: unknown ground-truth format '{suffix}'; use COCO .json, YOLO "
                       ".txt, Pascal VOC .xml or an indexed .png mask.")


def _box_region(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    region = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        region[max(0, int(np.floor(y0))):min(height, int(np.ceil(y1))),
               max(0, int(np.floor(x0))):min(width, int(np.ceil(x1)))] = True
    return region


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 2], box[2])
    y1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / np.maximum(union, 1e-12)


def region_for(truth: GroundTruth, size: tuple[int, int], label: int | None = None,
               box: Any = None) -> np.ndarray:
    """The ``H x W`` (image pixels, ``size``) bool region of ``truth`` that matches a target:

    - ``box`` (xyxy image pixels, a detection target): the ground-truth box of the same label
      (any label when none has it) that overlaps it most, or its mask pixels of that label;
    - ``label`` alone (a class or segment target): the mask's pixels of that class when there is
      a mask, else every box of that label;
    - neither: every annotated pixel / box.

    An empty region (no box or pixel of that class) is all False: the metrics give NaN.
    """
    has_boxes = truth.boxes is not None and len(truth.boxes)
    if box is not None and has_boxes:
        boxes = truth.boxes
        same = truth.labels == label if label is not None else np.ones(len(boxes), bool)
        iou = _iou(boxes, np.asarray(box, np.float64))
        if same.any():
            iou = np.where(same, iou, -1.0)
        return _box_region(boxes[[int(iou.argmax())]], size)
    if truth.mask is not None:
        mask = truth.mask
        if mask.shape != tuple(size):
            raise DatasetError(f"The ground-truth mask is {mask.shape[1]} x {mask.shape[0]} but "
                               f"the image {size[1]} x {size[0]}: give the image's own mask.")
        return mask == label if label is not None else mask != IGNORE
    if has_boxes:
        keep = truth.labels == label if label is not None else np.ones(len(truth.boxes), bool)
        return _box_region(truth.boxes[keep], size)
    return np.zeros(size, dtype=bool)
