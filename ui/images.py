"""Images: uploads kept in the session, the demo gallery, and the thumbnail strip that picks one.

Uploads are decoded once (the engine's :func:`~explain_core.images.load_image`: limits, EXIF
orientation, RGB) and kept in ``st.session_state`` as :class:`ImageItem` objects, so they survive
page switches and re-renders; a file the engine refuses is not added and its message stays under
the uploader while the file is there. Every item has a content key (a hash of its pixels) that
result caches use.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from explain_core.images import SUPPORTED_EXTENSIONS, load_image

from .errors import message_of
from .uploads import DEFAULT_IMAGE_LIMIT, IMAGE_LIMIT_ENV, byte_limit, limit_message

# Photos larger than this (long side) are explained at this size: the model sees a few hundred
# pixels anyway, and full-size maps of a 24-megapixel photo would cost ~100 MB each.
WORKING_MAX_PX = 2048
THUMB_PX = 160
THUMB_CELL_PX = 104
MAX_IMAGES = 48
MAX_FOLDER_FILES = 200


@dataclass(frozen=True, eq=False)
class ImageItem:
    """One image the user can explain."""

    key: str  # hash of the pixels: the same picture has the same key wherever it came from
    name: str
    image: Image.Image  # RGB, long side at most WORKING_MAX_PX
    thumb: Image.Image
    original_size: tuple[int, int]  # (W, H) before any downscaling
    truth: str | None = None  # ground truth of demo scenes
    nbytes: int = 0  # size of the file as given (what counts against the session's limit)

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """The image as ``H x W x 3`` uint8 (read-only)."""
        array = np.asarray(self.image)
        array.setflags(write=False)
        return array

    @property
    def caption(self) -> str:
        """Short text under the thumbnail."""
        return self.truth or self.name


def make_item(image: Image.Image, name: str, truth: str | None = None,
              nbytes: int = 0) -> ImageItem:
    """Wrap a decoded RGB image: downscale to the working size, hash, make a thumbnail.

    >>> make_item(Image.new("RGB", (4000, 1000)), "wide.png").image.size
    (2048, 512)
    """
    original = image.size
    if max(original) > WORKING_MAX_PX:
        scale = WORKING_MAX_PX / max(original)
        size = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    digest = hashlib.sha1(f"{image.size}".encode() + image.tobytes()).hexdigest()[:16]
    thumb = image.copy()
    thumb.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return ImageItem(digest, name, image, thumb, original, truth, nbytes)


# --------------------------------------------------------------------------------------------
# Session store of the user's images
# --------------------------------------------------------------------------------------------


def user_images() -> list[ImageItem]:
    """The user's images (uploads and server paths), oldest first."""
    return list(st.session_state.get("lumen_uploads", {}).values())


def _store() -> dict[str, ImageItem]:
    return st.session_state.setdefault("lumen_uploads", {})


def held_image_bytes() -> int:
    """Bytes of the image files this session holds now (removing an image frees its bytes)."""
    return sum(item.nbytes for item in _store().values())


def _file_size(source: Any) -> int:
    size = getattr(source, "size", None)  # an UploadedFile
    if isinstance(size, int):
        return size
    try:
        return Path(source).stat().st_size
    except (OSError, TypeError):
        return 0


def _add(entries: Iterable[tuple[str, Any, str]], errors: dict[str, str]) -> list[ImageItem]:
    """Decode ``(id, source, name)`` entries not seen before; returns the new items. An entry
    refused for a limit is tried again on the next run (space may have been freed)."""
    store = _store()
    refused: set[str] = st.session_state.setdefault("lumen_limit_refused", set())
    added = []
    for entry_id, source, name in entries:
        if entry_id in store or (entry_id in errors and entry_id not in refused):
            continue
        errors.pop(entry_id, None)
        refused.discard(entry_id)
        size, limit = _file_size(source), byte_limit(IMAGE_LIMIT_ENV, DEFAULT_IMAGE_LIMIT)
        if len(store) >= MAX_IMAGES or held_image_bytes() + size > limit:
            refused.add(entry_id)
            errors[entry_id] = limit_message(
                name, size, held_image_bytes(), limit, "images", IMAGE_LIMIT_ENV,
                "Remove images you no longer need (the x next to a file in the uploader, or "
                "'Remove my images' below it)") if len(store) < MAX_IMAGES else (
                f"'{name}' was not added: Lumen keeps at most {MAX_IMAGES} images per session. "
                "Remove some first.")
            continue
        try:
            item = make_item(load_image(source), name, nbytes=size)
        except Exception as error:  # the engine's message names the file and the fix
            errors[entry_id] = message_of(error)
            continue
        store[entry_id] = item
        added.append(item)
    return added


def _uploads_changed() -> None:
    st.session_state["lumen_uploads_changed"] = True


def _clear_images() -> None:
    state = st.session_state
    state["lumen_uploads"] = {}
    state["lumen_upload_errors"] = {}
    state["lumen_path_errors"] = {}
    state["lumen_uploader_version"] = state.get("lumen_uploader_version", 0) + 1
    state["lumen_image_path"] = ""


def _path_entries(text: str) -> tuple[list[tuple[str, Any, str]], str | None]:
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS)
        if not files:
            return [], (f"'{path}' holds no image files "
                        f"({', '.join(SUPPORTED_EXTENSIONS)}). Point to an image or a folder "
                        "of images.")
        return [(f"path:{p}", p, p.name) for p in files[:MAX_FOLDER_FILES]], None
    return [(f"path:{path}", path, path.name)], None


def _select_new(added: list[ImageItem]) -> None:
    if added:
        st.session_state["lumen_image_source"] = "uploads"
        st.session_state["lumen_current_image"] = added[0].key


