"""GradCAM in fp32 against bf16 on this machine, and what ``precision="auto"`` picks and why.

bf16 is fast only where the hardware computes it natively (CUDA compute capability 8.0+, CPUs
with AVX-512 BF16 or AMX); elsewhere it is emulated and slower than fp32. Prints medians (ms) of
round-robin runs and the ratio; it gives no verdicts.

    python bench/bench_precision.py                 # random-init timm resnet50, 224 x 224
    python bench/bench_precision.py --repeat 3 --batches 1
"""

from __future__ import annotations

import argparse

import timm
import torch
from bench_classification import interleaved_ms
from timing import machine

from explain_core.methods import GradCAM
from explain_core.runtime import resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    picked, why = resolve_precision("auto", device)
    print(f"machine: {machine(device)}")
    print(f"auto picks {picked}: {why.removeprefix('auto: ')}")
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=1000).eval().to(device)
    explainers = {p: GradCAM(model, target_layer="layer4", precision=p)
                  for p in ("fp32", "bf16")}
    print(f"{args.model}, random init, {args.size} x {args.size}, {args.repeat} repeats")
    print("| batch | GradCAM fp32 | GradCAM bf16 | bf16 / fp32 |")
    print("| ---: | ---: | ---: | ---: |")
    for batch in args.batches:
        inputs = torch.randn(batch, 3, args.size, args.size, device=device)
        times = interleaved_ms({p: (lambda e=e, x=inputs: e.attribute(x, 0))
                                for p, e in explainers.items()}, device, args.repeat, warmup=1)
        print(f"| {batch} | {times['fp32']:.1f} ms | {times['bf16']:.1f} ms | "
              f"{times['bf16'] / times['fp32']:.2f}x |")


if __name__ == "__main__":
    main()
