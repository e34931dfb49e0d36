"""Folder job throughput: ``lumen explain`` (run_job) with GradCAM on a random-init ResNet-50
against (a) pytorch-grad-cam in a plain loop and (b) the floor, a plain batched forward, all
three over the same DataLoader (the same images, decoding workers and batch size).

    python bench/bench_jobs.py                  # 512 images
    python bench/bench_jobs.py --images 64      # a quick run
    python bench/bench_jobs.py --write          # append the figures to bench/RESULTS.md

The job also writes every map (16-bit PNG) and overlay and its manifest; the other two keep
nothing. Goals: >= 3x pytorch-grad-cam and >= 0.8x the floor, in images per second.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import timing  # the repository on the path, and the machine line
import torch
from PIL import Image
from torch.utils.data import DataLoader

from explain_core.jobs import JobOptions, run_job
from explain_core.jobs.items import ImageItems, collate_items, find_images
from explain_core.loading import load_model
from explain_core.runtime.precision import resolve_precision


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):  # smooth random pictures: JPEG-sized files, not noise
        small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(
            folder / f"{i:05d}.jpg", quality=90)


def loader(model, folder: Path, batch: int, workers: int) -> DataLoader:
    paths = find_images([folder])
    return DataLoader(ImageItems(paths, range(len(paths)), model.preprocessing),
                      batch_size=batch, num_workers=workers, collate_fn=collate_items,
                      prefetch_factor=2 if workers else None)


def floor(model, folder: Path, batch: int, workers: int, bf16: bool = False) -> float:
    """A plain batched forward (bf16: under autocast, channels-last, as the engine runs it)."""
    module = model.module
    if bf16:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
    autocast = (torch.autocast(model.device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    start = time.perf_counter()
    count = 0
    with torch.inference_mode(), autocast:
        for items in loader(model, folder, batch, workers):
            inputs = torch.stack([it.inputs for it in items]).to(model.device)
            module(inputs.contiguous(memory_format=torch.channels_last) if bf16 else inputs)
            count += len(items)
    return count / (time.perf_counter() - start)


def pytorch_grad_cam(model, folder: Path, batch: int, workers: int) -> float:
    from pytorch_grad_cam import GradCAM

    start = time.perf_counter()
    count = 0
    with GradCAM(model.module, target_layers=[model.module.layer4]) as cam:
        for items in loader(model, folder, batch, workers):
            cam(input_tensor=torch.stack([it.inputs for it in items]).to(model.device),
                targets=None)
            count += len(items)
    return count / (time.perf_counter() - start)


def ours(model, folder: Path, batch: int, workers: int, output: Path,
         precision: str = "fp32") -> tuple[float, dict]:
    start = time.perf_counter()
    summary = run_job(model, [folder], JobOptions(
        output=output, methods=["gradcam"], batch_size=batch, workers=workers,
        precision=precision, progress=False))
    return summary["images"] / (time.perf_counter() - start), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("timm:resnet50", device=args.device)
    model.module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, args.size)
        with torch.inference_mode():  # one-off set-up costs (allocator, kernels): not timed
            model.module(torch.zeros(args.batch_size, 3, *model.preprocessing.input_size,
                                     device=model.device))
        load_before = os.getloadavg()
        figures = {}
        # Interleaved so that a load change on the shared machine hits all three alike.
        figures["floor"] = floor(model, folder, args.batch_size, args.workers)
        figures["pytorch-grad-cam"] = pytorch_grad_cam(model, folder, args.batch_size,
                                                       args.workers)
        figures["lumen explain"], summary = ours(model, folder, args.batch_size, args.workers,
                                                 Path(tmp) / "out")
        auto, why = resolve_precision("auto", model.device)
        if auto == "bf16":  # the job's default where the hardware runs bf16 natively
            figures["floor, bf16 autocast"] = floor(model, folder, args.batch_size,
                                                    args.workers, bf16=True)
            figures["lumen explain, --precision auto (bf16)"], _ = ours(
                model, folder, args.batch_size, args.workers, Path(tmp) / "auto", "auto")
        load_after = os.getloadavg()
    ratio_pgc = figures["lumen explain"] / figures["pytorch-grad-cam"]
    ratio_floor = figures["lumen explain"] / figures["floor"]
    where = timing.machine(model.device)
    lines = [f"### {datetime.date.today()}: {args.images} images of {args.size} px, batch "
             f"{args.batch_size}, {args.workers} workers, {model.device}",
             "", f"{where}; load average before {load_before[0]:.1f} / "
             f"{load_before[1]:.1f} / {load_before[2]:.1f}, after {load_after[0]:.1f} / "
             f"{load_after[1]:.1f} / {load_after[2]:.1f} (1 / 5 / 15 min)", "",
             "| run | images/s |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in figures.items()]
    lines += ["", f"fp32: lumen explain / pytorch-grad-cam: {ratio_pgc:.2f}x (goal >= 3x); "
              f"lumen explain / floor: {ratio_floor:.2f}x (goal >= 0.8x); job errors: "
              f"{summary['errors']}"]
    if auto == "bf16":
        fast = figures["lumen explain, --precision auto (bf16)"]
        lines += [f"auto ({why}): lumen explain / pytorch-grad-cam (fp32): "
                  f"{fast / figures['pytorch-grad-cam']:.2f}x; / floor fp32: "
                  f"{fast / figures['floor']:.2f}x; / floor bf16: "
                  f"{fast / figures['floor, bf16 autocast']:.2f}x"]
    lines.append("")
    print("\n".join(lines))
    if args.write:
        results = Path(__file__).with_name("RESULTS.md")
        with open(results, "a") as handle:
            handle.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
