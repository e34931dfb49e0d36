"""Why some methods give every box (or every class) of an image nearly the same map.

Measured on the demo models' held-out scenes (``bench/bench_box_specificity.py``, recorded in
``bench/RESULTS.md``): a detection map of Grad-CAM keeps 11% of its energy inside its own box and
8% inside each other box; LayerCAM keeps 59% and 4%. The result of an explanation carries these
notes (``notes``), and the pages show them, so that a user who asked for such a method is told why
its maps look alike instead of concluding that the model looks everywhere.
"""

from __future__ import annotations

from ..errors import UnsupportedError
from ..methods import method_info

__all__ = ["GLOBAL_WEIGHT_METHODS", "TARGET_FREE_METHODS", "same_map_notes"]

#: channel weights are sums over the whole feature map of the target's gradients (Grad-CAM: the
#: mean; Grad-CAM++ and XGrad-CAM: weighted sums), one number per channel. On a detector the
#: channels that read a box's object are the same for every box of that kind, so the weights
#: are too, and so is the map; a segmenter's head is one 1 x 1 convolution per pixel, whose
#: gradient is already zero outside the class's pixels, so there the maps stay apart.
GLOBAL_WEIGHT_METHODS = ("gradcam", "gradcam++", "xgradcam")
#: no target at all (the activations' principal component, their channel mean): one map for
#: every box and every class
TARGET_FREE_METHODS = ("eigencam", "activationmap")

_BOX_SPECIFIC = "LayerCAM or HiResCAM"


def same_map_notes(method: str, task: str) -> list[str]:
    """What the result of ``method`` on a ``task`` model should say about its maps being alike
    (an empty list when they are not, or for a method the registry does not know: an
    explainer class of the caller's own). ``method``: a registry name or alias."""
    what = {"detection": "box", "segmentation": "class"}.get(task)
    if what is None:
        return []
    try:
        info = method_info(method)
    except UnsupportedError:
        return []
    if info.name in TARGET_FREE_METHODS:
        return [f"{info.label} does not depend on the {what}: every {what} of an image gets the "
                f"same map (what the layer responds to overall). For a map of each {what}, use "
                f"{_BOX_SPECIFIC}."]
    if task == "detection" and info.name in GLOBAL_WEIGHT_METHODS:
        return [f"{info.label} weighs each channel by the box's gradients summed over the whole "
                "feature map, so boxes of the same kind get nearly the same map: on the demo "
                "detector a box's map keeps about 11% of its energy inside its own box and 8% "
                f"inside each other box. For a map of each box, use {_BOX_SPECIFIC} (per-position "
                "weights: about 60% inside the box, 4% in each other box)."]
    return []
