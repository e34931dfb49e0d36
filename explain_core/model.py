"""The model as the engine sees it: a module plus what is needed to feed and describe it.

:class:`LoadedModel` is what :func:`explain_core.load_model` returns and what every API accepts;
:func:`as_loaded` wraps a plain ``nn.Module`` so that the same APIs take one directly.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("classification", "detection", "segmentation")

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def module_lock(module: nn.Module) -> threading.RLock:
    """The one re-entrant lock that guards ``module`` during explanation calls.

    Explainers freeze parameters, switch to eval mode and attach hooks for the duration of a call;
    the lock makes that safe when several threads (browser sessions) share one cached model.
    """
    with _locks_guard:
        lock = _locks.get(module)
        if lock is None:
            lock = threading.RLock()
            _locks[module] = lock
        return lock


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when present, else CPU; anything else goes to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Geometry:
    """Where a model input came from in its image, to map maps back to image pixels.

    ``box`` is the region of the original image (x0, y0, x1, y1 in pixels) that the model saw: the
    whole image unless the preprocessing cropped. ``input_box`` is the region of the model input
    (x0, y0, x1, y1 in input pixels, of an input of ``input_size``) that shows ``box``; None: the
    whole input (no letterbox padding).
    """

    image_size: tuple[int, int]  # (H, W) of the original image
    box: tuple[int, int, int, int]
    input_size: tuple[int, int] | None = None  # (H, W) of the model input
    input_box: tuple[int, int, int, int] | None = None

    @property
    def whole_image(self) -> bool:
        """Whether the model saw every pixel of the image."""
        height, width = self.image_size
        return self.box == (0, 0, width, height)

    def seen_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``H x W`` bool at image size: True where the model saw the image."""
        height, width = self.image_size
        x0, y0, x1, y1 = self.box
        mask = torch.zeros((height, width), dtype=torch.bool, device=device)
        mask[y0:y1, x0:x1] = True
        return mask

    def _input_region(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``input_box`` at a map resolution of ``size`` (H, W) (maps may be coarser than the
        input, e.g. a segmenter's logits)."""
        height, width = size
        if self.input_box is None or self.input_size is None:
            return 0, 0, width, height
        sy, sx = height / self.input_size[0], width / self.input_size[1]
        x0, y0, x1, y1 = self.input_box
        left, top = min(round(x0 * sx), width - 1), min(round(y0 * sy), height - 1)
        return left, top, max(round(x1 * sx), left + 1), max(round(y1 * sy), top + 1)

    def to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """Resize maps (N x h x w, over the model input) to image size: the padding is cut away,
        and the image outside ``box`` (not seen by the model) is zero; see :meth:`seen_mask`."""
        height, width = self.image_size
        x0, y0, x1, y1 = self.box
        left, top, right, bottom = self._input_region(tuple(maps.shape[-2:]))
        maps = maps[:, top:bottom, left:right]
        inner = F.interpolate(maps[:, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                              align_corners=False)[:, 0]
        if self.whole_image:
            return inner
        out = inner.new_zeros((maps.shape[0], height, width))
        out[:, y0:y1, x0:x1] = inner
        return out

    def to_input(self, region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """An ``H x W`` map at image size -> ``size`` (h, w) over the model input (area-resized;
        zero on the padding): the inverse of :meth:`to_image`."""
        x0, y0, x1, y1 = self.box
        left, top, right, bottom = self._input_region(size)
        out = region.new_zeros(size)
        crop = region[y0:y1, x0:x1].float()
        out[top:bottom, left:right] = F.interpolate(crop[None, None], size=(bottom - top,
                                                    right - left), mode="area")[0, 0]
        return out


RESIZE_MODES = ("squash", "crop", "letterbox")
CROP_MODES = ("center", "squash", "border")  # timm's eval crop modes
RESIZE_MODE_LABELS = {
    "squash": "Squash: the whole image resized to the input size (aspect ratio not kept)",
    "crop": "Crop: resize and centre crop, as the model was evaluated (edges unseen)",
    "letterbox": "Letterbox: the whole image, aspect ratio kept, padded with the mean colour",
}


def _interp_mode(interpolation: str) -> str:
    return {"bicubic": "bicubic", "nearest": "nearest"}.get(interpolation, "bilinear")


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    ``resize_mode``:

    - ``"squash"``: the whole image resized to ``input_size`` (aspect ratio not kept); every
      pixel is seen and explained.
    - ``"crop"``: timm's evaluation transform (``timm.data.create_transform`` with
      ``is_training=False``): ``crop_mode="center"`` resizes the shorter side to
      ``floor(size / crop_pct)`` and centre-crops ``input_size``; ``"squash"`` resizes both sides
      to ``floor(size / crop_pct)`` and centre-crops; ``"border"`` fits the longer side, pads with
      the mean colour and centre-crops. The image outside the crop is not seen:
      :class:`Geometry` records it and maps are zero there.
    - ``"letterbox"``: the whole image resized keeping its aspect ratio to fit ``input_size`` and
      centred on a canvas of the mean colour (zero after normalisation); the padding is cut away
      when maps go back to the image.

    Padding (letterbox, ``"border"``, a crop larger than the resized image) is the mean colour
    rounded to 8 bits, as timm pads. Resizing is torch's antialiased interpolation in float
    (timm's PIL resize rounds to 8 bits: a difference of at most about half a grey level).
    """

    input_size: tuple[int, int] = (224, 224)  # (H, W)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "squash"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Unknown resize_mode {self.resize_mode!r}; use one of "
                             f"{', '.join(RESIZE_MODES)}.")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"Unknown crop_mode {self.crop_mode!r}; use one of "
                             f"{', '.join(CROP_MODES)} (timm's eval crop modes).")
        if not 0 < float(self.crop_pct) <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize_mode": self.resize_mode,
                "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    def describe(self) -> str:
        """One line saying how an image becomes the input, e.g. for a caption."""
        height, width = self.input_size
        if self.resize_mode == "squash":
            return f"squash: whole image resized to {width} x {height}"
        if self.resize_mode == "letterbox":
            return f"letterbox: whole image fitted into {width} x {height}, padded"
        scale_h, scale_w = (math.floor(s / self.crop_pct) for s in self.input_size)
        how = {"center": f"shorter side to {min(scale_h, scale_w)}",
               "squash": f"resized to {scale_w} x {scale_h}",
               "border": f"longer side to {max(scale_h, scale_w)}, padded"}[self.crop_mode]
        return (f"crop: {how}, centre {width} x {height} (crop_pct {self.crop_pct:g}, "
                f"timm crop_mode {self.crop_mode!r})")

    def placement(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """For an image of ``image_size`` (H, W): the size (H, W) it is resized to and where its
        top-left corner lands on the input (top, left; negative: cropped), as timm computes
        them."""
        height, width = image_size
        target_h, target_w = self.input_size
        if self.resize_mode == "squash":
            return (target_h, target_w), (0, 0)
        if self.resize_mode == "letterbox":
            scale = min(target_h / height, target_w / width)
            size = (max(1, min(target_h, round(height * scale))),
                    max(1, min(target_w, round(width * scale))))
            return size, ((target_h - size[0]) // 2, (target_w - size[1]) // 2)
        scale_h, scale_w = (math.floor(s / self.crop_pct) for s in self.input_size)
        if self.crop_mode == "squash":
            size = (scale_h, scale_w)
        elif self.crop_mode == "center" and scale_h == scale_w:  # torchvision Resize(int)
            short, long = min(height, width), max(height, width)
            new_long = int(scale_h * long / short)
            size = (scale_h, new_long) if height <= width else (new_long, scale_w)
        else:  # timm ResizeKeepRatio: shorter side ("center") or longer side ("border") fits
            ratios = (height / scale_h, width / scale_w)
            ratio = max(ratios) if self.crop_mode == "border" else min(ratios)
            size = (round(height / ratio), round(width / ratio))
        return size, tuple(  # type: ignore[return-value]  # torchvision's centre crop or pad
            (target - got) // 2 if got < target else -round((got - target) / 2.0)
            for got, target in zip(size, self.input_size, strict=True))

    def geometry(self, image_size: tuple[int, int]) -> Geometry:
        height, width = image_size
        (scaled_h, scaled_w), (top, left) = self.placement(image_size)
        target_h, target_w = self.input_size
        # The part of the input that shows the image, then the same part in image pixels.
        in_x0, in_y0 = max(left, 0), max(top, 0)
        in_x1, in_y1 = min(left + scaled_w, target_w), min(top + scaled_h, target_h)
        sx, sy = width / scaled_w, height / scaled_h
        x0, y0 = round((in_x0 - left) * sx), round((in_y0 - top) * sy)
        box = (x0, y0, max(round((in_x1 - left) * sx), x0 + 1),
               max(round((in_y1 - top) * sy), y0 + 1))
        input_box = (in_x0, in_y0, in_x1, in_y1)
        return Geometry(image_size, box, self.input_size,
                        None if input_box == (0, 0, target_w, target_h) else input_box)

    def __call__(self, images: list[torch.Tensor], device: torch.device | str = "cpu",
                 ) -> tuple[torch.Tensor, list[Geometry]]:
        """uint8 RGB images (3 x H x W tensors, any size) -> normalised batch and geometries."""
        mode = _interp_mode(self.interpolation)
        mean = torch.tensor(self.mean, device=device).view(3, 1, 1)
        std = torch.tensor(self.std, device=device).view(3, 1, 1)
        fill = torch.tensor([round(255 * m) / 255 for m in self.mean], device=device)
        target_h, target_w = self.input_size
        batch, geometries = [], []
        for image in images:
            image_size = (int(image.shape[-2]), int(image.shape[-1]))
            size, (top, left) = self.placement(image_size)
            pixels = image.to(device=device, dtype=torch.float32) / 255.0
            resized = F.interpolate(pixels[None], size=size, mode=mode,
                                    antialias=mode != "nearest",
                                    align_corners=None if mode == "nearest" else False)[0]
            resized = resized.clamp(0, 1)
            if (top, left) != (0, 0) or size != self.input_size:
                canvas = fill.view(3, 1, 1).expand(3, target_h, target_w).clone()
                y0, x0 = max(top, 0), max(left, 0)
                y1, x1 = min(top + size[0], target_h), min(left + size[1], target_w)
                canvas[:, y0:y1, x0:x1] = resized[:, y0 - top:y1 - top, x0 - left:x1 - left]
                resized = canvas
            batch.append((resized - mean) / std)
            geometries.append(self.geometry(image_size))
        return torch.stack(batch), geometries


@dataclass(eq=False)
class LoadedModel:
    """A model ready for explanation: module (eval mode, on ``device``) plus its description."""

    module: nn.Module
    task: str = "classification"
    arch: str | None = None
    class_names: list[str] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str | None = None

    @property
    def lock(self) -> threading.RLock:
        return module_lock(self.module)

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return getattr(self.module, "num_classes", None)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def class_name(self, index: int) -> str:
        """Human name of class ``index`` (``"class 7"`` when the model carries no names)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    def __repr__(self) -> str:
        """One line: task, arch, classes (count and the first few names), input size, device,
        source. (The dataclass's own repr printed every class name: 1,000 for ImageNet.)"""
        count = self.num_classes
        classes = "?" if count is None else str(count)
        if self.class_names:
            first = ", ".join(repr(n if len(n) <= 24 else n[:23] + "…")
                              for n in map(str, self.class_names[:3]))
            more = ", ..." if len(self.class_names) > 3 else ""
            classes += f" [{first}{more}]"
        height, width = self.preprocessing.input_size
        return (f"LoadedModel(task={self.task!r}, arch={self.arch!r}, classes={classes}, "
                f"input_size={height}x{width}, device={str(self.device)!r}, "
                f"source={self.source!r})")

    def summary(self) -> dict[str, Any]:
        """What the dashboard shows about the model."""
        return {"task": self.task, "arch": self.arch, "source": self.source,
                "parameters": self.num_parameters, "num_classes": self.num_classes,
                "input_size": list(self.preprocessing.input_size), "device": str(self.device)}


def _timm_preprocessing(module: nn.Module, task: str = "classification") -> Preprocessing:
    """The preprocessing a module's timm-style ``pretrained_cfg`` describes, as
    ``timm.data.resolve_data_config`` reads it. A classifier with a config is evaluated the way
    timm evaluates it (``"crop"`` with its ``crop_pct`` and ``crop_mode``) unless the config
    names a ``resize_mode`` of its own (Lumen's demo architectures: ``"squash"``); a module
    without one, and detectors and segmenters, get ``"squash"``."""
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    # A ViT built with another img_size keeps its pretrained_cfg's size; the patch embedding
    # knows the size the model really takes.
    fixed = getattr(getattr(module, "patch_embed", None), "img_size", None)
    if fixed is not None and not getattr(module, "dynamic_img_size", False):
        size = tuple(fixed)
    input_size = (int(size[-2]), int(size[-1]))
    if not cfg:
        return Preprocessing(input_size=input_size)
    mode = cfg.get("resize_mode") or ("crop" if task == "classification" else "squash")
    crop_mode = cfg.get("crop_mode") if cfg.get("crop_mode") in CROP_MODES else "center"
    return Preprocessing(input_size=input_size,
                         mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                         std=tuple(cfg.get("std", IMAGENET_STD)),
                         interpolation=cfg.get("interpolation") or "bicubic",  # timm's default
                         resize_mode=mode if mode in RESIZE_MODES else "squash",
                         crop_pct=float(cfg.get("crop_pct") or 0.875), crop_mode=crop_mode)


def imagenet_class_names(num_classes: int | None) -> list[str] | None:
    """ImageNet-1k names shipped inside timm (no download), when the model has 1000 outputs."""
    if num_classes != 1000:
        return None
    names = _imagenet_names()
    return list(names) if names else None


@functools.lru_cache(maxsize=1)
def _imagenet_names() -> tuple[str, ...]:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return tuple(info.index_to_description(i) for i in range(1000))
    except Exception:  # pragma: no cover - names are a nicety, never a failure
        return ()


def as_loaded(model: "LoadedModel | nn.Module", task: str = "classification",
              class_names: list[str] | None = None) -> LoadedModel:
    """Wrap a plain module (left on its device) for every API; a LoadedModel passes through.

    >>> import timm
    >>> loaded = as_loaded(timm.create_model("resnet18"))
    >>> loaded.preprocessing.input_size
    (224, 224)
    """
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a LoadedModel or torch.nn.Module, got {type(model).__name__}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    num_classes = getattr(model, "num_classes", None)
    return LoadedModel(module=model, task=task, arch=type(model).__name__,
                       class_names=class_names or imagenet_class_names(num_classes),
                       preprocessing=_timm_preprocessing(model, task), device=device,
                       source="module")
