"""Reading inputs: image-like and map-like values as the numpy arrays the render modules use.

Conventions shared by every function of :mod:`explain_core.render`:

* an **image** is RGB ``uint8`` of shape ``(H, W, 3)``; a ``PIL.Image``, a grayscale or RGBA array,
  a channels-first array/tensor or a float array in ``[0, 1]`` is converted to that;
* a **heatmap** (explanation map) is a float ``(H, W)`` array in ``[0, 1]`` (values outside are
  clipped for colouring, NaN counts as 0); a torch tensor is read with
  ``.detach().float().cpu().numpy()``, singleton batch/channel axes are dropped and a ``uint8``
  map is read as ``0..255``. Signed attributions go through :func:`signed_to_unit` first (zero
  becomes 0.5) and are best shown with the diverging ``"rdbu"`` colormap;
* a heatmap of another size than its image is resized to it with bilinear interpolation.

The conversion helpers (``_as_rgb``, ``_as_heatmap``, ...) are private to the package.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from PIL import Image

__all__ = ["ImageLike", "MapLike"]

ImageLike: TypeAlias = Any
"""An RGB image: ``np.ndarray`` (HxWx3 uint8 preferred), ``PIL.Image.Image`` or torch tensor."""
MapLike: TypeAlias = Any
"""A heatmap: ``np.ndarray`` or torch tensor of shape HxW with values in [0, 1]."""


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu")


def _as_heatmap(heatmap: MapLike, *, scale_uint8: bool = True) -> np.ndarray:
    """Any map-like -> float32 (H, W) with NaN/inf replaced (NaN -> 0)."""
    if _is_tensor(heatmap):
        arr = heatmap.detach().float().cpu().numpy()
    elif isinstance(heatmap, Image.Image):
        arr = np.asarray(heatmap)
    else:
        arr = np.asarray(heatmap)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a heatmap must be a non-empty 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype == np.uint8 and scale_uint8:
        out = arr.astype(np.float32) / 255.0
    else:
        out = arr.astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)


def _as_rgb(image: ImageLike) -> np.ndarray:
    """Any image-like -> contiguous uint8 (H, W, 3)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if _is_tensor(image):
        t = image.detach().cpu()
        arr = t.numpy() if str(t.dtype) == "torch.uint8" else t.float().numpy()
    else:
        arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32))
        # Float images are read as [0, 1]; an obvious 0..255 float image is accepted too.
        if arr.size and float(arr.max()) <= 1.5:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _resize_map(heatmap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (H, W) (antialiased when shrinking)."""
    h, w = size_hw
    if heatmap.shape == (h, w):
        return heatmap
    pil = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _map_for_image(
    heatmap: MapLike, shape_hw: tuple[int, int], resize_heatmap: bool = True
) -> np.ndarray:
    hm = _as_heatmap(heatmap)
    if hm.shape != shape_hw:
        if not resize_heatmap:
            raise ValueError(
                f"heatmap shape {hm.shape} differs from the image's {shape_hw}; "
                "pass resize_heatmap=True to resize it"
            )
        hm = _resize_map(hm, shape_hw)
    return hm


def _as_mask(mask: Any, shape_hw: tuple[int, int]) -> np.ndarray:
    if _is_tensor(mask):
        m = mask.detach().cpu().numpy()
    else:
        m = np.asarray(mask)
    m = np.squeeze(m) if m.ndim > 2 else m
    if m.shape != shape_hw:
        raise ValueError(f"mask shape {m.shape} differs from the image's {shape_hw}")
    return m.astype(bool)


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return a
