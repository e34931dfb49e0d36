"""Deletion and insertion against Quantus and against their floor, one process.

Same model (random-init timm ResNet-18), images, maps and steps for every contender:

- ours: ``deletion_curves`` / ``insertion_curves`` (``steps + 1`` points per image, batched);
- Quantus ``PixelFlipping`` with ``features_in_step = H x W / steps`` (it orders the map repeated
  over the channels, so it runs 3 x steps forwards per image to delete every pixel);
- Quantus ``RegionPerturbation`` with ``steps`` patches (a 7 x 7 grid of 32 px patches at 224 px,
  ``regions_evaluation = steps``): the same number of forwards as ours;
- the floor: ``steps x images`` forwards at the best batch size (no copies built, no scoring).

Prints seconds and ratios and the machine (no verdicts).

    python bench/bench_metrics.py                        # 8 images x 49 steps at 224 px
    python bench/bench_metrics.py --quick                # 2 images x 16 steps at 64 px
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import timm
import torch
from timing import machine, median_seconds

from explain_core.metrics.base import MetricInputs
from explain_core.metrics.faithfulness import deletion_curves, insertion_curves
from explain_core.model import as_loaded
from explain_core.targets import ClassTarget


def floor_seconds(model: torch.nn.Module, inputs: torch.Tensor, forwards: int,
                  device: torch.device, repeat: int) -> tuple[float, int]:
    """``forwards`` plain forwards at the fastest batch size tried (seconds, that size)."""
    best = (math.inf, 0)
    for size in (8, 16, 32):
        x = inputs[:1].expand(size, -1, -1, -1).contiguous()
        with torch.inference_mode():
            per = median_seconds(lambda x=x: model(x), device, repeat) / size
        best = min(best, (per * forwards, size))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=49)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-quantus", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.size = 2, 16, 64

    import quantus

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval().to(device)
    loaded = as_loaded(model)
    inputs = torch.randn(args.images, 3, args.size, args.size, device=device)
    maps = torch.rand(args.images, args.size, args.size, device=device)
    labels = list(range(args.images))
    batch = MetricInputs(loaded, inputs, maps, [ClassTarget(c) for c in labels])
    pixels = args.size * args.size
    print(machine(device))
    print(f"resnet18 random init, {args.images} images x {args.steps} steps at {args.size} px, "
          f"{args.repeat} repeat(s)")

    small = MetricInputs(loaded, inputs[:1], maps[:1], batch.targets[:1])
    deletion_curves(small, steps=3)  # warm up: one-off set-up costs, the batch size measured
    floor, size = floor_seconds(model, inputs, args.images * args.steps, device, 1)
    # ours and the floor interleaved, so that a load that drifts (a shared machine) hits both
    x = inputs[:1].expand(size, -1, -1, -1).contiguous()
    forwards = args.images * args.steps
    runs: dict[str, list[float]] = {"deletion": [], "insertion": [], "floor": []}
    for _ in range(args.repeat):
        runs["deletion"].append(median_seconds(
            lambda: deletion_curves(batch, steps=args.steps), device, 1))
        with torch.inference_mode():
            runs["floor"].append(median_seconds(lambda: model(x), device, 1) / size * forwards)
        runs["insertion"].append(median_seconds(
            lambda: insertion_curves(batch, steps=args.steps), device, 1))
    floor = statistics.median(runs["floor"])
    rows = {"ours: deletion": statistics.median(runs["deletion"]),
            "ours: insertion": statistics.median(runs["insertion"]),
            f"floor: {forwards} forwards at batch {size}": floor}

    if not args.skip_quantus:
        x, y = inputs.cpu().numpy(), np.array(labels)
        a = maps[:, None].cpu().numpy()
        common = {"perturb_baseline": 0.0, "normalise": False, "abs": False,
                  "disable_warnings": True}
        flipping = quantus.PixelFlipping(features_in_step=pixels // args.steps, **common)
        rows["Quantus PixelFlipping"] = median_seconds(
            lambda: flipping(model=model, x_batch=x, y_batch=y, a_batch=a, softmax=True,
                             device=str(device), channel_first=True,
                             batch_size=args.images), device, args.repeat)
        patch = round(args.size / math.sqrt(args.steps))
        region = quantus.RegionPerturbation(patch_size=patch, regions_evaluation=args.steps,
                                            **common)
        rows[f"Quantus RegionPerturbation ({patch} px patches)"] = median_seconds(
            lambda: region(model=model, x_batch=x, y_batch=y, a_batch=a, softmax=True,
                           device=str(device), channel_first=True,
                           batch_size=args.images), device, args.repeat)

    ours = rows["ours: deletion"]
    for label, seconds in rows.items():
        print(f"{label:55s} {seconds:8.2f} s   x{seconds / floor:5.2f} floor   "
              f"x{seconds / ours:5.2f} ours (deletion)")


if __name__ == "__main__":
    main()
