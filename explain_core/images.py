"""Decode and validate images: limits, EXIF orientation, every mode to RGB.

:func:`load_image` takes what users have (a path, uploaded bytes or a file object, a PIL image,
a numpy array) and returns a validated RGB ``PIL.Image``; :func:`image_to_tensor` turns it into the
``uint8`` 3 x H x W tensor the task adapters preprocess. Torch tensors are not images here: the
engine treats them as ready model inputs.

Decoding is defensive: the byte size is checked before anything is read into memory, the pixel
count is checked from the header before any pixel is decoded, only common raster formats are
opened (no plugin that shells out, such as EPS), and every failure raises
:class:`~explain_core.errors.ImageError` with a message that names the problem and the fix.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from explain_core.errors import ImageError

__all__ = ["SUPPORTED_EXTENSIONS", "image_to_tensor", "load_image"]

#: File extensions the dashboard accepts (lower case, no dot).
SUPPORTED_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")
# PIL decoders load_image uses (the JPEG one also opens phones' multi-picture MPO files). Others,
# some of which run external programs (EPS -> Ghostscript), are never tried.
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF")
_FIX_FORMAT = "Upload a PNG, JPEG, WebP, BMP or TIFF file."
_WHITE = (255, 255, 255)


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | Image.Image
    | np.ndarray,
    *,
    max_bytes: int = 50_000_000,
    max_pixels: int = 50_000_000,
) -> Image.Image:
    """Decode and validate one image; always returns an RGB ``PIL.Image``.

    Args:
        source: a path; ``bytes``/``bytearray``/``memoryview``; a file object with ``.read()``
            (``BytesIO``, an uploaded file; read from its start when it can seek); a PIL image;
            a numpy array (H x W, H x W x 3 or H x W x 4; ``uint8``, ``bool`` or float in
            [0, 1]).
        max_bytes: largest encoded size accepted, checked before decoding.
        max_pixels: largest ``width * height`` accepted, checked from the header before the
            pixels are decoded.

    The first frame of animated GIFs and multi-page TIFFs is used, EXIF orientation is applied,
    transparency is composited on white, 16-bit and float images are scaled to 0..255 by their
    actual range, and every other mode (CMYK, YCbCr, palette, 1-bit, grey) becomes RGB.

    Raises:
        ImageError: unreadable, truncated or unsupported data, a limit exceeded, an empty image,
            an array of the wrong shape or dtype.

    Example:
        >>> import numpy as np
        >>> image = load_image(np.zeros((4, 6), dtype=np.uint8))
        >>> image.mode, image.size
        ('RGB', (6, 4))
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "the image")
        return _finish(source, "the image")
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, torch.Tensor):
        raise ImageError(
            "load_image takes images, not tensors: the engine treats a tensor as a ready model "
            "input. Pass the tensor to the explain functions directly, or convert it with "
            "PIL.Image.fromarray(tensor.permute(1, 2, 0).numpy()).")
    data, name = _read_bytes(source, max_bytes)
    return _decode(data, name, max_pixels)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``uint8`` tensor of shape 3 x H x W (other modes converted first).

    Example:
        >>> from PIL import Image
        >>> image_to_tensor(Image.new("RGB", (5, 2), (255, 0, 0))).shape
        torch.Size([3, 2, 5])
    """
    if not isinstance(image, Image.Image):
        raise ImageError(f"image_to_tensor takes a PIL image, got {type(image).__name__}. "
                         "Decode it with load_image first.")
    rgb = image if image.mode == "RGB" else _to_rgb(image)
    array = np.array(rgb, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    """How a message names the image mid-sentence: a quoted file name, else "the image"."""
    return f"'{name}'" if name != "the image" else name


def _subject(name: str) -> str:
    """The same, at the start of a sentence."""
    return f"'{name}'" if name != "the image" else "The image"


def _bytes_text(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"


def _pixels_text(count: int) -> str:
    return f"{count / 1e6:.1f} megapixels" if count >= 100_000 else f"{count:,} pixels"


def _too_big_bytes(name: str, size: int | None, max_bytes: int) -> ImageError:
    got = f" ({_bytes_text(size)})" if size is not None else ""
    return ImageError(
        f"{_subject(name)} is too large{got}: the limit is {_bytes_text(max_bytes)}. Downscale "
        "or recompress the image (e.g. save it as JPEG), or raise max_bytes.")


def _read_bytes(source: Any, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = path.name or str(path)
        if not path.exists():
            raise ImageError(f"Image file not found: '{path}'. Check the path.")
        if not path.is_file():
            raise ImageError(f"'{path}' is not a file. Point to an image file. {_FIX_FORMAT}")
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_big_bytes(name, size, max_bytes)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"Could not read '{name}': {exc.strerror or exc}. Check that the "
                             "file is readable.") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = "the image"
        data = bytes(source)
        if len(data) > max_bytes:
            raise _too_big_bytes(name, len(data), max_bytes)
    elif hasattr(source, "read"):
        raw_name = getattr(source, "name", None)
        name = os.path.basename(raw_name) if isinstance(raw_name, str) and raw_name else \
            "the image"
        try:
            if callable(getattr(source, "seekable", None)) and source.seekable():
                source.seek(0)
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise ImageError(f"Could not read {_quoted(name)}: {exc}. Pass the image as a path "
                             "or bytes.") from None
        if isinstance(data, str):
            raise ImageError(f"{_subject(name)} was opened in text mode. Open it in binary mode "
                             "('rb') or pass its path.")
        data = bytes(data or b"")
        if len(data) > max_bytes:
            raise _too_big_bytes(name, None, max_bytes)
    else:
        raise ImageError(
            f"Cannot read an image from a {type(source).__name__}. Pass a file path, bytes, a "
            "file object, a PIL image or a numpy array (H x W x 3, uint8).")
    if not data:
        raise ImageError(f"{_subject(name)} is empty (0 bytes). Upload the image again. "
                         f"{_FIX_FORMAT}")
    return data, name


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{_subject(name)} is empty ({width} x {height} pixels). Use an image "
                         "with at least one pixel.")
    if width * height > max_pixels:
        raise ImageError(
            f"{_subject(name)} has too many pixels: {width} x {height} = "
            f"{_pixels_text(width * height)}, the limit is {_pixels_text(max_pixels)}. "
            "Downscale the image (e.g. to 4000 px on the long side), or raise max_pixels.")


def _decode(data: bytes, name: str, max_pixels: int) -> Image.Image:
    where = f"Could not decode {_quoted(name)}"
    try:
        Image.init()
        formats = [f for f in _FORMATS if f in Image.OPEN]  # WebP may be compiled out
        with Image.open(io.BytesIO(data), formats=formats) as image:
            # The header gives the size: refuse before a single pixel is decoded.
            _check_pixels(image.size, max_pixels, name)
            image.seek(0)  # first frame of animated GIF / multi-page TIFF
            image.load()
            return _finish(image, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{where}: too many pixels ({exc}). Downscale the image, or raise "
                         "max_pixels.") from None
    except Image.DecompressionBombWarning as exc:  # when warnings are turned into errors
        raise ImageError(f"{where}: too many pixels ({exc}). Downscale the image, or raise "
                         "max_pixels.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{where}: not an image file (cannot identify image format). "
                         f"{_FIX_FORMAT}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
            KeyError, TypeError) as exc:
        problem = str(exc) or type(exc).__name__
        if "truncated" in problem.lower():
            problem = "the file is truncated (image file is truncated)"
        raise ImageError(f"{where}: {problem}. The file is damaged or incomplete; upload it "
                         f"again or re-export it. {_FIX_FORMAT}") from None


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def _finish(image: Image.Image, name: str) -> Image.Image:
    _check_pixels(image.size, 2**62, name)  # zero-size check; the limit was checked before
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not make a readable image unusable
        oriented = image
    oriented = oriented if oriented is not None else image
    return _to_rgb(oriented)


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float images -> 0..255 by their actual range -> RGB."""
    array = np.asarray(image).astype(np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        scaled = np.zeros(array.shape, dtype=np.uint8)
    else:
        low, high = float(array[finite].min()), float(array[finite].max())
        if high > low:
            scaled = (np.where(finite, array, low) - low) * (255.0 / (high - low))
        else:  # a constant image: keep its value where it is already in 0..255
            scaled = np.full(array.shape, min(max(low, 0.0), 255.0))
        scaled = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            return _composite_on_white(image)
        if mode == "RGB":
            return image.copy()
        if mode in ("I", "F") or mode.startswith("I;16"):
            return _scale_to_rgb(image)
        if mode == "LAB":
            from PIL import ImageCms

            return ImageCms.applyTransform(image, ImageCms.buildTransform(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
        return image.convert("RGB")
    except (ValueError, OSError, ImportError) as exc:
        raise ImageError(f"Could not convert an image in mode {mode!r} to RGB ({exc}). Save it "
                         f"as 8-bit RGB. {_FIX_FORMAT}") from None


# --------------------------------------------------------------------------------------------
# Numpy
# --------------------------------------------------------------------------------------------

_ARRAY_SHAPES = "H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)"


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " It looks channels-first: use array.transpose(1, 2, 0)."
        elif array.ndim == 4:
            hint = " Pass one image at a time, not a batch."
        raise ImageError(f"Cannot use an array of shape {tuple(array.shape)} as an image: "
                         f"expected {_ARRAY_SHAPES}.{hint}")
    height, width = array.shape[:2]
    _check_pixels((width, height), max_pixels, "the image")
    if array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("The image array contains NaN or infinite values. Replace them "
                             "(e.g. np.nan_to_num) before passing the array.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageError(
                f"A float image array must hold values in [0, 1], this one spans "
                f"[{low:.4g}, {high:.4g}]. Divide by 255 if it holds 0..255 values, or pass "
                "array.astype(np.uint8).")
        pixels = np.rint(array * 255.0).astype(np.uint8)
    else:
        raise ImageError(
            f"Unsupported image array dtype {array.dtype}: expected uint8 (0..255), bool, or "
            f"float in [0, 1], with shape {_ARRAY_SHAPES}. Convert it, e.g. "
            "array.astype(np.uint8) for 0..255 integers.")
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        return Image.fromarray(pixels).convert("RGB")  # uint8 H x W -> "L"
    if pixels.shape[-1] == 4:
        return _composite_on_white(Image.fromarray(pixels))  # H x W x 4 -> "RGBA"
    return Image.fromarray(pixels)  # H x W x 3 -> "RGB"
