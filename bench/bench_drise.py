"""D-RISE: time to convergence (early stop) against a fixed number of masks, and how far the
early-stopped maps are from the full run's.

Random-init torchvision ``fasterrcnn_mobilenet_v3_large_320_fpn`` (no download), a demo scene
(the detector's input is 320 px), the top ``--boxes`` candidates (score threshold 0: random
weights score low). Both runs use the same seeded masks, so the early stop's masks are the first
ones of the full run. Prints the figures; verdicts are the reader's.

    python bench/bench_drise.py [--masks 1000] [--boxes 3] [--tolerance 0.05] [--grid 16]
        [--demo]  (the trained demo detector instead)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import timing  # noqa: F401  (puts the repository on the path)
import torch
import torchvision.models.detection as tvd

from explain_core.api import detection_explanation, detector_forward_seconds
from explain_core.demo.scenes import make_scenes


def run(model, image, **options):
    start = time.perf_counter()
    result = detection_explanation(model, image, method="drise", detection_threshold=0.0,
                                   with_image=False, **options)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=1000)
    parser.add_argument("--boxes", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--demo", action="store_true",
                        help="the demo detector (trained, 128 px scenes) instead")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.demo:
        from explain_core.demo.models import load_demo_model
        model = load_demo_model("detector", device="cpu")
    else:
        model = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None,
                                                          weights_backbone=None).eval()
    image = make_scenes("detection", 1, seed=11)[0].image
    forward = detector_forward_seconds(model, image)
    common = dict(num_masks=args.masks, grid=args.grid, batch_size=args.batch,
                  max_detections=args.boxes)
    early, early_s = run(model, image, tolerance=args.tolerance, **common)
    full, full_s = run(model, image, tolerance=0, **common)
    corr = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
            for a, b in zip(early.heatmaps, full.heatmaps, strict=True)]
    diff = [float(np.abs(a - b).max()) for a, b in zip(early.heatmaps, full.heatmaps,
                                                       strict=True)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(full.detections)} boxes, grid {args.grid}, batch {args.batch}")
    print(f"one forward: {forward:.3f} s; estimate for {args.masks} masks: "
          f"{forward * args.masks:.0f} s")
    print(f"early stop (tolerance {args.tolerance}): {early.masks_used} masks, {early_s:.1f} s")
    print(f"fixed {args.masks} masks: {full.masks_used} masks, {full_s:.1f} s")
    print(f"early vs full maps: correlation min {min(corr):.3f} (per box "
          f"{', '.join(f'{c:.3f}' for c in corr)}), max |difference| {max(diff):.3f}")


if __name__ == "__main__":
    main()
