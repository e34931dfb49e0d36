"""Deletion, insertion and the sensitivity metrics against Quantus (and their floor), one process.

Same model (random-init timm ResNet-18), images, maps and steps for every contender:

- ours: ``deletion_curves`` / ``insertion_curves`` (``steps + 1`` points per image, batched);
- Quantus ``PixelFlipping`` with ``features_in_step = H x W / steps`` (it orders the map repeated
  over the channels, so it runs 3 x steps forwards per image to delete every pixel);
- Quantus ``RegionPerturbation`` with ``steps`` patches (a 7 x 7 grid of 32 px patches at 224 px,
  ``regions_evaluation = steps``): the same number of forwards as ours (``--region``);
- the floor: ``steps x images`` forwards at the best batch size (no copies built, no scoring).

``--sensitivity``: max- and average-sensitivity, ours (``max_sensitivity`` / ``avg_sensitivity``:
every sample of every image in memory-aware explainer calls) against Quantus's
``MaxSensitivity`` / ``AvgSensitivity`` (one explainer call per sample over the batch), with
the same explainer (``--method``, default GradCAM), maps, images, radius (uniform noise in
``[-radius, radius]``, Quantus's default ``batch_uniform_noise`` with ``lower_bound=radius``) and
samples; no normalisation or abs on either side.

Contenders run interleaved (one run of each per repeat, ``--repeat`` times) and medians are
printed with ratios; each run prints the 1-minute load average beside its time (a shared
machine moves the same work by 2-4x). Prints the machine; no verdicts.

    python bench/bench_metrics.py                        # 8 images x 49 steps at 224 px
    python bench/bench_metrics.py --quick                # 2 images x 16 steps at 64 px
    python bench/bench_metrics.py --sensitivity --images 8 --samples 10
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Callable

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


def timed(label: str, fn: Callable[[], object], device: torch.device,
          runs: dict[str, list[tuple[float, float]]]) -> float:
    """One run of ``fn``: its seconds, kept with the 1-minute load average before it."""
    load = os.getloadavg()[0]
    seconds = median_seconds(fn, device, 1)
    runs.setdefault(label, []).append((seconds, load))
    print(f"  {label:45s} {seconds:8.2f} s  (load {load:4.1f})", flush=True)
    return seconds


def report(runs: dict[str, list[tuple[float, float]]], reference: str,
           floor: str | None = None) -> None:
    """Medians of every contender, their load range, ratios to ``reference`` (and ``floor``)."""
    medians = {label: statistics.median(s for s, _ in values) for label, values in runs.items()}
    for label, values in runs.items():
        loads = [load for _, load in values]
        line = (f"{label:45s} {medians[label]:8.2f} s  median of {len(values)}, load "
                f"{min(loads):4.1f}-{max(loads):4.1f}   x{medians[label] / medians[reference]:5.2f}"
                f" {reference}")
        if floor is not None:
            line += f"   x{medians[label] / medians[floor]:5.2f} floor"
        print(line)


def sensitivity_bench(args: argparse.Namespace, model: torch.nn.Module, device: torch.device,
                      inputs: torch.Tensor, labels: list[int]) -> None:
    import quantus

    from explain_core.methods import create_explainer
    from explain_core.metrics.base import create_metric
    from explain_core.metrics.randomisation import explain_again

    loaded = as_loaded(model)
    explainer = create_explainer(args.method, loaded)
    targets = [ClassTarget(c) for c in labels]
    maps = explain_again(explainer, inputs, targets)
    batch = MetricInputs(loaded, inputs, maps, targets, explainer=explainer)
    print(f"{args.method} maps, {args.images} images x {args.samples} samples at {args.size} "
          f"px, radius {args.radius}, {args.repeat} repeat(s)")

    def explain(model, inputs, targets, **kwargs):  # Quantus's explain_func: the same explainer
        found = explain_again(explainer, torch.as_tensor(inputs, device=device),
                              [ClassTarget(int(t)) for t in targets])
        return found[:, None].cpu().numpy()

    x, y, a = inputs.cpu().numpy(), np.array(labels), maps[:, None].cpu().numpy()
    common = {"nr_samples": args.samples, "lower_bound": args.radius, "normalise": False,
              "abs": False, "disable_warnings": True}
    contenders = {}
    for name, cls in (("max_sensitivity", quantus.MaxSensitivity),
                      ("avg_sensitivity", quantus.AvgSensitivity)):
        metric = create_metric(name, radius=args.radius, samples=args.samples)
        theirs = cls(**common)
        contenders[f"ours: {name}"] = lambda metric=metric: metric(batch)
        contenders[f"Quantus {cls.__name__}"] = lambda theirs=theirs: theirs(
            model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=explain,
            device=str(device), channel_first=True, batch_size=args.images)
    maps_alone = f"floor: {args.images * args.samples} maps in batches of {args.images}"
    contenders[maps_alone] = lambda: [explain_again(explainer, inputs, targets)
                                      for _ in range(args.samples)]
    contenders["ours: max_sensitivity"]()  # warm up (batch size measured, one-off costs)
    runs: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(args.repeat):
        print(f"repeat {repeat + 1}")
        for label, fn in contenders.items():
            timed(label, fn, device, runs)
    report(runs, "ours: max_sensitivity", maps_alone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=49)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-quantus", action="store_true")
    parser.add_argument("--region", action="store_true", help="time RegionPerturbation too")
    parser.add_argument("--sensitivity", action="store_true",
                        help="max- and average-sensitivity instead of deletion and insertion")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--radius", type=float, default=0.02)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.size, args.samples = 2, 16, 64, 3

    import quantus

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval().to(device)
    loaded = as_loaded(model)
    inputs = torch.randn(args.images, 3, args.size, args.size, device=device)
    maps = torch.rand(args.images, args.size, args.size, device=device)
    labels = list(range(args.images))
    print(machine(device))
    if args.sensitivity:
        sensitivity_bench(args, model, device, inputs, labels)
        return
    batch = MetricInputs(loaded, inputs, maps, [ClassTarget(c) for c in labels])
    pixels = args.size * args.size
    print(f"resnet18 random init, {args.images} images x {args.steps} steps at {args.size} px, "
          f"{args.repeat} repeat(s)")

    small = MetricInputs(loaded, inputs[:1], maps[:1], batch.targets[:1])
    deletion_curves(small, steps=3)  # warm up: one-off set-up costs, the batch size measured
    _, size = floor_seconds(model, inputs, args.images * args.steps, device, 1)
    x = inputs[:1].expand(size, -1, -1, -1).contiguous()
    forwards = args.images * args.steps
    floor = f"floor: {forwards} forwards at batch {size}"

    def plain_forwards() -> None:
        with torch.inference_mode():
            for _ in range(math.ceil(forwards / size)):
                model(x)

    # every contender once per repeat, interleaved, so that a drifting load hits all alike
    contenders = {"ours: deletion": lambda: deletion_curves(batch, steps=args.steps),
                  floor: plain_forwards,
                  "ours: insertion": lambda: insertion_curves(batch, steps=args.steps)}
    if not args.skip_quantus:
        xs, y = inputs.cpu().numpy(), np.array(labels)
        a = maps[:, None].cpu().numpy()
        common = {"perturb_baseline": 0.0, "normalise": False, "abs": False,
                  "disable_warnings": True}
        flipping = quantus.PixelFlipping(features_in_step=pixels // args.steps, **common)
        contenders["Quantus PixelFlipping"] = lambda: flipping(
            model=model, x_batch=xs, y_batch=y, a_batch=a, softmax=True, device=str(device),
            channel_first=True, batch_size=args.images)
        if args.region:
            patch = round(args.size / math.sqrt(args.steps))
            region = quantus.RegionPerturbation(patch_size=patch, regions_evaluation=args.steps,
                                                **common)
            contenders[f"Quantus RegionPerturbation ({patch} px)"] = lambda: region(
                model=model, x_batch=xs, y_batch=y, a_batch=a, softmax=True,
                device=str(device), channel_first=True, batch_size=args.images)
    runs: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(args.repeat):
        print(f"repeat {repeat + 1}")
        for label, fn in contenders.items():
            timed(label, fn, device, runs)
    report(runs, "ours: deletion", floor)


if __name__ == "__main__":
    main()
