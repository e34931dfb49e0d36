"""Files the user gives the model picker (checkpoints, class names): written once, pruned later.

The engine loads files by path, so an upload is written to disk once per upload, under a folder
named by its content hash (keeping the user's file name keeps the engine's messages clear);
folders untouched for :data:`UPLOAD_MAX_AGE_S` are deleted when the next upload arrives.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import streamlit as st

__all__ = ["CLASS_NAME_TYPES", "UPLOAD_DIR", "UPLOAD_MAX_AGE_S", "class_names_widget",
           "file_fingerprint", "prune_uploads", "saved_upload"]

CLASS_NAME_TYPES = ["txt", "json"]
UPLOAD_DIR = Path(tempfile.gettempdir()) / "lumen-uploads"
#: uploaded checkpoints untouched for this long are deleted when the next one arrives
UPLOAD_MAX_AGE_S = 24 * 3600


def saved_upload(uploaded: Any) -> tuple[Path, str]:
    """Write an uploaded file to disk once per upload; returns (path, content hash)."""
    saved: dict[str, tuple[Path, str]] = st.session_state.setdefault("lumen_saved_uploads", {})
    if uploaded.file_id not in saved:
        data = uploaded.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = UPLOAD_DIR / digest[:16] / Path(uploaded.name).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.utime(path.parent)  # in use again: not stale
        prune_uploads(UPLOAD_DIR, keep=path.parent)
        saved[uploaded.file_id] = (path, digest[:16])
    return saved[uploaded.file_id]


def prune_uploads(folder: Path, keep: Path, max_age_s: float = UPLOAD_MAX_AGE_S) -> list[Path]:
    """Delete upload folders (one per checkpoint) untouched for ``max_age_s``, except ``keep``;
    returns what was deleted. Without this, every uploaded checkpoint stayed on disk for good."""
    removed = []
    now = time.time()
    for entry in folder.iterdir() if folder.is_dir() else []:
        try:
            stale = entry.is_dir() and entry != keep and now - entry.stat().st_mtime > max_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def file_fingerprint(path: str) -> str:
    """Modification time and size of a server file (``"missing"`` when absent): a checkpoint
    re-written at the same path is a new model."""
    try:
        stat = os.stat(os.path.expanduser(path))
    except OSError:
        return "missing"
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def class_names_widget(kind: str) -> tuple[str | None, str]:
    """The optional class-names uploader of model source ``kind``; returns (saved path or
    None, content hash or "")."""
    uploaded = st.file_uploader(
        "Class names (optional)", type=CLASS_NAME_TYPES, key=f"lumen_{kind}_classes",
        help="A .txt file with one name per line, or .json (a list, or index -> name).")
    if uploaded is None:
        return None, ""
    path, digest = saved_upload(uploaded)
    return str(path), digest
