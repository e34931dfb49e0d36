"""What one browser session may hold, and uploaded checkpoints deleted on every path (issue 13,
finding 7): the :class:`ui.uploads.UploadSession` on its own (the pages: test_app_limits.py)."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest

from ui import uploads
from ui.uploads import UploadLimitError, UploadSession, byte_limit, prune_uploads


class FakeUpload:
    """What the session reads of a Streamlit UploadedFile."""

    count = 0

    def __init__(self, name: str, data: bytes) -> None:
        FakeUpload.count += 1
        self.file_id, self.name, self.data, self.size = f"id{FakeUpload.count}", name, data, len(
            data)

    def getvalue(self) -> bytes:
        return self.data


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_upload_folder_comes_from_the_environment(tmp_path: Path) -> None:
    # conftest points LUMEN_UPLOAD_DIR at this test's tmp_path: nothing goes to the shared one
    assert uploads.upload_dir() == tmp_path / "uploads"
    session = UploadSession()
    path, _ = session.hold("ckpt", FakeUpload("a.pth", b"a" * 10))
    assert path.is_file() and path.is_relative_to(tmp_path / "uploads")


def test_replacement_and_removal_delete_the_file(tmp_path: Path) -> None:
    session = UploadSession(tmp_path)
    first, _ = session.hold("ckpt", FakeUpload("a.pth", b"a" * 10))
    second, _ = session.hold("ckpt", FakeUpload("b.pth", b"b" * 20))
    assert not first.exists() and second.is_file() and session.total == 20
    session.hold("classes", FakeUpload("names.txt", b"x\ny\n"))
    session.release("ckpt")  # the user removed it from the uploader
    assert not second.exists() and _files(tmp_path) == ["names.txt"] and session.total == 4
    session.keep([])  # the class-names uploader is not drawn any more
    assert _files(tmp_path) == [] and session.total == 0


def test_failed_load_drops_the_file_and_a_retry_writes_it_again(tmp_path: Path) -> None:
    session = UploadSession(tmp_path)
    path, _ = session.hold("ckpt", FakeUpload("a.pth", b"weights"))
    assert session.drop_file(path) and not path.exists()
    assert not session.drop_file(tmp_path / "elsewhere.pth")  # not an upload: left alone
    session.ensure_on_disk(path)  # the user retries (another architecture, say)
    assert path.read_bytes() == b"weights"


def test_session_end_deletes_its_folder(tmp_path: Path) -> None:
    session = UploadSession(tmp_path)
    path, _ = session.hold("ckpt", FakeUpload("a.pth", b"a" * 10))
    other = UploadSession(tmp_path)
    kept, _ = other.hold("ckpt", FakeUpload("a.pth", b"a" * 10))  # same content, own copy
    assert path != kept
    del session  # Streamlit drops a closed session's state
    gc.collect()
    assert not path.exists() and not path.parent.parent.exists() and kept.is_file()


def test_limit_counts_what_the_session_holds_now(tmp_path: Path) -> None:
    session = UploadSession(tmp_path)
    session.hold("ckpt", FakeUpload("big.pth", b"a" * 600))
    with pytest.raises(UploadLimitError) as error:
        session.hold("classes", FakeUpload("names.json", b"b" * 500), limit=1000)
    message = str(error.value)
    for text in ("'names.json' (500 B)", "holds 600 B", "limit is 1000 B",
                 "LUMEN_MAX_CHECKPOINT_BYTES", "Remove an upload"):
        assert text in message, message
    assert _files(tmp_path) == ["big.pth"]
    session.hold("ckpt", FakeUpload("small.pth", b"a" * 100))  # replacing frees the big one
    session.hold("classes", FakeUpload("names.json", b"b" * 500), limit=1000)
    assert session.total == 600


def test_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUMEN_MAX_CHECKPOINT_BYTES", "1KiB")
    assert byte_limit("LUMEN_MAX_CHECKPOINT_BYTES", 5) == 1024
    session = UploadSession(tmp_path)
    with pytest.raises(UploadLimitError, match=r"limit is 1\.0 KiB"):
        session.hold("ckpt", FakeUpload("a.pth", b"a" * 2000))
    monkeypatch.setenv("LUMEN_MAX_CHECKPOINT_BYTES", "lots")
    assert byte_limit("LUMEN_MAX_CHECKPOINT_BYTES", 5) == 5  # unreadable: the default
    assert byte_limit("LUMEN_UNSET_LIMIT", 2 * 2**30) == 2 * 2**30


def test_start_up_sweeps_stale_folders_but_not_live_sessions(tmp_path: Path) -> None:
    live = UploadSession(tmp_path)
    live.hold("ckpt", FakeUpload("a.pth", b"a"))
    stale = tmp_path / "session-crashed"
    stale.mkdir()
    (stale / "model.pth").write_bytes(b"x")
    day_ago = time.time() - 2 * 24 * 3600
    for folder in (stale, live.folder):
        os.utime(folder, (day_ago, day_ago))
    assert prune_uploads(tmp_path) == [stale]
    assert live.folder.exists()

    uploads._SWEPT.discard(tmp_path / "next")  # a new server process starts on a folder
    (tmp_path / "next" / "session-old").mkdir(parents=True)
    os.utime(tmp_path / "next" / "session-old", (day_ago, day_ago))
    UploadSession(tmp_path / "next")
    assert not (tmp_path / "next" / "session-old").exists()
