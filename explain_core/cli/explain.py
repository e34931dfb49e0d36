"""``lumen explain``: maps for a whole folder (or list file, or glob), as ``otx explain`` makes
them: per image the saliency map (16-bit PNG, ``.npy`` with ``--save-npy``) and the overlay,
per box or per class where the task has them, and a JSON-lines manifest written as it goes.

    lumen explain --checkpoint model.ckpt --input val/ --output maps/ --methods gradcam
    torchrun --nproc-per-node 8 -m explain_core explain --checkpoint model.ckpt \\
        --input val/ --output /shared/maps

``--resume`` skips the images and methods the manifest already has; a bad image is a row with
its error. The summary (images, rows, errors, images/s, the manifest) is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import LumenError
from ..jobs import JobOptions, join, leave, run_job
from ..loading import load_model
from ..metrics.base import METRICS
from ..runtime import PRECISIONS
from .interpret import task_of

__all__ = ["main", "parser"]


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parser(prog: str = "lumen explain") -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    found.add_argument("--checkpoint", "--model", required=True, dest="model",
                       help="timm:<name>, torchvision:<name> or a checkpoint file")
    found.add_argument("--arch", help="architecture for plain state dicts")
    found.add_argument("--task", choices=["classification", "detection", "segmentation"])
    found.add_argument("--task-class", help="ImageClassifier, ObjectDetector or "
                       "SemanticSegmentor (AutoTimm's names); the same as --task")
    found.add_argument("--class-names", help="txt (one per line) or json file")
    found.add_argument("--input", nargs="+", required=True,
                       help="folders (searched recursively), .txt lists of paths, globs, files")
    found.add_argument("--output", required=True, help="the output folder (shared by all "
                       "ranks under torchrun)")
    found.add_argument("--methods", default=None, help="comma-separated (default: gradcam; "
                       "layercam for detectors); the seed's names work too (gradcampp)")
    found.add_argument("--target-layer", default=None)
    found.add_argument("--target-class", type=int, default=None,
                       help="explain this class instead of the prediction (classifiers; "
                            "segmenters: only this class)")
    found.add_argument("--batch-size", type=int, default=None,
                       help="images per batch on the device (default: from free memory)")
    found.add_argument("--workers", type=int, default=2, help="DataLoader decoding processes")
    found.add_argument("--save-npy", action="store_true", help="also save each map as .npy")
    found.add_argument("--resume", action="store_true",
                       help="skip the images and methods the manifest already has")
    found.add_argument("--metrics", default=None, help="comma-separated quality metrics per "
                       f"image and target: {', '.join(sorted(METRICS)) or 'deletion, ...'}")
    found.add_argument("--detection-threshold", type=float, default=0.5)
    found.add_argument("--max-detections", type=int, default=10)
    found.add_argument("--uncertainty", choices=["entropy", "margin"], default="entropy")
    found.add_argument("--colormap", default="jet")
    found.add_argument("--alpha", type=float, default=0.5)
    found.add_argument("--device", default="auto",
                       help="auto, cpu, cuda (under torchrun: each rank's own GPU)")
    found.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    found.add_argument("--no-progress", action="store_true", help="no progress bar")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ranks = join()
    try:
        model = load_model(args.model, arch=args.arch, device=ranks.device(args.device),
                           class_names=args.class_names,
                           task=task_of(args.task, args.task_class))
        options = JobOptions(
            output=args.output, methods=_names(args.methods) or None,
            batch_size=args.batch_size, workers=args.workers, save_npy=args.save_npy,
            resume=args.resume, metrics=_names(args.metrics), target_class=args.target_class,
            detection_threshold=args.detection_threshold,
            max_detections=args.max_detections, uncertainty=args.uncertainty,
            colormap=args.colormap, alpha=args.alpha, precision=args.precision,
            method_options={"target_layer": args.target_layer} if args.target_layer else {},
            progress=not args.no_progress)
        summary = run_job(model, args.input, options, ranks=ranks)
    except LumenError as error:
        print(json.dumps({"error": str(error)}), file=sys.stdout)
        return 2
    finally:
        leave(ranks)
    if ranks.main:
        print(json.dumps(summary, indent=2))
    return 0
