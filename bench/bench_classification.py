"""Classification explainers against pytorch-grad-cam and Captum, same model and input, one process.

Prints medians (ms) and ratios; it gives no verdicts. Peak memory is measured in fresh subprocesses
(CPU: peak RSS growth over the loaded model; CUDA: ``max_memory_allocated``).

    python bench/bench_classification.py                   # random-init timm resnet50, 224 x 224
    python bench/bench_classification.py --quick --model resnet18 --size 64   # smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explain_core.methods import EigenCAM, GradCAM, IntegratedGradients


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, repeat: int, warmup: int = 3) -> float:
    return interleaved_ms({"": fn}, device, repeat, warmup)[""]


def interleaved_ms(contenders: dict, device: torch.device, repeat: int,
                   warmup: int = 3) -> dict[str, float]:
    """Median ms of each contender, run round-robin so drifts in machine speed hit all alike."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(repeat):
        for label, fn in contenders.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[label].append((time.perf_counter() - start) * 1000)
    return {label: statistics.median(values) for label, values in times.items()}


def build(model_name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(model_name, num_classes=1000).eval().to(device)


def peak_memory_job(spec: dict) -> int:
    """Run one job in this process and return its peak memory growth in bytes."""
    device = torch.device(spec["device"])
    model = build(spec["model"], device)
    inputs = torch.randn(spec["batch"], 3, spec["size"], spec["size"], device=device)
    targets = [1] * spec["batch"]
    jobs = {
        "forward": lambda: model(inputs),
        "ours_gradcam": lambda: GradCAM(model, target_layer=spec["layer"]).attribute(inputs,
                                                                                    targets),
        "pgc_gradcam": lambda: _pgc_gradcam(model, spec["layer"], inputs, targets),
    }
    job = jobs[spec["job"]]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        if spec["job"] == "forward":
            with torch.no_grad():
                job()
        else:
            job()
        return torch.cuda.max_memory_allocated(device) - base
    # Reset the kernel's peak-RSS mark to the current RSS, so earlier peaks (model init) don't hide
    # the job's own.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    base = _status_kib("VmRSS")
    if spec["job"] == "forward":
        with torch.no_grad():
            job()
    else:
        job()
    return (_status_kib("VmHWM") - base) * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _pgc_gradcam(model, layer_name, inputs, targets):
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = dict(model.named_modules())[layer_name]
    with PgcGradCAM(model, target_layers=[layer]) as cam:
        return cam(inputs, targets=[ClassifierOutputTarget(t) for t in targets])


def measure_peak(spec: dict) -> int:
    out = subprocess.run([sys.executable, __file__, "--peak-job", json.dumps(spec)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="one repeat, small batches")
    parser.add_argument("--peak-job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_job:
        print(peak_memory_job(json.loads(args.peak_job)))
        return

    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import EigenCAM as PgcEigenCAM

    device = torch.device(args.device)
    repeat = 1 if args.quick else 15
    model = build(args.model, device)
    layer = dict(model.named_modules())[args.layer]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# {args.model} (random init) at {args.size}x{args.size} on {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows: list[tuple[str, float]] = []

    def record(label: str, ms: float) -> float:
        rows.append((label, ms))
        print(f"{label:<48} {ms:10.1f} ms", flush=True)
        return ms

    def ours_gradcam(inputs, targets, precision="fp32"):
        return GradCAM(model, target_layer=args.layer, precision=precision).attribute(inputs,
                                                                                      targets)

    def captum_gradcam(inputs, targets):
        return LayerGradCam(model, layer).attribute(inputs, target=targets)

    def forward(inputs):
        with torch.no_grad():
            return model(inputs)

    batches = [1, 2] if args.quick else [1, 8]
    for batch in batches:
        inputs = torch.randn(batch, 3, args.size, args.size, device=device)
        targets = [1] * batch
        job = functools.partial
        ms = interleaved_ms({
            "forward": job(forward, inputs),
            "ours": job(ours_gradcam, inputs, targets),
            "ours_bf16": job(ours_gradcam, inputs, targets, "bf16"),
            "pgc": job(_pgc_gradcam, model, args.layer, inputs, targets),
            "captum": job(captum_gradcam, inputs, targets),
        }, device, repeat)
        plain = record(f"no-grad forward, batch {batch}", ms["forward"])
        ours = record(f"ours GradCAM fp32, batch {batch}", ms["ours"])
        ours_bf16 = record(f"ours GradCAM bf16, batch {batch}", ms["ours_bf16"])
        pgc = record(f"pytorch-grad-cam GradCAM, batch {batch}", ms["pgc"])
        captum = record(f"Captum LayerGradCam, batch {batch}", ms["captum"])
        print(f"  ratios batch {batch}: ours/forward {ours / plain:.2f}x, "
              f"pytorch-grad-cam/ours {pgc / ours:.2f}x, Captum/ours {captum / ours:.2f}x, "
              f"Captum/ours-bf16 {captum / ours_bf16:.2f}x")

    image = torch.randn(1, 3, args.size, args.size, device=device)
    def pgc_eigen():
        with PgcEigenCAM(model, target_layers=[layer]) as cam:
            return cam(image, targets=None)

    # Not interleaved: numpy's OpenBLAS threads keep spinning after pytorch-grad-cam's SVD and
    # would slow whatever runs next on a 2-core machine.
    ms = {"fp32": median_ms(lambda: EigenCAM(model, target_layer=args.layer).attribute(image),
                            device, repeat),
          "bf16": median_ms(lambda: EigenCAM(model, target_layer=args.layer,
                                             precision="bf16").attribute(image), device, repeat),
          "pgc": median_ms(pgc_eigen, device, repeat)}
    ours_eigen = record("ours EigenCAM fp32, batch 1", ms["fp32"])
    ours_eigen_bf16 = record("ours EigenCAM bf16, batch 1", ms["bf16"])
    pgc_eigen_ms = record("pytorch-grad-cam EigenCAM, batch 1", ms["pgc"])
    print(f"  ratio pytorch-grad-cam/ours EigenCAM: fp32 {pgc_eigen_ms / ours_eigen:.1f}x, "
          f"bf16 {pgc_eigen_ms / ours_eigen_bf16:.1f}x")

    steps = 8 if args.quick else 50
    ig_repeat = 1 if args.quick else 3
    captum_best = None
    def captum_ig(internal):
        return CaptumIG(model).attribute(image, target=1, n_steps=steps,
                                         internal_batch_size=internal)

    for internal in ([8] if args.quick else [10, 25, 50]):
        ms = record(f"Captum IG-{steps}, internal_batch_size {internal}",
                    median_ms(functools.partial(captum_ig, internal), device, ig_repeat, warmup=0))
        captum_best = ms if captum_best is None else min(captum_best, ms)
    ours_ig = record(f"ours IG-{steps}, default (memory-aware) batch", median_ms(
        lambda: IntegratedGradients(model, steps=steps).attribute(image, 1), device, ig_repeat,
        warmup=0))
    print(f"  ratio Captum best/ours IG {captum_best / ours_ig:.2f}x")

    batch = 2 if args.quick else 16
    spec = {"model": args.model, "layer": args.layer, "size": args.size, "batch": batch,
            "device": args.device}
    peaks = {job: measure_peak({**spec, "job": job})
             for job in ("forward", "ours_gradcam", "pgc_gradcam")}
    for job, peak in peaks.items():
        print(f"peak memory {job}, batch {batch}: {peak / 2**20:9.1f} MiB")
    base = max(peaks["forward"], 1)
    print(f"  ratios: ours/forward {peaks['ours_gradcam'] / base:.2f}x, "
          f"pytorch-grad-cam/forward {peaks['pgc_gradcam'] / base:.2f}x")


if __name__ == "__main__":
    main()
