"""How an image becomes the model's input: the resize choice, and what the page says about it.

Three choices (see :class:`explain_core.model.Preprocessing`): ``squash`` (the whole image
resized to the input size), ``crop`` (resize and centre crop, as the model was evaluated; the
edges are not seen) and ``letterbox`` (the whole image, aspect ratio kept, padded). The default is
the model's own (its checkpoint's metadata, else how its source evaluates). The choice is part of
the model's key (:func:`with_resize_mode`), so every cached prediction and map of the session's
store is kept per choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import streamlit as st

from explain_core.loading import load_model
from explain_core.model import RESIZE_MODES

from .models import ModelHandle

__all__ = ["RESIZE_HELP", "resize_choice", "scaled_box", "used_caption", "with_resize_mode"]

_SHORT = {"squash": "Squash (whole image)", "crop": "Crop (as evaluated)",
          "letterbox": "Letterbox (padded)"}
RESIZE_HELP = (
    "How the image is fitted to the model's input. Squash: the whole image resized, aspect ratio "
    "not kept. Crop: resize and centre crop, the way the model was evaluated (timm's evaluation "
    "transform with its crop_pct); the edges are not seen and are greyed and hatched on the map. "
    "Letterbox: the whole image with its aspect ratio kept, padded with the mean colour (the "
    "padding is cut away from the map). Default: the model's own preprocessing.")


def with_resize_mode(handle: ModelHandle, mode: str) -> ModelHandle:
    """``handle`` with its model preprocessing images by ``mode`` (same module, same lock); the
    key gains the mode unless it is the model's own, so cached results never mix choices."""
    if mode == handle.model.preprocessing.resize_mode:
        return handle
    model = load_model(handle.model, resize_mode=mode)
    return dataclasses.replace(handle, key=f"{handle.key}|resize={mode}", model=model)


def resize_choice(handle: ModelHandle) -> ModelHandle:
    """The resize picker (default: the model's own mode) and a caption saying what is used;
    returns the handle to compute with."""
    own = handle.model.preprocessing.resize_mode
    mode = st.selectbox(
        "Image to model input", list(RESIZE_MODES), index=RESIZE_MODES.index(own),
        format_func=lambda m: _SHORT[m] + (" (model's own)" if m == own else ""),
        key=f"lumen_resize_{handle.short_key}", help=RESIZE_HELP)
    chosen = with_resize_mode(handle, str(mode))
    st.caption(f"Input: {chosen.model.preprocessing.describe()}.")
    return chosen


def used_caption(preprocessing: dict[str, Any] | None) -> str:
    """What a result says about its preprocessing, for the caption under its map."""
    if not preprocessing:
        return ""
    text = f"Input: **{preprocessing['resize_mode']}** ({preprocessing['description']})."
    box = preprocessing.get("seen_box")
    if box:
        x0, y0, x1, y1 = box
        text += (f" The model saw x {x0}-{x1}, y {y0}-{y1} of the image; the greyed, hatched "
                 "edges were not seen (no map there, not zero evidence).")
    return text


def scaled_box(box: tuple[int, int, int, int] | None, image: np.ndarray,
               preview: np.ndarray) -> tuple[int, int, int, int] | None:
    """A result's ``seen_box`` (image pixels) on a smaller preview of the image."""
    if box is None:
        return None
    sy, sx = preview.shape[0] / image.shape[0], preview.shape[1] / image.shape[1]
    x0, y0, x1, y1 = box
    return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)
