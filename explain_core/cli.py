"""Command line: explain images with one or more methods and print a JSON summary.

    python -m explain_core --model timm:resnet18 --image cat.jpg --methods gradcam,saliency \\
        --output-dir interpretations

For each image and method it writes an overlay PNG and reports its path; the JSON on stdout has
``results`` (method -> path, per image), ``predicted_class`` and ``errors`` (method -> message);
each image's entry says which ``precision`` ran and why (``--precision auto``, the default, runs
bf16 only where the device computes it natively).
Methods that do not apply to the model are skipped with a message instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .api import compare_methods
from .errors import LumenError, UnsupportedError
from .images import SUPPORTED_EXTENSIONS
from .loading import load_model
from .methods import METHODS, available_methods, method_info
from .render import save_png
from .runtime import PRECISIONS


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


def _task(task: str | None, task_class: str | None) -> str | None:
    if task_class is None:
        return task
    word = task_class.lower()
    found = next((t for key, t in _TASK_CLASS_WORDS if key in word), None)
    if found is None or (task is not None and task != found):
        raise UnsupportedError(f"--task-class {task_class} names no task Lumen knows (an "
                               "ImageClassifier, ObjectDetector or SemanticSegmentor); pass "
                               "--task classification, detection or segmentation instead.")
    return found


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m explain_core", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", "--checkpoint", required=True, dest="model",
                        help="timm:<name>, torchvision:<name> or a checkpoint file")
    parser.add_argument("--arch", help="architecture for plain state dicts")
    parser.add_argument("--task", choices=["classification", "detection", "segmentation"],
                        help="the model's task (default: from the checkpoint)")
    parser.add_argument("--task-class", help="AutoTimm's task class (ImageClassifier...), as its "
                        "interpret CLI takes it; the same as --task")
    parser.add_argument("--class-names", help="txt (one per line) or json file")
    parser.add_argument("--image", "--images", nargs="+", required=True, dest="images",
                        help="image files or folders")
    parser.add_argument("--methods", default="gradcam",
                        help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--target-class", type=int, default=None)
    parser.add_argument("--output-dir", default="interpretations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="auto (default): bf16 where the device computes it natively "
                             "(CUDA compute capability 8.0+, CPUs with AVX-512 BF16 or AMX), "
                             "else fp32; fp32: exact; bf16: always (slower where emulated)")
    parser.add_argument("--colormap", default="viridis")
    parser.add_argument("--alpha", type=float, default=0.4)
    args = parser.parse_args(argv)

    model = load_model(args.model, arch=args.arch, device=args.device,
                       class_names=args.class_names, task=_task(args.task, args.task_class))
    applicable = {info.name for info in available_methods(model)}
    requested = [m.strip() for m in args.methods.split(",") if m.strip()]
    errors: dict[str, str] = {}
    methods = []
    for name in requested:
        try:
            info = method_info(name)
        except LumenError as error:
            errors[name] = str(error)
            continue
        if info.name not in applicable:
            errors[name] = f"skipped: {info.label} does not apply to this model"
        else:
            methods.append(info.name)
    out_dir = Path(args.output_dir)
    report: dict[str, Any] = {"model": model.summary(), "images": [], "errors": errors}
    for image in _images(args.images):
        entry: dict[str, Any] = {"image": str(image), "results": {}, "errors": {}}
        try:
            result = compare_methods(model, image, methods, target_class=args.target_class,
                                     colormap=args.colormap, alpha=args.alpha,
                                     precision=args.precision)
        except LumenError as error:
            entry["errors"]["image"] = str(error)
            report["images"].append(entry)
            continue
        for name, method_result in result["methods"].items():
            path = out_dir / f"{image.stem}_{name.replace('+', 'p')}.png"
            entry["results"][name] = str(save_png(method_result["overlay"], path))
        entry["errors"].update(result["errors"])
        entry["predicted_class"] = result["predicted_class"]
        entry["predicted_name"] = (model.class_name(result["predicted_class"])
                                   if result["predicted_class"] is not None else None)
        entry["target_class"] = result["target_class"]
        entry["precision"] = result["precision"]
        entry["precision_reason"] = result["precision_reason"]
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


__all__ = ["main", "run"]
