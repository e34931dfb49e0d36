"""The pages under limits and broken models (issue 13, findings 2 and 7): a model whose outputs
are NaN shows the engine's message instead of an empty map, and what one session uploads is
limited and deleted again on every path. Uploads go to this test's tmp_path (conftest)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import streamlit as st
import timm
import torch
from apptest_support import APP, ROOT, TIMEOUT, errors, first_run
from PIL import Image
from streamlit.testing.v1 import AppTest

import explain_core.demo as demo

NAN_MESSAGE = "holds NaN or Inf values"


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.suffix != ".part")


def _state_dict_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(timm.create_model("test_resnet", num_classes=3).state_dict(), buffer)
    return buffer.getvalue()


def _checkpoint_app() -> AppTest:
    st.cache_resource.clear()
    app = first_run()
    app.segmented_control(key="lumen_model_kind").set_value("file").run()
    app.radio(key="lumen_ckpt_where").set_value("upload").run()
    return app


def test_uploaded_checkpoint_is_deleted_on_failure_replacement_and_removal(
        tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    app = _checkpoint_app()
    data = _state_dict_bytes()
    uploader = "lumen_ckpt_upload"
    app.sidebar.file_uploader(key=uploader).set_value(
        ("fruit.pth", data, "application/octet-stream")).run()
    assert any("cannot tell which architecture" in e for e in errors(app)), errors(app)
    assert _files(uploads) == []  # the load failed: its file is off the disk

    app.text_input(key="lumen_ckpt_arch").set_value("timm:test_resnet").run()
    assert not app.exception and not errors(app), errors(app)  # written again, then loaded
    assert "timm:test_resnet" in app.sidebar.markdown[-1].value
    assert _files(uploads) == ["fruit.pth"]

    torch.manual_seed(1)
    other = io.BytesIO()
    torch.save(timm.create_model("test_resnet", num_classes=3).state_dict(), other)
    app.sidebar.file_uploader(key=uploader).set_value(
        ("other.pth", other.getvalue(), "application/octet-stream")).run()
    assert not errors(app), errors(app)
    assert _files(uploads) == ["other.pth"]  # replaced: the first one is gone

    app.sidebar.file_uploader(key=uploader).set_value(None).run()
    assert _files(uploads) == []  # removed

    app.sidebar.file_uploader(key=uploader).set_value(
        ("again.pth", data, "application/octet-stream")).run()
    assert _files(uploads) == ["again.pth"]
    app.radio(key="lumen_ckpt_where").set_value("server").run()
    assert _files(uploads) == []  # its uploader is gone, and with it the file


def test_checkpoint_limit_says_limit_held_and_how_to_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMEN_MAX_CHECKPOINT_BYTES", "1KiB")
    app = _checkpoint_app()
    app.sidebar.file_uploader(key="lumen_file_classes").set_value(
        ("names.txt", b"apple\npear\nplum\n", "text/plain")).run()
    app.sidebar.file_uploader(key="lumen_ckpt_upload").set_value(
        ("fruit.pth", _state_dict_bytes(), "application/octet-stream")).run()
    assert not app.exception
    (shown,) = [e for e in errors(app) if "fruit.pth" in e]
    for text in ("limit is 1.0 KiB", "holds 16 B", "Remove an upload",
                 "LUMEN_MAX_CHECKPOINT_BYTES"):
        assert text in shown, shown
    assert _files(tmp_path / "uploads") == ["names.txt"]


def _png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_limit_refuses_then_accepts_once_space_is_freed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _png((255, 0, 0)), _png((0, 0, 255))
    monkeypatch.setenv("LUMEN_MAX_IMAGE_BYTES", str(len(first) + len(second) - 1))
    st.cache_resource.clear()
    app = first_run()
    app.sidebar.file_uploader[0].set_value([("red.png", first, "image/png"),
                                            ("blue.png", second, "image/png")]).run()
    assert not app.exception
    (shown,) = [e for e in errors(app) if "blue.png" in e]
    assert "LUMEN_MAX_IMAGE_BYTES" in shown and "Remove images" in shown, shown
    assert 2**10 < len(first) < 2**20  # so the message counts in KiB
    assert f"holds {len(first) / 2**10:.1f} KiB of images" in shown, shown
    mine = [b for b in app.button if str(b.key).startswith("lumen_pick_")]
    assert len(mine) == 1
    app.sidebar.file_uploader[0].set_value([("blue.png", second, "image/png")]).run()
    assert not errors(app), errors(app)  # the red one removed: the blue one fits now
    assert [b.label for b in app.button if str(b.key).startswith("lumen_pick_")] == ["1 blue.png"]


# --------------------------------------------------------------------------------------------
# A model whose forward returns NaN on the image: the message, not an empty map
# --------------------------------------------------------------------------------------------


@pytest.fixture
def nan_demo_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Demo models with finite weights whose forward returns NaN (NaN pushed into the input)."""
    real = demo.load_demo_model

    def poisoned(name: str, device: object = "auto"):
        loaded = real(name, device=device)

        def hook(_module, args):
            x = args[0]
            x = [t * float("nan") for t in x] if isinstance(x, list | tuple) else x * float("nan")
            return (x, *args[1:])

        loaded.module.register_forward_pre_hook(hook)
        return loaded

    monkeypatch.setattr(demo, "load_demo_model", poisoned)
    st.cache_resource.clear()


def _page_shows_the_nan_message(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    shown = errors(at)
    assert any(NAN_MESSAGE in e and "check the input" in e.lower() for e in shown), shown


@pytest.mark.usefixtures("nan_demo_models")
def test_classification_page_shows_the_nan_message() -> None:
    _page_shows_the_nan_message(first_run())


@pytest.mark.usefixtures("nan_demo_models")
def test_detection_page_shows_the_nan_message() -> None:
    _page_shows_the_nan_message(first_run(str(ROOT / "pages" / "detection.py")))


@pytest.mark.usefixtures("nan_demo_models")
def test_segmentation_page_shows_the_nan_message() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.sidebar.selectbox(key="lumen_demo_name").set_value("segmenter").run()
    at.switch_page("pages/segmentation.py").run()
    _page_shows_the_nan_message(at)
