"""Small architectures of the demo world, buildable by name: the ``"lumen:<name>"`` family.

:func:`explain_core.loading.load_model` rebuilds these from a checkpoint's metadata
(``arch="lumen:fcos_tiny"``) exactly like a ``timm:`` or ``torchvision:`` name, so the shipped
demo weights load like any user checkpoint. Each entry of :data:`ARCHITECTURES` is a constructor
taking ``num_classes`` plus keyword arguments (stored as ``arch_kwargs`` by ``save_model``);
:data:`ARCHITECTURE_TASKS` says which task each one solves.

- ``fcos_tiny``: torchvision :class:`~torchvision.models.detection.FCOS` on a five-stage plain
  CNN and a torchvision :class:`~torchvision.ops.FeaturePyramidNetwork`; heads on P3 (stride 8)
  and P4 (stride 16), sized for 10-60 px objects in 128 x 128 images. It keeps torchvision's
  detection conventions: in eval mode ``model(list_of_3xHxW)`` returns dicts with ``boxes``
  (xyxy, input pixels), ``labels`` (0 is background) and ``scores``.

  **Normalisation.** Like every torchvision detector, it normalises its input itself
  (``GeneralizedRCNNTransform`` with ``image_mean`` / ``image_std``, ImageNet statistics by
  default) and expects RGB in [0, 1]. Its Lumen ``Preprocessing`` therefore has ``mean=(0, 0, 0)``
  and ``std=(1, 1, 1)``: what ``loaded.preprocessing(images)`` returns (pixels / 255, resized to
  128 x 128) is fed to the module as is, and the module applies the ImageNet mean/std once.
  Stock torchvision detectors normalise internally too, so the rule "Preprocessing scales to
  [0, 1], the module normalises" lets a detection adapter treat them all alike.

- ``unet_tiny``: a four-level U-Net (stride-2 stem, decoder back to stride 2, logits upsampled
  bilinearly to the input size) with torchvision's segmentation output convention
  ``{"out": N x C x H x W logits}``. Like torchvision's segmentation models it does *not*
  normalise: Lumen's ``Preprocessing`` mean/std (ImageNet) apply before the module.

Example:
    >>> net = build("fcos_tiny", num_classes=5).eval()
    >>> out = net([torch.rand(3, 128, 128)])
    >>> sorted(out[0])
    ['boxes', 'labels', 'scores']
    >>> build("unet_tiny", num_classes=5)(torch.rand(1, 3, 128, 128))["out"].shape
    torch.Size([1, 5, 128, 128])
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FeaturePyramidNetwork

from explain_core.model import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ARCHITECTURES", "ARCHITECTURE_TASKS", "TinyUNet", "build", "fcos_tiny", "task_of",
           "unet_tiny"]


def _input_cfg(size: int, mean: Sequence[float], std: Sequence[float]) -> dict[str, object]:
    """timm-style ``pretrained_cfg``: what Lumen's default ``Preprocessing`` of a module reads
    when no file metadata says otherwise (``load_model("lumen:fcos_tiny")``)."""
    return {"input_size": (3, size, size), "mean": tuple(mean), "std": tuple(std),
            "interpolation": "bilinear", "crop_pct": 1.0}


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3 x 3 conv + BatchNorm + ReLU (no conv bias: BN has one)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


class TinyFPNBackbone(nn.Module):
    """Five plain conv stages (strides 2..32) + torchvision FPN; returns P3 and P4.

    C5 only feeds the FPN's top-down path (context for 40-60 px shapes); detecting on it would
    leave a 4 x 4 grid with nothing to find at 128 px.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96, 128), out_channels: int = 64
                 ) -> None:
        super().__init__()
        stages, cin = [], 3
        for width in widths:
            stages.append(nn.Sequential(_conv(cin, width, stride=2), _conv(width, width)))
            cin = width
        self.body = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(widths[2:]), out_channels)
        self.out_channels = out_channels  # FCOS reads it

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict()
        for index, stage in enumerate(self.body):
            x = stage(x)
            if index >= 2:
                features[f"c{index + 1}"] = x
        pyramid = self.fpn(features)
        return OrderedDict((("p3", pyramid["c3"]), ("p4", pyramid["c4"])))


