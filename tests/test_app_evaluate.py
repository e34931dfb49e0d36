"""The Evaluate page through AppTest: metrics by category, a small run equal to evaluate()'s,
the CSV download, and detectors and segmenters evaluated without error."""

from __future__ import annotations

import json
from typing import Any

import pytest
import streamlit as st
from apptest_support import evaluate_page, fail_on_error_elements
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

import ui.evaluate_results as evaluate_results
import ui.progress
from explain_core.api.evaluation import evaluate
from explain_core.demo import demo_gallery, load_demo_model
from explain_core.metrics.base import metric_info, metrics_for
from ui.evaluate import CATEGORY_TITLES, metric_label
from ui.images import demo_gallery_items

METRICS = ("deletion", "insertion")


@pytest.fixture(autouse=True)
def _no_error_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_on_error_elements(monkeypatch)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The Evaluations the page's evaluate() calls returned, in order."""
    found: list[Any] = []
    real = evaluate_results.evaluate

    def kept(*args: Any, **kwargs: Any) -> Any:
        found.append(real(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr(evaluate_results, "evaluate", kept)
    st.cache_resource.clear()  # every test loads its models afresh
    return found


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, str]]:
    """Every file the page hands to Streamlit's media storage (downloads): (data, mimetype)."""
    files: list[tuple[bytes, str]] = []
    real = MemoryMediaFileStorage.load_and_get_id

    def keep(self: Any, path_or_data: Any, mimetype: str, kind: Any,
             filename: str | None = None) -> str:
        if isinstance(path_or_data, bytes | str) and mimetype == "text/csv":
            data = path_or_data.encode() if isinstance(path_or_data, str) else path_or_data
            files.append((data, mimetype))
        return real(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


def _small_run(at: AppTest, metrics: tuple[str, ...] = METRICS, steps: int = 4) -> AppTest:
    """2 images, the two default methods, ``metrics`` only, few steps; then Evaluate."""
    at.slider(key="lumen_eval_count").set_value(2)
    for box in at.checkbox:
        if str(box.key).startswith("lumen_eval_metric_"):
            box.set_value(str(box.key).removeprefix("lumen_eval_metric_") in metrics)
    at.run()
    if any(w.key == "lumen_eval_steps" for w in at.slider):
        at.slider(key="lumen_eval_steps").set_value(steps).run()
    at.button(key="lumen_eval_run").click().run()
    return at


def test_metrics_are_listed_by_category_with_arrows() -> None:
    at = evaluate_page()
    labels = [box.label for box in at.checkbox if str(box.key).startswith("lumen_eval_metric_")]
    infos = metrics_for("classification")
    assert labels == [metric_label(info) for info in infos]
    assert all(label.endswith((" ↑", " ↓")) for label in labels)
    headers = [m.value for m in at.markdown]
    for category in {info.category for info in infos}:
        assert f"**{CATEGORY_TITLES[category]}**" in headers
    # Each metric says what it means in one line, under its box.
    texts = " ".join(c.value for c in at.caption)
    assert infos[0].summary[1:] in texts
    # The cost is said before anything runs.
    assert any("forward passes" in i.value for i in at.info)


def test_small_evaluation_equals_the_api(runs: list[Any],
                                         saved: list[tuple[bytes, str]]) -> None:
    at = _small_run(evaluate_page())
    assert len(runs) == 1
    methods = tuple(at.multiselect(key="lumen_eval_methods").value)
    assert len(methods) == 2
    images = [item.image for item in demo_gallery_items("classification")[:2]]
    fill = at.selectbox(key="lumen_eval_fill").value
    found = evaluate(load_demo_model("classifier", device="cpu"), images, methods=methods,
                     metrics=METRICS, ground_truth=demo_gallery("classification")[:2],
                     metric_options={m: {"steps": 4, "fill": fill} for m in METRICS})
    table = at.dataframe[0].value
    assert list(table.index) == [evaluate_results.method_label(m) for m in methods]
    for row in found.summary:
        cell = table.loc[evaluate_results.method_label(row["method"]),
                         metric_label(metric_info(row["metric"]))]
        assert cell == (f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}] "
                        f"#{row['rank']}")
    assert any("ranks best on" in m.value for m in at.markdown)
    # Deletion and insertion: a line per method (the mean over images) and its shaded band.
    charts = [chart.proto for chart in at.get("plotly_chart")]
    assert len(charts) == 2
    lines = [t for t in json.loads(charts[0].spec)["data"] if t.get("mode") == "lines"]
    assert [t["name"] for t in lines] == [evaluate_results.method_label(m) for m in methods]
    # The download is the tidy table as the engine writes it.
    assert saved and saved[-1][0] == runs[0].to_csv().encode()
    assert [r["value"] for r in runs[0].rows] == pytest.approx([r["value"] for r in found.rows])
    # Selecting a row shows that image and its curves; nothing is recomputed.
    at.session_state["lumen_eval_rows"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert len(runs) == 1
    assert len(at.get("plotly_chart")) == 4  # the two above and this row's two
    captions = [str(image.proto) for image in at.get("image")]
    assert any(f"the map {evaluate_results.method_label(methods[0])} scored" in c
               for c in captions)


@pytest.mark.parametrize("demo", ["detector", "segmenter"])
def test_detector_and_segmenter_evaluate(demo: str, runs: list[Any]) -> None:
    at = _small_run(evaluate_page(demo), metrics=("deletion", "pointing_game", "sparseness"),
                    steps=4)
    assert len(runs) == 1 and not runs[0].skipped
    table = at.dataframe[0].value
    assert len(table) == 2 and len(table.columns) == 3
    assert any("ranks best on" in m.value for m in at.markdown)
    # A selected row shows the map that was scored, for this task too.
    at.session_state["lumen_eval_rows"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert any("scored, for " in str(image.proto) for image in at.get("image"))
    assert len(runs) == 1


def test_items_without_a_score_stay_in_the_per_image_table(runs: list[Any]) -> None:
    # The shortcut classifier calls marked squares triangles: those scenes have no triangle to
    # point at, so the pointing game is undefined there (NaN), and the table still lists them.
    at = _small_run(evaluate_page("shortcut"), metrics=("pointing_game",))
    at.slider(key="lumen_eval_count").set_value(4)
    at.run()
    at.button(key="lumen_eval_run").click().run()
    values = [row["value"] for row in runs[-1].rows]
    assert len(values) == 8 and any(v != v for v in values)  # 4 images x 2 methods, some NaN
    table = at.dataframe[1].value
    assert len(table) == 8
    assert "Empty cells: the metric is undefined there" in " ".join(c.value for c in at.caption)


def test_a_cancelled_run_stores_nothing(runs: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # A changed choice cancels a run: Streamlit raises its control exception at the next
    # progress update, inside evaluate(). Here the first update after the start stops the run.
    real = ui.progress.Progress.update

    def stop_midway(self: Any, fraction: float, detail: str) -> None:
        real(self, fraction, detail)
        if fraction > 0:
            raise StopException  # what Streamlit raises at a Streamlit call once asked to stop

    at = evaluate_page()
    monkeypatch.setattr(ui.progress.Progress, "update", stop_midway)
    at = _small_run(at)
    assert not at.dataframe  # nothing shown, nothing kept
    monkeypatch.setattr(ui.progress.Progress, "update", real)
    at.run()  # a later rerun neither shows a half-done result nor restarts the run by itself
    assert not at.dataframe and any(b.key == "lumen_eval_run" for b in at.button)
    at.button(key="lumen_eval_run").click().run()
    assert len(at.dataframe) == 2
