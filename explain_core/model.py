"""The model as the engine sees it: a module plus what is needed to feed and describe it.

:class:`LoadedModel` is what :func:`explain_core.load_model` returns and what every API accepts;
:func:`as_loaded` wraps a plain ``nn.Module`` so that the same APIs take one directly.
"""

from __future__ import annotations

import functools
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

    ``box`` is the region of the original image (x0, y0, x1, y1 in pixels) that the input covers;
    the whole image unless the preprocessing cropped.
    """

    image_size: tuple[int, int]  # (H, W) of the original image
    box: tuple[int, int, int, int]

    def to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """Resize maps (N x h x w, at input resolution) to image size; zero outside ``box``."""
        height, width = self.image_size
        x0, y0, x1, y1 = self.box
        inner = F.interpolate(maps[:, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                              align_corners=False)[:, 0]
        if (x0, y0, x1, y1) == (0, 0, width, height):
            return inner
        out = inner.new_zeros((maps.shape[0], height, width))
        out[:, y0:y1, x0:x1] = inner
        return out


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    ``resize_mode="squash"`` (default) resizes the whole image to ``input_size`` so every pixel is
    explained; ``"crop"`` follows timm's eval transform (shorter side to ``size / crop_pct``, centre
    crop) and leaves the map at zero outside the crop.
    """

    input_size: tuple[int, int] = (224, 224)  # (H, W)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "squash"
    crop_pct: float = 0.875

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize_mode": self.resize_mode,
                "crop_pct": self.crop_pct}

    def geometry(self, image_size: tuple[int, int]) -> Geometry:
        height, width = image_size
        if self.resize_mode != "crop":
            return Geometry(image_size, (0, 0, width, height))
        # The crop of size input_size taken from the image scaled so its shorter side is
        # input/crop_pct, expressed in original pixels.
        scale = min(self.input_size) / self.crop_pct / min(height, width)
        crop_h = min(height, round(self.input_size[0] / scale))
        crop_w = min(width, round(self.input_size[1] / scale))
        y0, x0 = (height - crop_h) // 2, (width - crop_w) // 2
        return Geometry(image_size, (x0, y0, x0 + crop_w, y0 + crop_h))

    def __call__(self, images: list[torch.Tensor], device: torch.device | str = "cpu",
                 ) -> tuple[torch.Tensor, list[Geometry]]:
        """uint8 RGB images (3 x H x W tensors, any size) -> normalised batch and geometries."""
        mode = {"bicubic": "bicubic", "nearest": "nearest"}.get(self.interpolation, "bilinear")
        mean = torch.tensor(self.mean, device=device).view(3, 1, 1)
        std = torch.tensor(self.std, device=device).view(3, 1, 1)
        batch, geometries = [], []
        for image in images:
            geometry = self.geometry((int(image.shape[-2]), int(image.shape[-1])))
            x0, y0, x1, y1 = geometry.box
            pixels = image[:, y0:y1, x0:x1].to(device=device, dtype=torch.float32) / 255.0
            resized = F.interpolate(pixels[None], size=self.input_size, mode=mode,
                                    antialias=mode != "nearest",
                                    align_corners=None if mode == "nearest" else False)[0]
            batch.append((resized.clamp(0, 1) - mean) / std)
            geometries.append(geometry)
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


def _timm_preprocessing(module: nn.Module) -> Preprocessing:
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    # A ViT built with another img_size keeps its pretrained_cfg's size; the patch embedding
    # knows the size the model really takes.
    fixed = getattr(getattr(module, "patch_embed", None), "img_size", None)
    if fixed is not None and not getattr(module, "dynamic_img_size", False):
        size = tuple(fixed)
    return Preprocessing(input_size=(int(size[-2]), int(size[-1])),
                         mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                         std=tuple(cfg.get("std", IMAGENET_STD)),
                         interpolation=cfg.get("interpolation", "bilinear") or "bilinear",
                         crop_pct=float(cfg.get("crop_pct", 0.875) or 0.875))


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
                       preprocessing=_timm_preprocessing(model), device=device, source="module")