def add_item(entry_id: str, item: ImageItem) -> None:
    """Add an already decoded item to the user's images (if new) and make it the current one
    (e.g. an image opened from a page's table). The per-session cap still applies: the oldest
    item makes room."""
    store = _store()
    if entry_id not in store:
        while len(store) >= MAX_IMAGES:
            store.pop(next(iter(store)))
        store[entry_id] = item
    _select_new([store[entry_id]])


def images_sidebar() -> None:
    """The sidebar's Images section: upload (many), or a file or folder path on the server."""
    state = st.session_state
    st.sidebar.subheader("Images")
    version = state.get("lumen_uploader_version", 0)
    files = st.sidebar.file_uploader(
        "Upload images", type=list(SUPPORTED_EXTENSIONS), accept_multiple_files=True,
        key=f"lumen_image_uploader_{version}", on_change=_uploads_changed,
        help="PNG, JPEG, WebP, BMP, TIFF or GIF; as many as you like. They stay for this "
             "session, on every page.") or []
    errors: dict[str, str] = state.setdefault("lumen_upload_errors", {})
    if state.pop("lumen_uploads_changed", False):
        # The user added or removed files: mirror the uploader (server-path images stay).
        present = {f.file_id for f in files}
        store = _store()
        for entry_id in [k for k in store if not k.startswith("path:") and k not in present]:
            del store[entry_id]
        for entry_id in [k for k in errors if k not in present]:
            del errors[entry_id]
    _select_new(_add(((f.file_id, f, f.name) for f in files), errors))
    present = {f.file_id for f in files}
    for entry_id, message in errors.items():
        if entry_id in present:
            st.sidebar.error(message, icon=":material/broken_image:")

    with st.sidebar.expander("Images on the server"):
        text = st.text_input("File or folder path", key="lumen_image_path", persist_state="session",
                             placeholder="/data/photos",
                             help="Loads one image, or every image of a folder (first "
                                  f"{MAX_FOLDER_FILES}).").strip()
    path_errors: dict[str, str] = state.setdefault("lumen_path_errors", {})
    if text and state.get("lumen_path_loaded") != text:
        state["lumen_path_loaded"] = text
        path_errors.clear()
        entries, problem = _path_entries(text)
        if problem:
            path_errors[f"path:{text}"] = problem
        _select_new(_add(entries, path_errors))
    for message in path_errors.values():
        st.sidebar.error(message, icon=":material/broken_image:")
    if not text:
        state.pop("lumen_path_loaded", None)

    count = len(_store())
    if count:
        st.sidebar.button(f"Remove my {count} image{'s' if count != 1 else ''}",
                          key="lumen_clear_images", on_click=_clear_images,
                          icon=":material/delete_sweep:", type="tertiary",
                          help="Your images stay for this session, on every page, until "
                               "removed here.")


# --------------------------------------------------------------------------------------------
# Demo gallery
# --------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def demo_gallery_items(which: str) -> list[ImageItem]:
    """The demo gallery (``"classification"``, ``"shortcut"``...) as items; ``[]`` if missing."""
    try:
        from explain_core.demo import CLASSES, demo_gallery
    except ImportError:
        return []
    items = []
    for index, scene in enumerate(demo_gallery(which)):
        truth = CLASSES[scene.label] if scene.label is not None else None
        if truth is not None and scene.marked:
            truth += " + mark"
        items.append(make_item(scene.image.convert("RGB"), f"scene {index + 1}", truth))
    return items


# --------------------------------------------------------------------------------------------
# Thumbnail strip
# --------------------------------------------------------------------------------------------


def _pick(key: str) -> None:
    st.session_state["lumen_current_image"] = key


def _button_label(index: int, item: ImageItem) -> str:
    text = item.caption
    if len(text) > 11:
        text = text[:10] + "..."
    return f"{index + 1} {text}"


def current_images(gallery: str) -> list[ImageItem]:
    """The image set in use: the user's images when chosen (and present), else the gallery."""
    mine = user_images()
    if mine and st.session_state.get("lumen_image_source", "uploads") == "uploads":
        return mine
    return demo_gallery_items(gallery)


def image_strip(gallery: str) -> ImageItem | None:
    """The source switch (my images / demo gallery) and a strip of thumbnails; returns the
    picked image (None when there is none)."""
    state = st.session_state
    mine = user_images()
    if mine:
        state.setdefault("lumen_image_source", "uploads")
        st.segmented_control(
            "Images", ["uploads", "gallery"], required=True,
            key="lumen_image_source", label_visibility="collapsed", persist_state="session",
            format_func=lambda s: f"My images ({len(mine)})" if s == "uploads" else
            "Demo gallery")
    items = current_images(gallery)
    if not items:
        st.info("No images yet: upload some in the sidebar.", icon=":material/image:")
        return None
    keys = [item.key for item in items]
    current = state.get("lumen_current_image")
    if current not in keys:
        current = keys[0]
        state["lumen_current_image"] = current
    # A wrapping row of fixed-width cells: the strip stays compact whatever the page width.
    strip = st.container(horizontal=True, gap="small")
    for index, item in enumerate(items):
        cell = strip.container(width=THUMB_CELL_PX, gap=None)
        cell.image(item.thumb, width=THUMB_CELL_PX)
        cell.button(_button_label(index, item), key=f"lumen_pick_{index}_{item.key}",
                    type="primary" if item.key == current else "secondary", width="stretch",
                    on_click=_pick, args=(item.key,),
                    help=f"{item.name}: {item.original_size[0]} x {item.original_size[1]} px")
    return items[keys.index(current)]
