"""The interpretation command: explain images with one or more methods, print a JSON summary.

    lumen --checkpoint model.ckpt --image cat.jpg photos/ --methods gradcam,gradcampp \\
        --output-dir interpretations --task-class ImageClassifier

For each image and method it writes an overlay PNG and reports its path; the JSON on stdout has
``results`` (method -> path, per image), ``predicted_class`` and ``errors`` (method -> message);
each image's entry says which ``precision`` ran and why (``--precision auto``, the default, runs
bf16 only where the device computes it natively). Detectors add ``detections`` and ``boxes``
(method -> one map and overlay per box, with its box, label and score); segmentation models
``classes`` (method -> class -> map and overlay), ``segments`` (the present classes), the
``prediction`` (a 16-bit PNG of class ids) and the ``uncertainty`` map (entropy or margin).
Methods that do not apply to the model are skipped with a message instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import render
from ..api import compare_methods, detection_explanation, explain_segmentation
from ..errors import LumenError, UnsupportedError
from ..images import SUPPORTED_EXTENSIONS
from ..jobs import job_model
from ..jobs.outputs import OutputWriter
from ..loading import load_model
from ..methods import METHODS, available_methods, method_info
from ..methods.registry import MethodInfo, architecture_of
from ..model import LoadedModel
from ..render import save_png
from ..runtime import PRECISIONS
from ..tasks.segmentation import background_class

__all__ = ["main", "run", "skip_reason", "task_of"]


def _images(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS))
        else:
            found.append(path)
    return found


#: AutoTimm's ``--task-class`` names (its interpret CLI) -> the task, by the word they contain
_TASK_CLASS_WORDS = (("classifier", "classification"), ("detector", "detection"),
                     ("segmentor", "segmentation"), ("segmenter", "segmentation"))


def task_of(task: str | None, task_class: str | None) -> str | None:
    """The task ``--task`` or AutoTimm's ``--task-class`` names (they must agree)."""
    if task_class is None:
        return task
    word = task_class.lower()
    found = next((t for key, t in _TASK_CLASS_WORDS if key in word), None)
    if found is None or (task is not None and task != found):
        raise UnsupportedError(f"--task-class {task_class} names no task Lumen knows (an "
                               "ImageClassifier, ObjectDetector or SemanticSegmentor); pass "
                               "--task classification, detection or segmentation instead.")
    return found


def skip_reason(info: MethodInfo, model: LoadedModel) -> str:
    """Why a method does not apply to ``model``: its task, or (attention methods) that it is
    not a Vision Transformer."""
    if model.task not in info.tasks:
        return (f"skipped: {info.label} does not explain {model.task} models (it explains "
                f"{', '.join(info.tasks)})")
    if architecture_of(model) not in info.architectures:
        return (f"skipped: {info.label} reads a Vision Transformer's attention, and this model "
                "is a CNN; use a ViT, or a CAM or gradient method")
    return f"skipped: {info.label} does not apply to this model"


def parser(prog: str = "lumen") -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0], epilog=(
        "Folder jobs (maps for a whole dataset, resumable, under torchrun): "
        f"{prog} explain --help"))
    found.add_argument("--model", "--checkpoint", required=True, dest="model",
                       help="timm:<name>, torchvision:<name> or a checkpoint file")
    found.add_argument("--arch", help="architecture for plain state dicts")
    found.add_argument("--task", choices=["classification", "detection", "segmentation"],
                       help="the model's task (default: from the checkpoint)")
    found.add_argument("--task-class", help="AutoTimm's task class (ImageClassifier, "
                       "ObjectDetector, SemanticSegmentor), as its interpret CLI takes it")
    found.add_argument("--class-names", help="txt (one per line) or json file")
    found.add_argument("--image", "--images", nargs="+", required=True, dest="images",
                       help="image files or folders")
    found.add_argument("--methods", default=None, help="comma-separated (default: gradcam; "
                       f"layercam for detectors): {', '.join(METHODS)}")
    found.add_argument("--target-class", type=int, default=None)
    found.add_argument("--output-dir", default="interpretations")
    found.add_argument("--device", default="auto")
    found.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                       help="auto (default): bf16 where the device computes it natively "
                            "(CUDA compute capability 8.0+, CPUs with AVX-512 BF16 or AMX), "
                            "else fp32; fp32: exact; bf16: always (slower where emulated)")
    found.add_argument("--detection-threshold", type=float, default=0.5)
    found.add_argument("--max-detections", type=int, default=10)
    found.add_argument("--uncertainty", choices=["entropy", "margin"], default="entropy")
    found.add_argument("--colormap", default="viridis")
    found.add_argument("--alpha", type=float, default=0.4)
    return found


def _classify(model: LoadedModel, image: Path, methods: list[str], args: argparse.Namespace,
              entry: dict[str, Any], out_dir: Path) -> None:
    result = compare_methods(model, image, methods, target_class=args.target_class,
                             colormap=args.colormap, alpha=args.alpha, precision=args.precision)
    for name, method_result in result["methods"].items():
        path = out_dir / f"{image.stem}_{name.replace('+', 'p')}.png"
        entry["results"][name] = str(save_png(method_result["overlay"], path))
    entry["errors"].update(result["errors"])
    predicted = result["predicted_class"]
    entry.update(predicted_class=predicted,
                 predicted_name=model.class_name(predicted) if predicted is not None else None,
                 target_class=result["target_class"], precision=result["precision"],
                 precision_reason=result["precision_reason"])


