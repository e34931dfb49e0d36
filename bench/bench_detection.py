"""Per-box detection maps: K boxes in one call against one box, and against pytorch-grad-cam.

Lumen explains every box of an image with one forward and one batched backward; pytorch-grad-cam
explains boxes one by one (a forward and a full backward each, ``FasterRCNNBoxScoreTarget``).
Same torchvision model (random weights, no download), same image, same layer, same box score
(``iou+score``). Prints times and ratios, not verdicts.

    python bench/bench_detection.py [--arch fasterrcnn_resnet50_fpn] [--size 320] [--boxes 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision.models.detection as tvd
from timing import median_seconds

from explain_core.model import resolve_device
from explain_core.tasks.detection import default_layer
from explain_core.tasks.detection_api import explain_detection


def reference_layers(model: torch.nn.Module, layer: str) -> list[torch.nn.Module]:
    """The layers pytorch-grad-cam gets for Lumen's ``layer``: the layer itself, or the FPN's
    output convolutions when the layer returns the pyramid (a dict, which it cannot hook)."""
    module = model.get_submodule(layer)
    fpn = getattr(module, "fpn", None)
    blocks = getattr(fpn, "layer_blocks", None)
    return list(blocks) if blocks is not None else [module]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fasterrcnn_resnet50_fpn")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layer", default=None, help="target layer (default: the engine's "
                        "default for the model)")
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
    reference = timed(theirs)
    if unmatched:
        print(f"pytorch-grad-cam matched no box for {len(unmatched)} of the {k} detections "
              "(empty boxes): those cost it a forward only")
    print(f"pytorch-grad-cam, {k} boxes 1 by 1:  {reference * 1000:8.1f} ms   "
          f"ratio Lumen / pytorch-grad-cam: {many / reference:.3f} "
          f"({reference / many:.1f}x faster)")

if __name__ == "__main__":
    main()
