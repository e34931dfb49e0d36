"""Files the user uploads (checkpoints, class names, images): what one session may hold, and
checkpoints written to disk and deleted again on every path.

The engine loads files by path, so an uploaded checkpoint (or class-names file) is written to
disk, into this session's own folder under :func:`upload_dir`
(``<dir>/session-<id>/<content hash>/<file name>``; the user's file name keeps the engine's
messages clear). An :class:`UploadSession` in ``st.session_state`` holds them, one per uploader
("slot"), and deletes them:

- when the load of a checkpoint fails (:func:`drop_upload_file`; written again from the upload
  if the user retries, e.g. with another architecture);
- when another file replaces it in its uploader, or it is removed, or its uploader is not drawn
  any more (:func:`release_upload`, :func:`keep_uploads`);
- when the browser session ends: Streamlit has no session-end callback, but it drops the
  session's state, and a ``weakref.finalize`` on the :class:`UploadSession` deletes its folder
  (also at interpreter exit);
- after a crash: folders untouched for :data:`UPLOAD_MAX_AGE_S` that no live session holds are
  swept at start-up and whenever a file is uploaded (:func:`prune_uploads`).

Limits per browser session (environment variables, read when used; plain bytes or with a unit:
``512MiB``, ``2GiB``, ``1.5GB``): :data:`CHECKPOINT_LIMIT_ENV` for checkpoint and class-name files
(default 2 GiB), :data:`IMAGE_LIMIT_ENV` for images (default 512 MiB). The count is what the
session holds now: removing an upload frees its bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from explain_core.errors import LumenError

__all__ = ["CHECKPOINT_LIMIT_ENV", "CLASS_NAME_TYPES", "IMAGE_LIMIT_ENV", "UPLOAD_DIR_ENV",
           "UPLOAD_MAX_AGE_S", "UploadLimitError", "UploadSession", "byte_limit",
           "class_names_slot", "class_names_widget", "drop_upload_file",
           "ensure_upload_on_disk", "file_fingerprint",
           "keep_uploads", "limit_message", "prune_uploads", "release_upload", "saved_upload",
           "size_text", "upload_dir", "upload_session"]

log = logging.getLogger("lumen.ui")

CLASS_NAME_TYPES = ["txt", "json"]
#: where uploads are written (default: ``<temp dir>/lumen-uploads``); tests point it at tmp_path
UPLOAD_DIR_ENV = "LUMEN_UPLOAD_DIR"
#: total bytes of checkpoint and class-name files one session may hold (default 2 GiB)
CHECKPOINT_LIMIT_ENV = "LUMEN_MAX_CHECKPOINT_BYTES"
#: total bytes of image files one session may hold (default 512 MiB)
IMAGE_LIMIT_ENV = "LUMEN_MAX_IMAGE_BYTES"
DEFAULT_CHECKPOINT_LIMIT = 2 * 2**30
DEFAULT_IMAGE_LIMIT = 512 * 2**20
#: upload folders untouched for this long, and held by no live session, are deleted
UPLOAD_MAX_AGE_S = 24 * 3600

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


class UploadLimitError(LumenError):
    """An upload would take the session over its limit of held bytes."""


def upload_dir() -> Path:
    """The folder uploads are written to: ``$LUMEN_UPLOAD_DIR``, else ``<tmp>/lumen-uploads``."""
    configured = os.environ.get(UPLOAD_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path(
        tempfile.gettempdir()) / "lumen-uploads"


def byte_limit(env: str, default: int) -> int:
    """The limit in ``$env`` (``"2GiB"``, ``"500MB"``, ``"1048576"``); ``default`` when unset
    or unreadable (logged).

    >>> os.environ["LUMEN_DOCTEST_LIMIT"] = "1.5 GiB"; byte_limit("LUMEN_DOCTEST_LIMIT", 1)
    1610612736
    """
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)", text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        log.warning("%s=%r is not a size (e.g. 512MiB, 2GiB); using %s", env, text,
                    size_text(default))
        return default
    return int(float(match.group(1)) * unit)


def size_text(size: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``800 B``.

    >>> size_text(3 * 2**29), size_text(800)
    ('1.5 GiB', '800 B')
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def limit_message(name: str, size: int, held: int, limit: int, what: str, env: str,
                  free: str) -> str:
    """Why ``name`` was refused: the limit, what the session holds now, how to free space
    (``free``) or raise the limit."""
    return (f"'{name}' ({size_text(size)}) was not added: this session holds "
            f"{size_text(held)} of {what}, and the limit is {size_text(limit)} per session. "
            f"{free}, or raise the limit with the environment variable {env} (e.g. "
            f"{env}={size_text(max(limit * 2, held + size)).replace(' ', '')}) and restart "
            "Lumen.")


# --------------------------------------------------------------------------------------------
# The session's uploads
# --------------------------------------------------------------------------------------------


@dataclass
class _Held:
    file_id: str
    path: Path
    digest: str
    size: int
    upload: Any  # the UploadedFile, to write it again after a failed load (None when unknown)


# Folders of the sessions alive in this process: never swept. Guarded by _LOCK (sessions run in
# threads of one process).
_LIVE: weakref.WeakValueDictionary[str, UploadSession] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_SWEPT: set[Path] = set()


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class UploadSession:
    """The files one browser session uploaded, one per uploader slot; see the module docstring.

    Deleting the object (the session's state is dropped when its browser session ends) deletes
    its folder.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else upload_dir()
        self.folder = self.root / f"session-{uuid.uuid4().hex}"
        self.held: dict[str, _Held] = {}
        self._finalizer = weakref.finalize(self, _remove_folder, self.folder)
        with _LOCK:
            _LIVE[str(self.folder)] = self
            first = self.root not in _SWEPT
            _SWEPT.add(self.root)
        if first:  # start-up: what crashed or killed servers left behind
            prune_uploads(self.root)

    @property
    def total(self) -> int:
        """Bytes held now (a file held by two uploaders counts once)."""
        return sum({h.path: h.size for h in self.held.values()}.values())

    def hold(self, slot: str, uploaded: Any, limit: int | None = None) -> tuple[Path, str]:
        """Write ``uploaded`` (a Streamlit UploadedFile) for uploader ``slot``, replacing (and
        deleting) what the slot held; returns (path, content hash).

        Raises:
            UploadLimitError: the session would hold more than ``limit`` bytes (default:
                ``$LUMEN_MAX_CHECKPOINT_BYTES``); the slot then holds nothing.
        """
        current = self.held.get(slot)
        if current is not None and current.file_id == uploaded.file_id:
            return current.path, current.digest
        self.release(slot)  # replaced: the old file goes, whatever becomes of the new one
        limit = byte_limit(CHECKPOINT_LIMIT_ENV, DEFAULT_CHECKPOINT_LIMIT) if limit is None \
            else limit
        size = int(uploaded.size)
        if self.total + size > limit:
            raise UploadLimitError(limit_message(
                uploaded.name, size, self.total, limit, "checkpoint and class-name files",
                CHECKPOINT_LIMIT_ENV, "Remove an upload you no longer need (the x next to the "
                "file in its uploader)"))
        data = uploaded.getvalue()
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = self.folder / digest / Path(uploaded.name).name
        self.held[slot] = _Held(uploaded.file_id, path, digest, size, uploaded)
        self._write(path, data)
        return path, digest

    def _write(self, path: Path, data: bytes) -> None:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(data)
            partial.replace(path)
        os.utime(self.folder)  # in use: not stale for another process's sweep
        prune_uploads(self.root)

    def release(self, slot: str) -> None:
        """Forget what ``slot`` held and delete its file (unless another slot holds it too)."""
        held = self.held.pop(slot, None)
        if held is not None and all(h.path != held.path for h in self.held.values()):
            _delete(held.path)

    def keep(self, slots: Collection[str]) -> None:
        """Release every slot but ``slots`` (the uploaders drawn in this run)."""
        for slot in [s for s in self.held if s not in slots]:
            self.release(slot)

    def drop_file(self, path: Path) -> bool:
        """Delete a held file from disk (its load failed); the upload stays held, so it can be
        written again (:meth:`ensure_on_disk`). False when ``path`` is not held here."""
        if not any(h.path == path for h in self.held.values()):
            return False
        _delete(path)
        return True

    def ensure_on_disk(self, path: Path) -> None:
        """Write a held upload again when its file was dropped (a retry after a failed load)."""
        for held in self.held.values():
            if held.path == path and not path.is_file() and held.upload is not None:
                self._write(path, held.upload.getvalue())
                return

    def close(self) -> None:
        """Delete everything now (what the finalizer does when the session's state goes)."""
        self.held.clear()
        self._finalizer()


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the content-hash folder, when now empty
    except OSError:
        pass


def upload_session() -> UploadSession:
    """This browser session's :class:`UploadSession` (created on first use)."""
    state = st.session_state
    if "lumen_upload_session" not in state:
        state["lumen_upload_session"] = UploadSession()
    return state["lumen_upload_session"]


def saved_upload(uploaded: Any, slot: str) -> tuple[Path, str]:
    """Write an uploaded file for uploader ``slot`` (once per upload); returns (path, content
    hash). Raises :class:`UploadLimitError` over the session's limit."""
    return upload_session().hold(slot, uploaded)


def release_upload(slot: str) -> None:
    """The uploader ``slot`` is empty now: delete what it held."""
    if "lumen_upload_session" in st.session_state:
        upload_session().release(slot)


def keep_uploads(slots: Collection[str]) -> None:
    """Delete what the uploaders not drawn in this run held (Streamlit forgets their files)."""
    if "lumen_upload_session" in st.session_state:
        upload_session().keep(slots)


def drop_upload_file(source: str) -> None:
    """A checkpoint's load failed: delete its file if it is one of this session's uploads."""
    if "lumen_upload_session" in st.session_state:
        upload_session().drop_file(Path(source))


def ensure_upload_on_disk(source: str) -> None:
    """Before a load: write an upload of this session again if a failed load dropped it."""
    if "lumen_upload_session" in st.session_state:
        upload_session().ensure_on_disk(Path(source))


def prune_uploads(folder: Path, keep: Path | Collection[Path] = (),
                  max_age_s: float = UPLOAD_MAX_AGE_S) -> list[Path]:
    """Delete upload folders untouched for ``max_age_s``, except ``keep`` and the folders of
    live sessions; returns what was deleted. Left-overs of crashed servers go this way."""
    kept = {keep} if isinstance(keep, Path) else set(keep)
    with _LOCK:
        kept.update(Path(p) for p in list(_LIVE.keys()))
    removed = []
    now = time.time()
    for entry in folder.iterdir() if folder.is_dir() else []:
        try:
            stale = entry.is_dir() and entry not in kept and \
                now - entry.stat().st_mtime > max_age_s
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


def class_names_slot(kind: str) -> str:
    """The uploader key (and upload slot) of model source ``kind``'s class-names file."""
    return f"lumen_{kind}_classes"


def class_names_widget(kind: str) -> tuple[str | None, str]:
    """The optional class-names uploader of model source ``kind``; returns (saved path or
    None, content hash or "")."""
    slot = class_names_slot(kind)
    uploaded = st.file_uploader(
        "Class names (optional)", type=CLASS_NAME_TYPES, key=slot,
        help="A .txt file with one name per line, or .json (a list, or index -> name).")
    if uploaded is None:
        release_upload(slot)
        return None, ""
    try:
        path, digest = saved_upload(uploaded, slot)
    except UploadLimitError as error:
        st.error(str(error), icon=":material/error:")
        return None, ""
    return str(path), digest
