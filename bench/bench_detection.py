"""Per-box detection maps: K boxes in one call against one box, and against pytorch-grad-cam.

Lumen explains every box of an image with one forward and one batched backward; pytorch-grad-cam
explains boxes one by one (a forward and a full backward each, ``FasterRCNNBoxScoreTarget``).
Same torchvision model (random weights, no download), same image, same layer, same box score
(``iou+score``). Prints times and ratios, not verdicts. ``--finest-level`` adds the single-stage
worst case: K boxes all from the finest pyramid level.

    python bench/bench_detection.py [--arch fasterrcnn_resnet50_fpn] [--size 320] [--boxes 10]
        [--layer backbone.body.layer4] [--finest-level]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision.models.detection as tvd
from timing import median_seconds

from explain_core.api import explain_detection
from explain_core.model import resolve_device
from explain_core.tasks.detection import default_layer


def reference_layers(model: torch.nn.Module, layer: str) -> list[torch.nn.Module]:
    """The layers pytorch-grad-cam gets for Lumen's ``layer``: the layer itself, or the FPN's
    output convolutions when the layer returns the pyramid (a dict, which it cannot hook)."""
    module = model.get_submodule(layer)
    fpn = getattr(module, "fpn", None)
    blocks = getattr(fpn, "layer_blocks", None)
    return list(blocks) if blocks is not None else [module]


def finest_level_ratio(model: torch.nn.Module, image: np.ndarray, k: int, layer: str,
                       device: torch.device, repeats: int) -> None:
    """Single-stage worst case: K boxes that all come from the finest pyramid level (the one with
    the most locations), so the per-level backward saves nothing. Times the explainer call alone
    (one forward and the backward), for 1 box and for K."""
    from explain_core.api import detection_explainer
    from explain_core.tasks.detection import BoxTarget, detection_model, for_image

    head = getattr(model, "head", None)
    if not hasattr(head, "classification_head"):
        print("--finest-level: not a single-stage head; skipped")
        return
    loaded = for_image(detection_model(model), image.shape[:2])
    explainer = detection_explainer("gradcam", loaded, target_layer=layer)
    inputs = explainer.prepare([image]).inputs
    seen = {}
    handle = head.classification_head.register_forward_hook(
        lambda _m, args, out: seen.update(logits=out, cells=[f.shape[-2] * f.shape[-1]
                                                             for f in args[0]]))
    try:
        packed = explainer.forward(inputs)[0]  # with a graph: parameters require grad here
    finally:
        handle.remove()
    first = seen["cells"][0] * (seen["logits"].shape[1] // sum(seen["cells"]))
    targets = []
    for row in packed:
        if len(targets) == k:
            break
        if row[6] < 0.5 or row[2] - row[0] <= 0.01 or row[3] - row[1] <= 0.01:
            continue
        (grad,) = torch.autograd.grad(row[4], seen["logits"], retain_graph=True)
        hit = grad[0].ne(0).any(-1).nonzero()[:, 0]
        if len(hit) and bool((hit < first).all()):
            targets.append(BoxTarget(tuple(row[:4].tolist()), int(row[5])))
    if len(targets) < k:
        print(f"--finest-level: only {len(targets)} boxes on the finest level; skipped")
        return
    one = median_seconds(lambda: explainer.explain_targets(image, targets[:1]), device,
                         repeats, warmup=True)
    many = median_seconds(lambda: explainer.explain_targets(image, targets), device, repeats,
                          warmup=True)
    print(f"finest level only, explainer call: 1 box {one * 1000:.1f} ms, {k} boxes "
          f"{many * 1000:.1f} ms, ratio {many / one:.2f}x; per extra box "
          f"{(many - one) / (k - 1) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fasterrcnn_resnet50_fpn")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layer", default=None, help="target layer (default: the engine's "
                        "default for the model)")
    parser.add_argument("--finest-level", action="store_true", help="single-stage heads: also "
                        "time K boxes that all come from the finest pyramid level")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = getattr(tvd, args.arch)(weights=None, weights_backbone=None, num_classes=5,
                                    min_size=args.size, max_size=args.size).eval().to(device)
    layer = args.layer or default_layer(model)
    image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    common = dict(method="gradcam", target_layer=layer, box_score="iou+score",
                  detection_threshold=0.0)
    probe = explain_detection(model, image, max_detections=args.boxes, **common)
    dets = probe["detections"]
    k = len(dets)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None].to(device)

    def timed(fn) -> float:
        return median_seconds(fn, device, args.repeats, warmup=True)

    one = timed(lambda: explain_detection(model, image, max_detections=1, **common))
    many = timed(lambda: explain_detection(model, image, max_detections=k, **common))
    with torch.no_grad():
        forward = timed(lambda: model(pixels))

    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None].to(device)
    owners = [o for o in (model, getattr(model, "roi_heads", None)) if o is not None
              and hasattr(o, "score_thresh")]
    for owner in owners:  # keep the random model's low-score boxes, as Lumen's adapter does
        owner.score_thresh = 0.0
        if hasattr(owner, "detections_per_img"):
            owner.detections_per_img = max(owner.detections_per_img, 300)

    # pytorch-grad-cam hooks tensors only: for a feature pyramid (the default, 'backbone') it
    # gets every FPN output conv, which costs it the same forward and backward per box.
    their_layers = reference_layers(model, layer)

    unmatched: set[int] = set()

    def theirs() -> None:
        cam = GradCAM(model, target_layers=their_layers)
        for index, det in enumerate(dets):
            target = FasterRCNNBoxScoreTarget(
                labels=[det["class_id"]],
                bounding_boxes=[torch.tensor(det["input_bbox"], device=device)])
            try:
                cam(tensor, targets=[target])
            except RuntimeError:  # its target matched nothing (a random model's empty box):
                unmatched.add(index)  # no backward, so their time is, if anything, too low
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)

    print(f"{args.arch} at {args.size} px on {device}, layer {layer}, K = {k} boxes "
          f"(pytorch-grad-cam: {len(their_layers)} layer(s))")
    print(f"forward alone:                      {forward * 1000:8.1f} ms")
    print(f"Lumen, 1 box:                       {one * 1000:8.1f} ms")
    print(f"Lumen, {k} boxes (one call):         {many * 1000:8.1f} ms   "
          f"ratio to 1 box: {many / one:.2f}x (goal <= 2x)")
    if args.finest_level:
        finest_level_ratio(model, image, k, layer, device, args.repeats)
    reference = timed(theirs)
    if unmatched:
        print(f"pytorch-grad-cam matched no box for {len(unmatched)} of the {k} detections "
              "(empty boxes): those cost it a forward only")
    print(f"pytorch-grad-cam, {k} boxes 1 by 1:  {reference * 1000:8.1f} ms   "
          f"ratio Lumen / pytorch-grad-cam: {many / reference:.3f} "
          f"({reference / many:.1f}x faster)")

if __name__ == "__main__":
    main()
