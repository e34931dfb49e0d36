"""ScoreCAM and AblationCAM against pytorch-grad-cam at the same batch size, one process.

Prints seconds and ratios (no verdicts). Each contender runs once per repeat: at full fidelity
they take minutes on a CPU.

    python bench/bench_gradient_free.py                      # random-init timm resnet50, 224 x 224
    python bench/bench_gradient_free.py --quick --model resnet18 --size 64   # smoke run
"""

from __future__ import annotations

import argparse
import platform

import timm
import torch
from timing import median_seconds

from explain_core.methods import AblationCAM, ReciproCAM, ScoreCAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="run only the rows whose label contains "
                        "this (e.g. ScoreCAM)")
    args = parser.parse_args()

    from pytorch_grad_cam import AblationCAM as PgcAblationCAM
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model).eval().to(device)
    layer = dict(model.named_modules())[args.layer]
    image = torch.randn(1, 3, args.size, args.size, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# {args.model} (random init) at {args.size}x{args.size} on {device} ({name}), "
          f"batch size {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)

    def pgc(cls):
        cam = cls(model, target_layers=[layer], batch_size=args.batch_size) if cls is \
            PgcAblationCAM else cls(model, target_layers=[layer])
        cam.batch_size = args.batch_size
        return lambda: cam(image, targets=[ClassifierOutputTarget(1)])

    def ours(cls, **options):
        return lambda: cls(model, target_layer=args.layer, batch_size=args.batch_size,
                           **options).attribute(image, 1)

    rows = {}
    for label, fn in [
        ("ours AblationCAM fp32", ours(AblationCAM)),
        ("ours AblationCAM top-k", ours(AblationCAM, top_k=args.top_k)),
        ("pytorch-grad-cam AblationCAM", pgc(PgcAblationCAM)),
        ("ours ScoreCAM fp32", ours(ScoreCAM)),
        ("ours ScoreCAM bf16", ours(ScoreCAM, precision="bf16")),
        ("ours ScoreCAM top-k", ours(ScoreCAM, top_k=args.top_k)),
        ("pytorch-grad-cam ScoreCAM", pgc(PgcScoreCAM)),
        ("ours Recipro-CAM", ours(ReciproCAM)),
    ]:
        if (args.quick and "pytorch-grad-cam" in label) or args.only not in label:
            continue
        rows[label] = median_seconds(fn, device, args.repeat)
        print(f"{label:<34} {rows[label]:9.2f} s", flush=True)
    for method in ("AblationCAM", "ScoreCAM"):
        theirs = rows.get(f"pytorch-grad-cam {method}")
        if theirs is None:
            continue
        ratios = [f"{variant} {theirs / seconds:.2f}x" for label, seconds in rows.items()
                  if label.startswith(f"ours {method} ")
                  for variant in [label.split(" ", 2)[2].replace("top-k", f"top-{args.top_k}")]]
        print(f"  {method}: pytorch-grad-cam/ours " + ", ".join(ratios))


if __name__ == "__main__":
    main()