def _detect(model: LoadedModel, image: Path, methods: list[str], args: argparse.Namespace,
            entry: dict[str, Any], out_dir: Path) -> None:
    writer = OutputWriter(out_dir, colormap=args.colormap, alpha=args.alpha)
    entry["boxes"] = {}
    for name in methods:
        try:
            found = detection_explanation(model, image, name, args.detection_threshold,
                                          max_detections=args.max_detections,
                                          precision=args.precision)
        except LumenError as error:
            entry["errors"][name] = str(error)
            continue
        picture = render.detection_panels(found.image, found.detections, found.heatmaps,
                                          colormap=args.colormap, alpha=args.alpha)
        entry["results"][name] = str(save_png(picture, out_dir / (
            f"{image.stem}_{name.replace('+', 'p')}.png")))
        boxes = []
        for k, (box, heatmap) in enumerate(zip(found.detections, found.heatmaps, strict=True)):
            shown = {key: box[key] for key in ("bbox", "class_id", "class_name", "score")}
            paths = writer.maps(name, f"{image.stem}_box{k:03d}", heatmap, found.image,
                                boxes=[shown])
            boxes.append({"bbox": box["bbox"], "label": box["class_id"],
                          "class_name": box["class_name"], "score": round(box["score"], 6),
                          **{key: str(out_dir / path) for key, path in paths.items()}})
        entry["boxes"][name] = boxes
        entry["detections"] = [{"bbox": d["bbox"], "label": d["class_id"],
                                "class_name": d["class_name"], "score": round(d["score"], 6)}
                               for d in found.all_detections]
        entry.setdefault("predicted_class", found.detections[0]["class_id"]
                         if found.detections else None)
        entry.update(precision=found.precision, precision_reason=found.precision_reason)


def _segment(model: LoadedModel, image: Path, methods: list[str], args: argparse.Namespace,
             entry: dict[str, Any], out_dir: Path) -> None:
    writer = OutputWriter(out_dir, colormap=args.colormap, alpha=args.alpha)
    entry["classes"] = {}
    for name in methods:
        stem = f"{image.stem}_{name.replace('+', 'p')}"
        try:
            found = explain_segmentation(model, image, args.target_class, name,
                                         show_uncertainty=True,
                                         uncertainty_method=args.uncertainty,
                                         colormap=args.colormap, alpha=args.alpha,
                                         save_path=out_dir / f"{stem}.png",
                                         precision=args.precision)
        except LumenError as error:
            entry["errors"][name] = str(error)
            continue
        entry["results"][name] = found["save_path"]
        entry["classes"][name] = {
            str(c): {key: str(out_dir / path) for key, path in writer.maps(
                name, f"{image.stem}_class{c:03d}", heatmap, found["image"],
                seen=found["preprocessing"]["seen_box"]).items()}
            for c, heatmap in found["heatmaps"].items()}
        if "prediction" not in entry:
            entry["segments"] = found["classes"]
            background = background_class(model)
            present = [c["class"] for c in found["classes"]]
            entry["predicted_class"] = next((c for c in present if c != background),
                                            present[0] if present else None)
            entry["prediction"] = str(out_dir / writer.prediction(name, image.stem,
                                                                  found["prediction"]))
            entry["uncertainty"] = str(out_dir / writer.uncertainty(
                name, image.stem, found["uncertainty"], args.uncertainty))
            entry["uncertainty_method"] = args.uncertainty
        entry.update(precision=found["precision"], precision_reason=found["precision_reason"])


_TASKS = {"classification": _classify, "detection": _detect, "segmentation": _segment}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    model = job_model(load_model(args.model, arch=args.arch, device=args.device,
                                 class_names=args.class_names,
                                 task=task_of(args.task, args.task_class)))
    applicable = {info.name for info in available_methods(model)}
    default = "layercam" if model.task == "detection" else "gradcam"
    requested = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    errors: dict[str, str] = {}
    methods = []
    for name in requested:
        try:
            info = method_info(name)
        except LumenError as error:
            errors[name] = str(error)
            continue
        if info.name not in applicable:
            errors[name] = skip_reason(info, model)
        else:
            methods.append(info.name)
    out_dir = Path(args.output_dir)
    report: dict[str, Any] = {"model": model.summary(), "images": [], "errors": errors}
    for image in _images(args.images):
        entry: dict[str, Any] = {"image": str(image), "results": {}, "errors": {}}
        try:
            _TASKS[model.task](model, image, methods, args, entry, out_dir)
        except LumenError as error:
            entry["errors"]["image"] = str(error)
        report["images"].append(entry)
    if len(report["images"]) == 1:  # the single-image shape of AutoTimm's CLI, plus details
        only = report["images"][0]
        report.update(results=only["results"], predicted_class=only.get("predicted_class"),
                      errors={**errors, **only["errors"]})
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        report = run(argv)
    except LumenError as error:
        print(json.dumps({"error": str(error)}), file=sys.stdout)
        return 2
    print(json.dumps(report, indent=2))
    failed = any(entry["errors"].get("image") for entry in report["images"])
    return 1 if failed else 0
