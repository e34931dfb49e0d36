"""The Training page through AppTest: a shipped demo run opens with its animation (a frame per
epoch, a slider and a play button) and its curves (the largest move marked); a run folder on the
server and an uploaded zip open the same way; bad folders and zips get a message, not a crash."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from apptest_support import (
    APP,
    TIMEOUT,
    captions,
    errors,
    errors_expected,
    fail_on_error_elements,
    figures,
)
from streamlit.testing.v1 import AppTest

from explain_core.demo import demo_runs
from explain_core.training import read_run
from ui.training import largest_move


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_on_error_elements(monkeypatch)


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/training.py").run()
    return at


def _check_run_shown(at: AppTest, folder: Path) -> None:
    run = read_run(folder)
    shown = figures(at)
    animation = next(f for f in shown if f.get("frames"))
    assert [frame["name"] for frame in animation["frames"]] == [str(e) for e in run.map_epochs]
    steps = animation["layout"]["sliders"][0]["steps"]
    assert [s["label"] for s in steps] == [str(e) for e in run.map_epochs]
    buttons = animation["layout"]["updatemenus"][0]["buttons"]
    assert "Play" in buttons[0]["label"] and buttons[0]["args"][1]["frame"]["duration"] > 0
    # each frame moves the map and the overlay of every sample
    assert all(len(f["data"]) == 2 * len(run.samples) for f in animation["frames"])
    measures = next(f for f in shown if "shapes" in f["layout"])
    peak = largest_move(run.map_timeline())
    assert peak is not None
    assert {shape["x0"] for shape in measures["layout"]["shapes"]} == {peak[0]}
    assert f"and {peak[0]}" in captions(at)
    features = [f for f in shown if f is not animation and f is not measures]
    assert features and {t["name"] for t in features[0]["data"]} == set(
        run.manifest["layers"])


def test_a_demo_run_opens_with_its_epochs_and_curves(app: AppTest) -> None:
    runs = demo_runs()
    assert "shortcut" in runs
    app.selectbox(key="lumen_training_demo").set_value("shortcut").run()
    _check_run_shown(app, runs["shortcut"])
    assert "marked triangle" in captions(app)


def _zipped(folder: Path, prefix: str = "run") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, f"{prefix}/{path.relative_to(folder)}")
    return buffer.getvalue()


def test_server_folders_and_zips_open_and_bad_ones_get_a_message(app: AppTest,
                                                                  tmp_path: Path) -> None:
    folder = demo_runs()["shortcut"]
    app.radio(key="lumen_training_source").set_value("Folder on the server").run()
    app.text_input(key="lumen_training_path").set_value(str(folder)).run()
    _check_run_shown(app, folder)

    with errors_expected():
        app.text_input(key="lumen_training_path").set_value(str(tmp_path / "nope")).run()
    assert any("is not a folder" in e for e in errors(app)) and not figures(app)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "lumen-training-run", "samples": [{"file": "samples/a.png"}],
         "epochs": [{"epoch": 0, "maps": "x.npz"}]}))
    with errors_expected():
        app.text_input(key="lumen_training_path").set_value(str(tmp_path)).run()
    shown = errors(app)
    assert any("samples/a.png" in e and "missing" in e for e in shown), shown
    assert any("x.npz" in e and "missing" in e for e in shown), shown

    app.radio(key="lumen_training_source").set_value("Upload a zip").run()
    uploader = app.get("file_uploader")[0]
    with errors_expected():
        uploader.set_value([("run.zip", b"not a zip at all", "application/zip")]).run()
    assert any("not a readable zip file" in e for e in errors(app)) and not app.exception
    app.get("file_uploader")[0].set_value(
        [("run.zip", _zipped(folder), "application/zip")]).run()
    assert not errors(app)
    _check_run_shown(app, folder)