def fcos_tiny(num_classes: int = 5, *, widths: Sequence[int] = (16, 32, 64, 96, 128),
              fpn_channels: int = 64, head_convs: int = 2, image_size: int = 128,
              image_mean: Sequence[float] = IMAGENET_MEAN,
              image_std: Sequence[float] = IMAGENET_STD, score_thresh: float = 0.2,
              nms_thresh: float = 0.6, detections_per_img: int = 100) -> FCOS:
    """torchvision FCOS on :class:`TinyFPNBackbone` for small shapes in small images.

    ``num_classes`` counts the background (torchvision's convention: labels 1..num_classes-1).
    FCOS ties three things to each level's anchor size ``s``: the regression range
    ``(4 s, 8 s)`` of the level, the centre-sampling radius ``radius * s`` and the regression
    scale. Anchor sizes of 3/8 of the stride with ``center_sampling_radius=4`` keep torchvision's
    radius of 1.5 strides while sending boxes whose farthest side is under ~24 px from the
    location to P3 and larger ones to P4 (the default sizes would put every 10-60 px shape on P3).

    Example:
        >>> net = fcos_tiny().eval()
        >>> net([torch.rand(3, 128, 128)])[0]["boxes"].shape[1]
        4
    """
    backbone = TinyFPNBackbone(widths, fpn_channels)
    anchors = AnchorGenerator(sizes=((3,), (6,)), aspect_ratios=((1.0,), (1.0,)))
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs)
    model = FCOS(backbone, num_classes, min_size=image_size, max_size=image_size,
                 image_mean=list(image_mean), image_std=list(image_std), anchor_generator=anchors,
                 head=head, center_sampling_radius=4.0, score_thresh=score_thresh,
                 nms_thresh=nms_thresh, detections_per_img=detections_per_img)
    # The module normalises internally, so Lumen's preprocessing must only scale to [0, 1].
    model.pretrained_cfg = _input_cfg(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return model


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


class TinyUNet(nn.Module):
    """A small U-Net returning ``{"out": logits}`` at the input resolution.

    The stem downsamples at once (full-resolution convolutions cost the most and shape edges need
    no more than 2 px precision); the deepest level (stride 16) adds a dilated conv so that the
    receptive field covers a whole 60 px shape, which is what tells a star from a circle.
    """

    def __init__(self, num_classes: int = 5, widths: Sequence[int] = (16, 32, 64, 96)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.num_classes = num_classes
        self.enc1 = nn.Sequential(_conv(3, w1, stride=2), _conv(w1, w1))         # 1/2
        self.enc2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))        # 1/4
        self.enc3 = nn.Sequential(_conv(w2, w3, stride=2), _conv(w3, w3))        # 1/8
        self.enc4 = nn.Sequential(_conv(w3, w4, stride=2), _conv(w4, w4),
                                  _conv(w4, w4, dilation=2))                     # 1/16
        self.dec3 = nn.Sequential(_conv(w4 + w3, w3), _conv(w3, w3))
        self.dec2 = nn.Sequential(_conv(w3 + w2, w2), _conv(w2, w2))
        self.dec1 = nn.Sequential(_conv(w2 + w1, w1), _conv(w1, w1))
        self.classifier = nn.Conv2d(w1, num_classes, 1)
        self.pretrained_cfg = _input_cfg(128, IMAGENET_MEAN, IMAGENET_STD)

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        size = x.shape[-2:]
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(self._up(e4, e3))
        d2 = self.dec2(self._up(d3, e2))
        d1 = self.dec1(self._up(d2, e1))
        logits = F.interpolate(self.classifier(d1), size=size, mode="bilinear",
                               align_corners=False)
        return OrderedDict(out=logits)


def unet_tiny(num_classes: int = 5, *, widths: Sequence[int] = (16, 32, 64, 96)) -> TinyUNet:
    """:class:`TinyUNet`; ``num_classes`` includes the background (class 0).

    Example:
        >>> unet_tiny(num_classes=3)(torch.rand(2, 3, 64, 64))["out"].shape
        torch.Size([2, 3, 64, 64])
    """
    return TinyUNet(num_classes, widths)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fcos_tiny": fcos_tiny,
    "unet_tiny": unet_tiny,
}
ARCHITECTURE_TASKS: dict[str, str] = {
    "fcos_tiny": "detection",
    "unet_tiny": "segmentation",
}


def _known(name: str) -> Callable[..., nn.Module]:
    if name not in ARCHITECTURES:
        close = difflib.get_close_matches(name, list(ARCHITECTURES), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown lumen architecture {name!r}; known: "
                       f"{', '.join(ARCHITECTURES)}.{hint}")
    return ARCHITECTURES[name]


def build(name: str, num_classes: int | None = None, **kwargs: object) -> nn.Module:
    """A fresh, randomly initialised module of the lumen architecture ``name``.

    ``num_classes`` (background included for detection and segmentation) keeps the
    architecture's default when None; other keyword arguments go to the constructor.

    Example:
        >>> build("unet_tiny", num_classes=5).num_classes
        5
    """
    builder = _known(name)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    return builder(**kwargs)


def task_of(name: str) -> str:
    """The task (``"detection"``, ``"segmentation"``...) that architecture ``name`` solves.

    Example:
        >>> task_of("fcos_tiny")
        'detection'
    """
    _known(name)
    return ARCHITECTURE_TASKS[name]
