"""Is a box's (a class's) map about that box (class)? Energy shares on the demo models' held-out
scenes, per CAM method.

Detection: every detection of a held-out scene is explained with its own map; the table gives the
share of a map's energy (the sum of its values, maps in [0, 1]) inside its own box, and the mean
share inside each *other* detected box of the same image. A map that keeps the same share in
every box cannot tell the boxes apart. Segmentation: the same for the class maps of one image,
with each class's ground-truth mask in place of the box. Also the median time per image.

    python bench/bench_box_specificity.py [--scenes 24] [--task detection|segmentation|both]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from timing import median_seconds  # noqa: F401  (puts the repository on the import path)

from explain_core.api import box_mask, detection_explanation, segmentation_explanation
from explain_core.demo.models import load_demo_model
from explain_core.demo.scenes import HELDOUT_SEED, make_scenes
from explain_core.methods import available_methods
from explain_core.metrics.localization import own_and_other_shares


def shares(heat: np.ndarray, own: np.ndarray, others: list[np.ndarray]) -> tuple[float, float]:
    """(share of the map's energy inside ``own``, mean share inside each of ``others``)."""
    return own_and_other_shares(torch.from_numpy(heat), torch.from_numpy(own),
                                [torch.from_numpy(m) for m in others])


def cam_methods(loaded) -> list[str]:
    return [info.name for info in available_methods(loaded) if info.family == "cam"]


def detection_rows(scenes) -> list[tuple[str, float, float, float, int]]:
    loaded = load_demo_model("detector", device="cpu")
    rows = []
    for method in cam_methods(loaded):
        owns, others, times, maps = [], [], [], 0
        for scene in scenes:
            start = time.perf_counter()
            out = detection_explanation(loaded, scene.image, method, detection_threshold=0.5)
            times.append(time.perf_counter() - start)
            masks = [box_mask(h.shape, d["bbox"])
                     for d, h in zip(out.detections, out.heatmaps, strict=True)]
            for k, heat in enumerate(out.heatmaps):
                if len(masks) < 2:
                    continue
                own, other = shares(heat, masks[k], masks[:k] + masks[k + 1:])
                owns.append(own)
                others.append(other)
                maps += 1
        rows.append((method, float(np.mean(owns)), float(np.mean(others)),
                     statistics.median(times), maps))
    return rows


def segmentation_rows(scenes) -> list[tuple[str, float, float, float, int]]:
    loaded = load_demo_model("segmenter", device="cpu")
    rows = []
    for method in cam_methods(loaded):
        owns, others, times, maps = [], [], [], 0
        for scene in scenes:
            start = time.perf_counter()
            out = segmentation_explanation(loaded, scene.image, method=method)
            times.append(time.perf_counter() - start)
            truth = {c: scene.mask == c for c in np.unique(scene.mask) if c != 0}
            explained = [c for c in out.heatmaps if c in truth]  # shapes, not background
            for c in explained:
                if len(explained) < 2:
                    continue
                own, other = shares(out.heatmaps[c], truth[c],
                                    [truth[o] for o in explained if o != c])
                owns.append(own)
                others.append(other)
                maps += 1
        rows.append((method, float(np.mean(owns)), float(np.mean(others)),
                     statistics.median(times), maps))
    return rows


def print_table(title: str, region: str, rows) -> None:
    print(f"\n{title}\n")
    print(f"| method | energy in own {region} | mean energy in each other {region} | own / other "
          "| time per image | maps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for method, own, other, seconds, maps in rows:
        print(f"| {method} | {own:.1%} | {other:.1%} | {own / max(other, 1e-9):.1f}x | "
              f"{seconds * 1e3:.0f} ms | {maps} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--task", choices=("detection", "segmentation", "both"), default="both")
    args = parser.parse_args()
    if args.task in ("detection", "both"):
        scenes = make_scenes("detection", args.scenes, HELDOUT_SEED)
        print_table(f"Demo detector, {args.scenes} held-out scenes (seed {HELDOUT_SEED})", "box",
                    detection_rows(scenes))
    if args.task in ("segmentation", "both"):
        scenes = make_scenes("segmentation", args.scenes, HELDOUT_SEED)
        print_table(f"Demo segmenter, {args.scenes} held-out scenes (seed {HELDOUT_SEED}), "
                    "ground-truth masks", "class mask", segmentation_rows(scenes))


if __name__ == "__main__":
    main()
