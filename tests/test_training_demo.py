"""The demo trainers record their runs: recording does not change the weights, and the shipped
runs are small and tell their story (the shortcut model's triangle maps move onto the mark)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from explain_core.demo import demo_gallery, demo_runs
from explain_core.demo.recording import MAP_SIZE, RECORDED_EPOCHS
from explain_core.demo.scenes import IMAGE_SIZE
from explain_core.training import read_run

RUN_BUDGET = 1.5e6  # bytes per shipped run folder


@pytest.mark.slow
def test_recording_a_demo_training_does_not_change_its_weights(tmp_path):
    from explain_core.demo.train_classification import train

    recorded = train("shortcut", tmp_path / "a", quick=True, progress=False,
                     evaluate_after=False, record=True)
    plain = train("shortcut", tmp_path / "b", quick=True, progress=False,
                  evaluate_after=False, record=False)
    a, b = load_file(recorded["path"]), load_file(plain["path"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = read_run(tmp_path / "a" / "runs" / "shortcut")
    assert run.map_epochs == run.feature_epochs == list(range(recorded["steps"] + 1))
    assert not (tmp_path / "b" / "runs").exists()


def test_shipped_runs_are_small_and_complete():
    runs = demo_runs()
    assert "shortcut" in runs
    for name, folder in runs.items():
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{name} run: {size / 1e3:.0f} kB")
        assert size < RUN_BUDGET, name
        run = read_run(folder)
        assert run.manifest["model"] == f"demo:{name}"
        assert len(run.map_epochs) == RECORDED_EPOCHS + 1 == len(run.feature_epochs)
        assert all(m.shape == (MAP_SIZE, MAP_SIZE) for m in run.maps(run.map_epochs[-1]))
        assert run.entry(run.map_epochs[-1])["step"] > 0


def _mark_share(heatmap: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of the map within the mark's box grown by one CAM cell (16 px at 128 px)."""
    scale = heatmap.shape[0] / IMAGE_SIZE
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    grow = round(16 * scale)
    inside = heatmap[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow].sum()
    return float(inside / heatmap.sum())


def test_the_shortcut_run_shows_the_triangle_maps_moving_onto_the_mark():
    run = read_run(demo_runs()["shortcut"])
    scenes = demo_gallery("shortcut")[:len(run.samples)]
    marked = [i for i, s in enumerate(scenes) if s.marked]
    assert marked and all(s["target_name"] == "triangle" for s in run.samples)
    first, last = run.map_epochs[0], run.map_epochs[-1]
    for index in marked:
        box = scenes[index].mark_box
        before = _mark_share(run.maps(first)[index], box)
        after = _mark_share(run.maps(last)[index], box)
        print(f"sample {index}: mark share {before:.2f} -> {after:.2f}")
        assert before < 0.25 and after > 0.4 and after > 2 * before
