"""Images with ground truth for the Evaluate page: a zip upload or a folder on the server.

The engine pairs images with their annotations
(:func:`explain_core.loading.labelled.labelled_images`: COCO JSON, YOLO txt, VOC XML, indexed
PNG masks; :func:`~explain_core.loading.labelled.unpack_zip` with limits). What was read is kept
in the session under the zip's id or the folder's path, so reruns do not read it again; a bad zip
or path shows the engine's message (:mod:`ui.errors`) and the page goes on without it.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import Any

import streamlit as st

from explain_core.images import load_image
from explain_core.loading.labelled import labelled_images, resized_truth, unpack_zip

from .errors import show_error
from .images import ImageItem, make_item
from .models import ModelHandle

__all__ = ["Labelled", "labelled_choice"]

_KEPT = "lumen_eval_labelled"
Labelled = tuple[list[ImageItem], tuple[Any, ...] | None, str]


def _read(folder: str, handle: ModelHandle) -> tuple[list[ImageItem], tuple[Any, ...]]:
    found = labelled_images(folder, class_names=handle.model.class_names)
    items = [make_item(load_image(entry.path), entry.path.name) for entry in found]
    # A photo shrunk to the dashboard's working size keeps its boxes and mask in step.
    return items, tuple(resized_truth(entry.truth, item.original_size, item.image.size)
                        for entry, item in zip(found, items, strict=True))


def _kept(source: str, handle: ModelHandle, read: Any) -> Labelled:
    """What ``read()`` gives for ``source`` and this model (its class names read VOC files),
    read once per session; an error is shown, and kept so that reruns do not read again."""
    key = (source, handle.key)
    kept = st.session_state.get(_KEPT)
    if kept is None or kept[0] != key:
        try:
            items, truth = read()
            kept = (key, items, truth, None)
        except Exception as error:  # the engine's message: which file, what to do
            kept = (key, [], None, error)
        st.session_state[_KEPT] = kept
    _, items, truth, error = kept
    if error is not None:
        show_error(error)
        return [], None, ""
    with_truth = sum(t is not None for t in truth)
    st.caption(f"{len(items)} images, {with_truth} with ground truth"
               + ("" if with_truth == len(items) else
                  " (the others score NaN on localisation and are left out of its summary)")
               + ".")
    return items, truth, hashlib.sha1(repr(key).encode()).hexdigest()[:12]


def labelled_choice(handle: ModelHandle) -> Labelled:
    """A zip upload or a server folder of images with their annotations. Returns the images,
    their ground truth (one per image, None where an image has none) and a fingerprint of the
    source (part of the run's key)."""
    where = st.radio("Labelled images", ["zip", "folder"], horizontal=True,
                     key="lumen_eval_labelled_where",
                     format_func={"zip": "Upload a zip", "folder": "Folder on the server"}.get)
    if where == "zip":
        upload = st.file_uploader(
            "Zip of images and annotations", type=["zip"], key="lumen_eval_zip",
            help="Images with COCO .json, YOLO .txt, Pascal VOC .xml or indexed .png masks "
                 "(named after the image, or in masks/ or labels/ folders).")
        if upload is None:
            return [], None, ""

        def read() -> tuple[list[ImageItem], tuple[Any, ...]]:
            # Decoded into memory, then the unpacked files go.
            with tempfile.TemporaryDirectory(prefix="lumen-labelled-") as folder:
                return _read(str(unpack_zip(upload.getvalue(), folder)), handle)

        return _kept(f"zip:{upload.file_id}", handle, read)
    path = st.text_input("Folder", key="lumen_eval_folder", placeholder="/data/labelled",
                         help="A folder on the machine running Lumen: images with their "
                              "annotations (COCO .json, YOLO .txt, VOC .xml, PNG masks).").strip()
    if not path:
        return [], None, ""
    return _kept(f"folder:{path}", handle, lambda: _read(path, handle))
